"""``seeknetic-prep plan``: its counts are what ``run`` then does, its bytes what ``prep`` writes,
an out folder partly done reduces them, and it reads the state without changing it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pipeline_helpers import ROOT

from seeknetic_prep.api.client import Client, RetryPolicy
from seeknetic_prep.decode.preprocess import preprocess
from seeknetic_prep.pipeline.driver import RunOptions, run_folder
from seeknetic_prep.pipeline.payloads import request_id_for, upload_body_bytes, upload_body_size
from seeknetic_prep.pipeline.preflight import Plan, plan_run
from seeknetic_prep.state.store import Store

FAST = RetryPolicy(max_attempts=8, base_delay_s=0.02, max_delay_s=0.5)
# Their headers declare exactly what the data holds: estimated windows equal the run's exact ones.
EXACT = ("demo/lake.mp4", "demo/desert.mp4", "cfr30_bframes.mp4")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def fresh(tmp_path: Path) -> Iterator[Any]:
    from seeknetic_prep.emulator import EmulatorConfig, running

    with running(EmulatorConfig(data_dir=tmp_path / "emu")) as server:
        yield server


def _copy(fixtures_dir: Path, dest: Path, names: tuple[str, ...]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(fixtures_dir / name, dest / Path(name).name)
    return dest


def _prep_bytes(src: Path, out: Path, request_ids: set[str] | None = None) -> int:
    """The bytes of the bodies ``prep`` writes for ``src`` (those of ``request_ids`` only), each
    request id once: a copy of a file gets its own folder of the same bodies, a run uploads them once."""
    proc = _cli("prep", str(src), "--out", str(out))
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    sizes = {p.stem: p.stat().st_size for p in out.rglob("*.json")}
    return sum(n for rid, n in sizes.items() if request_ids is None or rid in request_ids)


def test_body_size_is_the_serialized_length(fixtures_dir: Path) -> None:
    seg = preprocess(fixtures_dir / "demo/lake.mp4")[-1]  # the short last window: another fps
    for service in ("embedding", "tagging"):
        for resize in ("crop", "pad"):
            rid = request_id_for("ab" * 32, seg.window, service, resize)
            body = upload_body_bytes(seg, [(service, rid)])[0]
            assert upload_body_size(seg.window, service, rid) == len(body)


def test_counts_are_what_run_does_and_bytes_what_prep_writes(
    fresh: Any, fixtures_dir: Path, tmp_path: Path
) -> None:
    src = _copy(fixtures_dir, tmp_path / "in", (*EXACT, "bad/not_media.mp4"))
    out = tmp_path / "out"
    plan = plan_run([src], out=out)
    assert plan.state is None and not out.exists()  # a plan writes nothing
    assert (plan.files, plan.files_probed, plan.files_unusable) == (4, 4, 1)
    assert plan.windows == plan.windows_estimated == plan.windows_to_decode == 2 + 1 + 2
    assert plan.jobs == plan.jobs_to_submit == plan.jobs_to_upload == 10
    assert plan.bytes_to_upload == _prep_bytes(src, tmp_path / "bodies")
    assert plan.sample is not None and plan.sample.windows >= 1 and plan.decode_hours
    assert [p for p, _ in plan.unusable] == [str(src / "not_media.mp4")]
    with Client(fresh.api_key, base_url=fresh.base_url, retry=FAST) as c:
        summary = run_folder([src], out=out, client=c, options=RunOptions(workers=0))
    assert summary.files_ok + summary.files_failed == plan.files
    assert summary.files_failed == plan.files_unusable
    assert summary.windows == summary.windows_decoded == plan.windows_to_decode
    assert sum(fresh.stats()["submissions"].values()) == plan.jobs_to_submit
    again = plan_run([src], out=out, sample=False)
    assert (again.files_known, again.files_probed, again.files_unusable) == (3, 1, 1)
    assert again.windows_estimated == 0 and again.windows_to_decode == 0
    assert (again.jobs, again.jobs_to_submit, again.jobs_completed, again.bytes_to_upload) == (10, 0, 10, 0)
    assert again.state_jobs == {"completed": 10}


def test_an_out_folder_partly_done_reduces_the_counts(fresh: Any, fixtures_dir: Path, tmp_path: Path) -> None:
    src = _copy(fixtures_dir, tmp_path / "in", EXACT)
    out = tmp_path / "out"
    with Client(fresh.api_key, base_url=fresh.base_url, retry=FAST) as c:
        first = run_folder([src], out=out, client=c, options=RunOptions(workers=0, max_jobs=3))
        assert first.exit_code == 3
        # as if killed before these were uploaded: planned units beside uploaded and completed ones
        con = sqlite3.connect(out / "state.sqlite")
        with con:
            con.execute("UPDATE units SET status='planned', r2_keys=NULL, frame_times_ms=NULL "
                        "WHERE status='uploaded' AND service='tagging'")
        con.close()
        shutil.copy(src / "lake.mp4", src / "lake-copy.mp4")  # same content, new name: nothing new
        shutil.copy(fixtures_dir / "no_audio.mp4", src / "no_audio.mp4")  # new: 1 window
        db = out / "state.sqlite"
        before = hashlib.sha256(db.read_bytes()).hexdigest()
        plan = plan_run([src], out=out)
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # read, never written
        with Store(db) as store:
            units = [(u.request_id, u.status) for u in store.units_with_status(
                "planned", "uploaded", "submitted", "completed", "failed")]
        planned = {rid for rid, status in units if status == "planned"}
        left = [rid for rid, status in units if status in ("planned", "uploaded")]
        assert planned and len(left) > len(planned)
        assert (plan.files, plan.files_known, plan.files_same_content) == (5, 3, 1)
        assert plan.jobs == 10 + 2 and plan.jobs_completed == 3
        assert plan.jobs_to_submit == len(left) + 2 and plan.jobs_to_upload == len(planned) + 2
        assert plan.windows_estimated == 1  # the new file; the others' windows come from the state
        # the bodies still to upload: the planned units' and the new file's two
        new_file = _copy(fixtures_dir, tmp_path / "new", ("no_audio.mp4",))
        assert plan.bytes_to_upload == (_prep_bytes(src, tmp_path / "bodies", planned)
                                        + _prep_bytes(new_file, tmp_path / "new-bodies"))
        before_subs = sum(fresh.stats()["submissions"].values())
        second = run_folder([src], out=out, client=c, options=RunOptions(workers=0))
    assert second.exit_code == 0
    assert sum(fresh.stats()["submissions"].values()) - before_subs == plan.jobs_to_submit
    assert second.windows_decoded == plan.windows_to_decode


def test_hard_links_and_copies_are_one_content(fixtures_dir: Path, tmp_path: Path) -> None:
    src = _copy(fixtures_dir, tmp_path / "in", ("demo/desert.mp4", "vp9.webm"))
    os.link(src / "desert.mp4", src / "desert-link.mp4")
    shutil.copy(src / "vp9.webm", src / "vp9-copy.webm")
    plan = plan_run([src], out=tmp_path / "out", sample=False)
    assert (plan.files, plan.files_same_content, plan.windows, plan.jobs) == (4, 2, 2, 4)
    assert plan.decode_hours is None  # not measured, and said so


def test_cli_table_and_json(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    table = _cli("plan", "fixtures/demo", "--out", out, "--bandwidth-mbps", "8")
    assert table.returncode == 0, table.stderr
    text = table.stdout
    assert "estimated" in text and "at 8 Mbps" in text and "no state yet" in text
    for label in ("files", "windows", "jobs", "upload", "out dir", "upload time", "decode time"):
        assert f"  {label} " in text, label
    js = _cli("plan", "fixtures/demo", "--out", out, "--json", "--services", "embedding")
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert data["files"]["total"] == 3 and data["windows"]["total"] == 5
    assert data["jobs"]["to_submit"] == 5 and data["services"] == ["embedding"]
    assert data["hours"]["bandwidth_mbps"] == 100.0  # the default
    assert data["bytes_to_upload"] > 5 * 3_500_000 and data["decode_sample"]["windows"] >= 1
    assert data["estimated"] is True and data["out_dir"]["state"] is None


@pytest.mark.parametrize("args, needle", [
    (("fixtures/nope",), "no such file or folder"),
    (("fixtures/demo", "--bandwidth-mbps", "0"), "bandwidth_mbps"),
    (("fixtures/demo", "--bandwidth-mbps", "fast"), "--bandwidth-mbps"),
    (("fixtures/demo", "--workers", "0"), "decode_workers"),
    (("fixtures/demo", "--services", "captions"), "captions"),
    (("fixtures/demo", "--bogus"), "--bogus"),
    (("fixtures/demo", "--out", "README.md"), "is a file"),
])
def test_bad_path_or_flag_is_one_line_exit_2(args: tuple[str, ...], needle: str) -> None:
    proc = _cli("plan", *args)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_plan_is_a_typed_value() -> None:
    plan = Plan(paths=["a"], out="o", services=["embedding"], bandwidth_mbps=8.0, decode_workers=2,
                bytes_to_upload=3_600_000_000)
    assert plan.upload_hours == pytest.approx(1.0)
    assert plan.decode_hours == 0.0
    assert json.loads(json.dumps(plan.to_json()))["bytes_to_upload"] == 3_600_000_000
