"""The whole job from Python (issue 18.6): ``seeknetic_prep.run(...)`` from a plain script with
no ``if __name__ == "__main__":`` guard, from ``python -m`` of such a module, from ``python -c``
and in a Jupyter kernel. Before, a script without the guard ran again in every decode worker:
~60 lines of tracebacks and every file failed.

Each way runs the real job against the built-in emulator (``local=True``) on the demo clips, in
a subprocess or a kernel of its own; the code it runs appends a line to a marker file each time
it is executed, so "ran exactly once" is checked, not assumed.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from _pipeline_helpers import ROOT

import seeknetic_prep as sp
from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.pipeline.discover import VIDEO_EXTENSIONS

DEMO = ROOT / "fixtures" / "demo"
CLIPS = sorted(p for p in DEMO.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)


def job_code(out: Path, marker: Path) -> str:
    """What a user writes: no guard, no main function."""
    return (f"import os\n"
            f"open({str(marker)!r}, 'a').write(str(os.getpid()) + '\\n')\n"
            f"import seeknetic_prep as sp\n"
            f"s = sp.run({str(DEMO)!r}, out={str(out)!r}, local=True, workers=2, progress=False)\n"
            f"print('RESULT', s.exit_code, s.files_ok, s.files_failed, s.jobs_completed)\n")


def check(out: Path, marker: Path, printed: str) -> None:
    assert "Traceback" not in printed and "bootstrapping phase" not in printed, printed
    assert len(marker.read_text().splitlines()) == 1, "the job's code ran more than once"
    result = [line.split() for line in printed.splitlines() if line.startswith("RESULT ")]
    assert len(result) == 1, printed
    exit_code, files_ok, files_failed, jobs = map(int, result[0][1:])
    con = sqlite3.connect(out / "state.sqlite")
    try:
        units = dict(con.execute("SELECT status, COUNT(*) FROM units GROUP BY status").fetchall())
    finally:
        con.close()
    assert (exit_code, files_ok, files_failed) == (0, len(CLIPS), 0)
    assert units == {"completed": jobs} and jobs >= 2 * len(CLIPS)  # both services, every window


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}


@pytest.mark.parametrize("how", ["script", "module", "-c"])
def test_the_job_runs_once_from_a_script_a_module_and_python_c_without_a_main_guard(
        how: str, tmp_path: Path) -> None:
    out, marker = tmp_path / "out", tmp_path / "ran.txt"
    code = job_code(out, marker)
    (tmp_path / "myjob.py").write_text(code)
    argv = {"script": ["myjob.py"], "module": ["-m", "myjob"], "-c": ["-c", code]}[how]
    proc = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check(out, marker, proc.stdout + proc.stderr)


def test_the_job_runs_in_a_jupyter_kernel(tmp_path: Path) -> None:
    jupyter_client = pytest.importorskip("jupyter_client", reason="the test extra installs jupyter_client")
    out, marker = tmp_path / "out", tmp_path / "ran.txt"
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path), env=env())
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        printed: list[str] = []

        def hook(msg: dict[str, object]) -> None:
            content = msg.get("content")
            if msg.get("msg_type") == "stream" and isinstance(content, dict):
                printed.append(str(content.get("text", "")))
            elif msg.get("msg_type") == "error" and isinstance(content, dict):
                printed.append("Traceback " + "\n".join(map(str, content.get("traceback", []))))

        reply = kc.execute_interactive(job_code(out, marker), timeout=300, output_hook=hook)
        assert reply["content"]["status"] == "ok", "".join(printed)
        check(out, marker, "".join(printed))
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)


def test_a_wrong_option_is_one_error_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"Invalid option\(s\) wrkers for seeknetic_prep.run\(\); "
                       r"the options are: .*workers"):
        sp.run(DEMO, out=tmp_path / "out", local=True, wrkers=2)
    with pytest.raises(InvalidArgumentError, match="bogus"):
        sp.run(DEMO, out=tmp_path / "out", local=True, resize="bogus")
    assert not (tmp_path / "out").exists()  # refused before anything was started or written
