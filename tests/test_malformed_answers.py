"""Issue 22, items 2 and 4: answers that break the API's promises, end to end.

A loopback proxy in front of the real emulator rewrites the emulator's ``async_status`` answers
(uploads and submissions pass through untouched), so the run meets exactly the answer under
test. Before the fix a completed answer whose embedding was not numbers killed the poll
threads and the run waited forever; a status that was not an object was asked again for the
whole one-hour job timeout; a 100-number embedding or a 2^63 tag was stored and broke every
later ``run``, ``results`` and ``search``. Each test has its own timeout, so a hang fails it
instead of holding up CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _pipeline_helpers import ROOT, lossy_proxy, proxy_url, read_results

from seeknetic_prep.api.client import Client
from seeknetic_prep.pipeline.driver import Progress, RunOptions, RunSummary, run_folder

CLIP = "short_700ms.mp4"  # one window: one embedding job, one tagging job


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """This module's own emulator: its runs submit fixture clips, and other tests count how
    often the session's emulator received each fixture's request ids."""
    from seeknetic_prep.emulator import EmulatorConfig, running

    with running(EmulatorConfig(data_dir=tmp_path_factory.mktemp("emulator-malformed"))) as server:
        yield server


def _clip(fixtures_dir: Path, tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(fixtures_dir / CLIP, src / CLIP)
    return src


def _completed(service: str, change: Callable[[dict[str, Any]], None]) -> Callable[[str, str, bytes], bytes]:
    """A rewrite that applies ``change`` to the completed ``async_status`` answers of one service."""

    def rewrite(method: str, path: str, body: bytes) -> bytes:
        if not path.startswith("/async_status/") or not path.endswith(f"-{service}"):
            return body
        answer = json.loads(body)
        if answer.get("status") != "completed":
            return body
        change(answer)
        return json.dumps(answer).encode()  # NaN and inf are written as JSON's NaN / Infinity

    return rewrite


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(answer: dict[str, Any]) -> None:
        answer[key] = value
    return change


def _tag(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(answer: dict[str, Any]) -> None:
        answer["tags"][name] = value
    return change


def _nan_at_3(answer: dict[str, Any]) -> None:
    answer["embedding"][3] = float("nan")


def _run(src: Path, out: Path, base_url: str, key: str, progress: Progress | None = None,
         uploaders: int = 4, retry_failed: bool = False) -> RunSummary:
    with Client(key, base_url=base_url) as c:
        return run_folder([src], out=out, client=c, progress=progress,
                          options=RunOptions(workers=0, uploaders=uploaders, retry_failed=retry_failed))


def _by_service(out: Path) -> dict[str, dict[str, Any]]:
    return {x["service"]: x for x in read_results(out)}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("service", "change", "reason"), [
    ("embedding", _set("embedding", ["x"] * 1024), "embedding[0] is a string, not a number"),
    ("embedding", _set("embedding", [0.5] * 100), "embedding has 100 numbers, expected 1024"),
    ("embedding", _nan_at_3, "embedding[3] is NaN"),
    ("embedding", _set("embedding", None), "embedding is missing"),
    ("tagging", _tag("scene_cuts", 2**63), "tags.scene_cuts = 9223372036854775808 does not fit in 64 bits"),
    ("tagging", _tag("brightness", float("inf")), "tags.brightness is Infinity"),
], ids=["not-numbers", "100-numbers", "nan", "no-embedding", "tag-2**63", "tag-inf"])
def test_bad_completed_answer_fails_that_job_with_the_reason(
    emulator: Any, fixtures_dir: Path, tmp_path: Path, service: str,
    change: Callable[[dict[str, Any]], None], reason: str,
) -> None:
    src, out = _clip(fixtures_dir, tmp_path), tmp_path / "out"
    with lossy_proxy(emulator.base_url, lambda m, p: False, _completed(service, change)) as proxy:
        summary = _run(src, out, proxy_url(proxy), emulator.api_key)
    assert summary.exit_code == 1 and summary.stopped_by is None, (summary.stopped_by, summary.failures)
    assert [e for _, e in summary.failures] == [f"malformed answer: {reason}"]
    lines = _by_service(out)  # the results stay readable: nothing bad was stored
    other = "tagging" if service == "embedding" else "embedding"
    assert lines[service]["status"] == "failed" and lines[service]["error"] == f"malformed answer: {reason}"
    assert lines[other]["status"] == "completed"
    # The bad answer never reached the state: --retry-failed (straight to the emulator) completes it.
    again = _run(src, out, emulator.base_url, emulator.api_key, retry_failed=True)
    assert again.exit_code == 0, again.failures
    assert {x["status"] for x in read_results(out)} == {"completed"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("body", [b"[]", b"<html>a captive portal</html>", b'{"status": 7}'],
                         ids=["array", "not-json", "status-a-number"])
def test_status_answer_not_an_object_fails_the_job_after_a_few_tries(
    emulator: Any, fixtures_dir: Path, tmp_path: Path, body: bytes
) -> None:
    """It used to be asked again, silently, for the whole one-hour job timeout."""
    src, out = _clip(fixtures_dir, tmp_path), tmp_path / "out"
    asked: list[str] = []

    def rewrite(method: str, path: str, answer: bytes) -> bytes:
        if path.startswith("/async_status/") and path.endswith("-embedding"):
            asked.append(path)
            return body
        return answer

    with lossy_proxy(emulator.base_url, lambda m, p: False, rewrite) as proxy:
        summary = _run(src, out, proxy_url(proxy), emulator.api_key)
    assert summary.exit_code == 1 and summary.stopped_by is None, (summary.stopped_by, summary.failures)
    (rid, error), = summary.failures
    assert rid.endswith("-embedding") and error.startswith("malformed answer: ") and "\n" not in error
    assert len(asked) == 3  # a few tries, then the job fails
    assert _by_service(out)["tagging"]["status"] == "completed"


class _Boom(Progress):
    """A progress callback with a bug: the first finished job raises in a stage thread."""

    def job_finished(self, request_id: str, status: str) -> None:
        raise RuntimeError("a bug in a progress callback")


class _BoomOnRetry(Progress):
    def api_event(self, kind: str) -> None:
        raise RuntimeError("a bug in a progress callback")


@pytest.mark.timeout(60)
def test_poll_thread_that_dies_stops_the_run_with_exit_1(
    emulator: Any, fixtures_dir: Path, tmp_path: Path
) -> None:
    """One poll thread (2 uploaders) and 4 jobs: it dies at the first one; the run used to wait
    forever on the 3 left in its heap."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(fixtures_dir / "cfr30_bframes.mp4", src / "two_windows.mp4")
    summary = _run(src, out, emulator.base_url, emulator.api_key, progress=_Boom(), uploaders=2)
    assert summary.stopped_by == "crashed" and summary.exit_code == 1
    message = summary.stop_message or ""
    assert "poll" in message and "RuntimeError: a bug in a progress callback" in message
    assert "\n" not in message
    again = _run(src, out, emulator.base_url, emulator.api_key)  # the state was kept
    assert again.exit_code == 0 and again.jobs_completed == 4, again.failures


