"""The lean install: the emulator extra is checked before use, and --local keeps disk small."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _pipeline_helpers import read_results

from seeknetic_prep.util.extras import EMULATOR_MODULES, missing

ROOT = Path(__file__).resolve().parent.parent

# A child interpreter in which the emulator extra is "not installed": a finder placed first on
# sys.meta_path refuses its modules, as an interpreter without them would.
_HIDE = """
import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {names!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Hide())
from seeknetic_prep.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(*args: str, hide: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    code = _HIDE.format(names=set(hide))
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def test_the_core_imports_none_of_the_extras() -> None:
    code = ("import sys, seeknetic_prep, seeknetic_prep.decode.preprocess, seeknetic_prep.pipeline.driver, "
            "seeknetic_prep.api.client, seeknetic_prep.results.sheet, seeknetic_prep.results.report; "
            "print(sorted(m for m in ('librosa', 'cv2', 'fastapi', 'uvicorn', 'scipy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_extra_is_installed_here() -> None:
    assert missing(EMULATOR_MODULES) == []


@pytest.mark.parametrize(
    "args",
    [
        ("run", "fixtures/short_700ms.mp4", "--local", "--out", "{tmp}/out"),
        ("emulator", "--port", "0", "--data-dir", "{tmp}/emu"),
        ("search", "a dog", "--local", "--out", "{tmp}/out"),
    ],
)
def test_without_the_extra_one_line_says_what_to_install(tmp_path: Path, args: tuple[str, ...]) -> None:
    if args[0] == "search":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "parts").mkdir()
    proc = _cli(*(a.format(tmp=tmp_path) for a in args), hide=("fastapi", "uvicorn"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"seeknetic-prep {args[0]}: error: ")
    assert 'pip install "seeknetic-prep[emulator]"' in lines[0] and "fastapi, uvicorn" in lines[0]
    assert not (tmp_path / "out" / "emulator").exists() and not (tmp_path / "emu").exists()


def test_run_local_drops_tensors_of_finished_jobs_and_status_shows_disk(tmp_path: Path) -> None:
    short = str(ROOT / "fixtures" / "short_700ms.mp4")
    dropped, kept = tmp_path / "dropped", tmp_path / "kept"
    for out, extra in ((dropped, ()), (kept, ("--keep-tensors",))):
        proc = _cli("run", short, "--local", "--out", str(out), "--workers", "0", "--quiet", *extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list((dropped / "emulator" / "tensors").rglob("*.json")) == []
    assert len(list((kept / "emulator" / "tensors").rglob("*.json"))) == 4  # 2 for each service
    results = read_results(dropped)
    assert [x["status"] for x in results] == ["completed"] * 2 and results == read_results(kept)
    # The rerun finds its jobs done (served from the emulator's SQLite) and uploads nothing.
    again = _cli("run", short, "--local", "--out", str(dropped), "--workers", "0", "--quiet")
    assert again.returncode == 0, again.stderr
    assert read_results(dropped) == results

    status = _cli("status", "--out", str(kept))
    assert status.returncode == 0, status.stderr
    disk = status.stdout.strip().splitlines()[-1]
    assert disk.startswith("disk: ") and f" in {kept} (" in disk
    assert "emulator " in disk and "state " in disk and "parts " in disk
    emulator_mb = float(disk.split("emulator ")[1].split(" MB")[0])
    assert emulator_mb > 5  # the kept tensors: one window, both services, ~6 MB
    dropped_disk = _cli("status", "--out", str(dropped)).stdout.strip().splitlines()[-1]
    assert float(dropped_disk.split("emulator ")[1].split(" MB")[0]) < 1