@pytest.mark.timeout(60)
def test_upload_thread_that_dies_stops_the_run_with_exit_1(
    emulator: Any, fixtures_dir: Path, tmp_path: Path
) -> None:
    """The first upload's answer is lost, so its retry is told to a callback that raises, in
    the only upload thread; the run used to wait forever on the item still queued."""
    src, out = _clip(fixtures_dir, tmp_path), tmp_path / "out"
    lost: list[str] = []

    def drop(method: str, path: str) -> bool:
        if path == "/files/upload/tensors" and not lost:
            lost.append(path)
            return True
        return False

    with lossy_proxy(emulator.base_url, drop) as proxy:
        summary = _run(src, out, proxy_url(proxy), emulator.api_key, progress=_BoomOnRetry(),
                       uploaders=1)
    assert lost and summary.stopped_by == "crashed" and summary.exit_code == 1
    assert "upload" in (summary.stop_message or "")


def test_cli_says_why_in_one_line_and_exits_1(emulator: Any, fixtures_dir: Path, tmp_path: Path) -> None:
    src, out = _clip(fixtures_dir, tmp_path), tmp_path / "out"
    with lossy_proxy(emulator.base_url, lambda m, p: False,
                     _completed("embedding", _set("embedding", [0.5] * 100))) as proxy:
        env = {**os.environ, "SEEKNETIC_API_KEY": emulator.api_key, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-m", "seeknetic_prep", "run", str(src), "--out", str(out),
             "--base-url", proxy_url(proxy), "--workers", "0", "--quiet"],
            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "malformed answer: embedding has 100 numbers, expected 1024" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert emulator.api_key not in proc.stderr + proc.stdout
