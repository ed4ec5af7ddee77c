"""Videos in object storage, against real servers on loopback only: moto's S3 server and an
HTTP server that honours Range. Listing, identity, range reads, runs, and errors."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from _pipeline_helpers import read_results
from _sources_helpers import Files, Route, forget_clients, http_files, s3_env, s3_server

from seeknetic_prep.api.client import Client, RetryPolicy
from seeknetic_prep.decode.preprocess import iter_segments
from seeknetic_prep.errors import MediaError
from seeknetic_prep.pipeline.discover import VIDEO_EXTENSIONS
from seeknetic_prep.pipeline.driver import RunOptions, run_folder
from seeknetic_prep.pipeline.payloads import file_fingerprint
from seeknetic_prep.sources import discover_sources, open_source, read_list, redact, source_fingerprint
from seeknetic_prep.sources.reader import RangeReader

FAST = RetryPolicy(max_attempts=8, base_delay_s=0.02, max_delay_s=0.5)
DEMO = ("desert.mp4", "forest.webm", "lake.mp4")


@pytest.fixture(scope="module")
def s3(fixtures_dir: Path) -> Iterator[Any]:
    """A bucket ``vids`` holding the demo clips under ``demo/`` (and a hidden file and a text
    file, which listing leaves out), on moto's server; the AWS variables point at it."""
    import boto3

    with s3_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        for name, value in s3_env(endpoint).items():
            mp.setenv(name, value)
        forget_clients()
        client = boto3.client("s3")
        client.create_bucket(Bucket="vids")
        for name in DEMO:
            client.upload_file(str(fixtures_dir / "demo" / name), "vids", f"demo/{name}")
        client.put_object(Bucket="vids", Key="demo/.hidden.mp4", Body=b"x")
        client.put_object(Bucket="vids", Key="demo/notes.txt", Body=b"x")
        yield client
        forget_clients()


@pytest.fixture()
def fresh(tmp_path: Path) -> Iterator[Any]:
    from seeknetic_prep.emulator import EmulatorConfig, running

    with running(EmulatorConfig(data_dir=tmp_path / "emu")) as server:
        yield server


def _client(server: Any) -> Client:
    return Client(server.api_key, base_url=server.base_url, retry=FAST)


def _rows(out: Path) -> list[tuple[Any, ...]]:
    """Results without the path: what must be equal for the same bytes anywhere."""
    return sorted((x["request_id"], x["start_ms"], x["end_ms"], tuple(x["frame_times_ms"]), x["status"],
                   json.dumps(x.get("embedding")), json.dumps(x.get("tags"), sort_keys=True))
                  for x in read_results(out))


# ------------------------------------------------------------------ reader, identity, listing

def test_range_reader_streams_with_bounded_readahead() -> None:
    data = np.random.default_rng(1).integers(0, 256, 12 << 20, dtype=np.uint8).tobytes()
    asked: list[tuple[int, int]] = []

    def fetch(start: int, end: int) -> bytes:
        asked.append((start, end))
        return data[start:end]

    reader = RangeReader("mem", len(data), fetch, block=256 << 10, max_ahead=16, max_blocks=48)
    reader.seek(5 << 20)
    got = b"".join(iter(lambda: reader.read(32 << 10), b""))
    assert got == data[5 << 20:]
    assert reader.bytes_fetched == len(data) - (5 << 20)  # nothing twice, nothing before the seek
    assert len(asked) <= 8  # requests grow as the reads go on forward
    assert max(e - s for s, e in asked) <= 16 * (256 << 10)
    assert sum(len(b) for b in reader._blocks.values()) <= 48 * (256 << 10)
    reader.seek(1 << 20)  # a read in the middle fetches about what it reads
    before = reader.bytes_fetched
    assert reader.read(300_000) == data[1 << 20: (1 << 20) + 300_000]
    assert reader.bytes_fetched - before <= 2 * 300_000


def test_range_reader_a_failed_prefetch_is_the_reads_error() -> None:
    data = bytes(range(256)) * 40_000  # ~10 MB
    calls: list[int] = []

    def fetch(start: int, end: int) -> bytes:
        calls.append(start)
        if len(calls) >= 3:  # the third request, a prefetch of a forward reader, fails
            raise ConnectionResetError("connection reset by peer")
        return data[start:end]

    reader = RangeReader("mem", len(data), fetch, block=64 << 10, max_ahead=4, max_blocks=16)
    with pytest.raises(OSError, match="reset"):
        for _ in range(len(data) // 4096 + 1):  # bounded
            if not reader.read(4096):
                break
    assert isinstance(reader.error, ConnectionResetError)
    reader.close()  # nothing left running: a prefetch in flight is dropped
    assert reader.closed and reader._inflight._pool is None


def test_readers_of_one_object_share_its_blocks_within_a_bound() -> None:
    """A decode worker's plan and tasks open the same object one after another: the header and
    index one reader fetched cost the next no request; another object's blocks are its own; the
    shared blocks never hold more than their bound."""
    from seeknetic_prep.sources.blocks import SharedBlocks

    data = np.random.default_rng(2).integers(0, 256, 6 << 20, dtype=np.uint8).tobytes()
    asked: list[tuple[int, int]] = []

    def fetch(start: int, end: int) -> bytes:
        asked.append((start, end))
        return data[start:end]

    shared = SharedBlocks(max_bytes=4 << 20)

    def reader(key: str) -> RangeReader:
        return RangeReader("mem", len(data), fetch, block=256 << 10, shared=(shared, (key, len(data))))

    def head_and_tail(r: RangeReader) -> bytes:
        head = r.read(100_000)
        r.seek(-300_000, os.SEEK_END)
        return head + r.read()

    first = reader("s3://b/a.mp4")
    want = head_and_tail(first)
    assert want == data[:100_000] + data[-300_000:] and len(asked) == 2
    second = reader("s3://b/a.mp4")
    assert head_and_tail(second) == want and len(asked) == 2 and second.requests == 0  # no request
    assert head_and_tail(reader("s3://b/other.mp4")) == want and len(asked) == 4  # not another's
    streamed = reader("s3://b/a.mp4")  # a whole pass: still the right bytes, the bound kept
    assert b"".join(iter(lambda: streamed.read(64 << 10), b"")) == data
    streamed.close()
    assert sum(len(b) for b in shared._blocks.values()) <= 4 << 20


def test_same_bytes_same_fingerprint_local_or_in_a_bucket(s3: Any, tmp_path: Path,
                                                           fixtures_dir: Path) -> None:
    big = np.random.default_rng(2).integers(0, 256, (3 << 20) + 12345, dtype=np.uint8).tobytes()
    (tmp_path / "big.bin").write_bytes(big)
    s3.put_object(Bucket="vids", Key="blobs/big.bin", Body=big)
    fp, size, tag = source_fingerprint("s3://vids/blobs/big.bin")
    assert fp == file_fingerprint(tmp_path / "big.bin") and size == len(big) and tag > 0
    for name in DEMO:
        local = file_fingerprint(fixtures_dir / "demo" / name)
        assert source_fingerprint(f"s3://vids/demo/{name}")[0] == local


def test_listing_recursive_with_video_extensions(s3: Any) -> None:
    found = discover_sources(["s3://vids/demo/"], extensions=VIDEO_EXTENSIONS)
    assert [url for url, _, _ in found] == [f"s3://vids/demo/{n}" for n in DEMO]
    assert all(size and tag for _, size, tag in found)
    # a URL naming one object is taken whatever its name; an unlistable prefix is kept, to fail
    found = discover_sources(["s3://vids/demo/notes.txt", "s3://nobucket/x/", "s3://vids/none/"],
                             extensions=VIDEO_EXTENSIONS)
    assert [url for url, _, _ in found] == ["s3://vids/demo/notes.txt", "s3://nobucket/x/", "s3://vids/none/"]


def test_decoded_through_range_requests_equals_local(s3: Any, fixtures_dir: Path) -> None:
    source = open_source("s3://vids/demo/lake.mp4")
    assert isinstance(source, io.RawIOBase)
    with source:
        remote = list(iter_segments(source))  # type: ignore[arg-type]
    local = list(iter_segments(fixtures_dir / "demo" / "lake.mp4"))
    assert len(remote) == len(local) == 2
    for a, b in zip(remote, local, strict=True):
        assert np.array_equal(a.video, b.video) and np.array_equal(a.audio, b.audio)
        assert a.frame_times_ms == b.frame_times_ms


def test_missing_objects_and_buckets_are_named(s3: Any) -> None:
    with pytest.raises(MediaError, match=r"s3://nobucket/a.mp4: missing: no such bucket"):
        source_fingerprint("s3://nobucket/a.mp4")
    with pytest.raises(MediaError, match=r"s3://vids/demo/none.mp4: missing: no such object"):
        source_fingerprint("s3://vids/demo/none.mp4")


def test_from_list_text_csv_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "l.txt").write_text("# clips\ns3://b/a.mp4\n\nlocal/x.mp4\ns3://b/a.mp4\n")
    assert read_list(tmp_path / "l.txt") == ["s3://b/a.mp4", str(tmp_path / "local/x.mp4")]
    (tmp_path / "l.csv").write_text("id,url\n1,https://h/v.mp4\n2,s3://b/c.mov\n")
    assert read_list(tmp_path / "l.csv") == ["https://h/v.mp4", "s3://b/c.mov"]
    pq.write_table(pa.table({"path": ["gs://b/v.mp4", None, "/abs/w.mkv"]}), tmp_path / "l.parquet")
    assert read_list(tmp_path / "l.parquet") == ["gs://b/v.mp4", "/abs/w.mkv"]


# ------------------------------------------------------------------ runs

def test_bucket_run_equals_local_and_a_copy_resubmits_nothing(
        s3: Any, fresh: Any, fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "in"
    local.mkdir()
    for name in DEMO:
        shutil.copy(fixtures_dir / "demo" / name, local / name)
    with _client(fresh) as c:
        from_bucket = run_folder(["s3://vids/demo"], out=tmp_path / "bucket", client=c,
                                 options=RunOptions(workers=0))
    with running_fresh(tmp_path / "emu2") as other, _client(other) as c:
        from_disk = run_folder([local], out=tmp_path / "disk", client=c, options=RunOptions(workers=0))
    assert from_bucket.exit_code == from_disk.exit_code == 0
    assert from_bucket.windows_decoded == from_disk.windows_decoded == 5
    assert _rows(tmp_path / "bucket") == _rows(tmp_path / "disk")

    # The folder run first, then the same files in the bucket into the same --out: nothing new.
    with running_fresh(tmp_path / "emu3") as third, _client(third) as c:
        first = run_folder([local], out=tmp_path / "both", client=c, options=RunOptions(workers=0))
        again = run_folder(["s3://vids/demo"], out=tmp_path / "both", client=c,
                           options=RunOptions(workers=0))
        submissions = third.stats()["submissions"]
    assert first.exit_code == again.exit_code == 0 and again.windows_decoded == 0
    assert len(submissions) == 10 and set(submissions.values()) == {1}

    # A rerun over the bucket skips every object from the listing: no object is opened.
    from seeknetic_prep.pipeline import worker

    def no_plan(path: str) -> None:
        raise AssertionError(f"planned {path} again")

    monkeypatch.setattr(worker, "plan_file", no_plan)
    with _client(fresh) as c:
        rerun = run_folder(["s3://vids/demo"], out=tmp_path / "bucket", client=c,
                           options=RunOptions(workers=0))
    assert rerun.exit_code == 0 and rerun.windows_decoded == 0 and rerun.files_ok == 3


def test_state_keeps_the_url_as_the_path(s3: Any, fresh: Any, tmp_path: Path) -> None:
    """A URL is the path in the state and the results, as given: not ``$PWD/s3:/b/k``."""
    with _client(fresh) as c:
        run_folder(["s3://vids/demo/lake.mp4"], out=tmp_path / "out", client=c, options=RunOptions(workers=0))
    assert {x["path"] for x in read_results(tmp_path / "out")} == {"s3://vids/demo/lake.mp4"}


def running_fresh(path: Path) -> Any:
    from seeknetic_prep.emulator import EmulatorConfig, running

    return running(EmulatorConfig(data_dir=path))


def test_errors_one_line_per_url_rest_done(s3: Any, fresh: Any, fixtures_dir: Path, tmp_path: Path) -> None:
    def clip(name: str) -> bytes:  # each its own content: a content that fails fails every path
        return (fixtures_dir / name).read_bytes()

    files = Files({  # the first GET of each reads the whole small clip (planning); decoding fails
        "/ok.mp4": Route(clip("vfr.mp4")),
        "/page.mp4": Route(b"<!DOCTYPE html><html><body>sign in</body></html>", content_type="text/html"),
        "/denied.mp4": Route(b"", status=403),
        "/flaky.mp4": Route(clip("no_audio.mp4"), fail_after=1, fault="503"),
        "/reset.mp4": Route(clip("rotated90.mp4"), fail_after=1, fault="reset"),
    })
    with http_files(files) as base:
        signed = f"{base}/denied.mp4?X-Amz-Signature=SECRETSIG&X-Amz-Credential=AKIDSECRET"
        urls = ["s3://nobucket/clips/", "s3://vids/nothing-here/", f"{base}/page.mp4", signed,
                f"{base}/flaky.mp4", f"{base}/reset.mp4", f"{base}/ok.mp4?sig=SECRET2"]
        with _client(fresh) as c:
            summary = run_folder([fixtures_dir / "demo" / "desert.mp4", *urls], out=tmp_path / "out",
                                 client=c, options=RunOptions(workers=0))
    assert summary.exit_code == 1
    assert summary.files_ok == 2  # desert.mp4 and ok.mp4
    failed = dict(summary.failures)
    lines = [f"{where}: {why}" for where, why in summary.failures]
    for url in urls[:-1]:
        assert any(redact(url) in line for line in lines), (url, lines)
    text = "\n".join(lines)
    assert "missing: no such bucket" in text and "web page (HTML)" in text and "access denied" in text
    assert "unreadable" in failed.get(f"{base}/flaky.mp4", text)
    state = sqlite3.connect(tmp_path / "out" / "state.sqlite").iterdump()
    dump = "\n".join(state) + text + json.dumps(read_results(tmp_path / "out"))
    assert "SECRET" not in dump and "AKID" not in dump
    # environmental failures (all of these) are tried again by the next run
    assert summary.files_failed == 6


def test_a_decode_worker_makes_its_s3_client_before_its_first_task(s3: Any) -> None:
    """A worker started for a run over s3:// builds its client (service model, endpoints,
    credentials) while the driver checks the key, not in its first plan; one that cannot be
    built now is left to the first request to report."""
    from seeknetic_prep.sources.remote import filesystem, warm_clients

    forget_clients()
    warm_clients()
    assert filesystem("s3://")._s3 is not None
    forget_clients()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
        mp.setenv("AWS_PROFILE", "no-such-profile")  # botocore refuses to make a client
        warm_clients()  # no exception
    forget_clients()


def test_a_listed_object_is_planned_without_asking_for_its_size_again(fresh: Any, fixtures_dir: Path,
                                                                      tmp_path: Path) -> None:
    """The listing gave each object's size and version: planning it asks no more (a metadata
    request per object, a million of them for a million objects, and a round trip before each
    plan could start)."""
    files = Files({"/a.mp4": Route((fixtures_dir / "vfr.mp4").read_bytes()),
                   "/b.mp4": Route((fixtures_dir / "no_audio.mp4").read_bytes())})
    with http_files(files) as base, _client(fresh) as c:
        summary = run_folder([f"{base}/a.mp4", f"{base}/b.mp4"], out=tmp_path / "out", client=c,
                             options=RunOptions(workers=0))
    assert summary.exit_code == 0 and summary.files_ok == 2, summary.failures
    assert [r.heads for r in files.routes.values()] == [1, 1]  # the listing's own
    assert all(r.gets >= 1 for r in files.routes.values())


# ------------------------------------------------------------------ the command line

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str | Path, endpoint: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **s3_env(endpoint), "PYTHONPATH": str(ROOT)}
    env.pop("SEEKNETIC_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def test_cli_run_local_over_a_bucket_equals_the_folder(s3: Any, fixtures_dir: Path, tmp_path: Path) -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    (tmp_path / "list.txt").write_text("s3://vids/demo/lake.mp4\n")
    remote = _cli("run", "s3://vids/demo/desert.mp4", "--from-list", tmp_path / "list.txt", "--local",
                  "--out", tmp_path / "remote", "--workers", "1", "--quiet", endpoint=endpoint)
    assert remote.returncode == 0, remote.stderr
    local = _cli("run", fixtures_dir / "demo" / "desert.mp4", fixtures_dir / "demo" / "lake.mp4", "--local",
                 "--out", tmp_path / "disk", "--workers", "1", "--quiet", endpoint=endpoint)
    assert local.returncode == 0, local.stderr
    assert _rows(tmp_path / "remote") == _rows(tmp_path / "disk") and len(_rows(tmp_path / "disk")) == 6


def test_cli_prep_writes_the_same_bodies_from_a_bucket(s3: Any, fixtures_dir: Path, tmp_path: Path) -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    remote = _cli("prep", "s3://vids/demo/", "s3://nobucket/x.mp4", "--out", tmp_path / "r",
                  "--services", "tagging", endpoint=endpoint)
    local = _cli("prep", fixtures_dir / "demo", "--out", tmp_path / "l", "--services", "tagging",
                 endpoint=endpoint)
    assert remote.returncode == 1 and local.returncode == 0, remote.stdout + remote.stderr
    assert "FAIL s3://nobucket/x.mp4: missing: no such bucket" in remote.stdout
    assert remote.stdout.count("ok   s3://vids/demo/") == 3
    mine = sorted(p.relative_to(tmp_path / "r") for p in (tmp_path / "r").rglob("*.json"))
    assert mine == sorted(p.relative_to(tmp_path / "l") for p in (tmp_path / "l").rglob("*.json"))
    for rel in mine:
        assert (tmp_path / "r" / rel).read_bytes() == (tmp_path / "l" / rel).read_bytes()


def test_a_store_whose_package_is_missing_is_one_line_exit_2(tmp_path: Path) -> None:
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed here")
    proc = subprocess.run([sys.executable, "-m", "seeknetic_prep", "prep", "gs://bucket/x.mp4", "--out",
                           str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert 'reading gs:// needs gcsfs; pip install "seeknetic-prep[gcs]"' in proc.stderr


def test_inspect_draws_a_buckets_and_a_signed_urls_windows_as_the_files(
        s3: Any, fixtures_dir: Path, tmp_path: Path) -> None:
    """``inspect`` over ``s3://`` (the ``//`` kept from the command line) and over a presigned
    ``https`` URL: the 12 tiles and the audio strip are the local file's pixels, the sheet is named
    after the key, and no signing value reaches the output or the sheet's name."""
    from PIL import Image

    from seeknetic_prep.results.sheet import sheet_size, tile_origin, write_sheets

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    local = write_sheets(fixtures_dir / "demo" / "lake.mp4", tmp_path / "local", window=1)
    proc = _cli("inspect", "s3://vids/demo/lake.mp4", "--window", "1", "--out", tmp_path / "s3",
                endpoint=endpoint)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "s3" / "lake-w1.png")]
    data = (fixtures_dir / "demo" / "lake.mp4").read_bytes()
    files = Files(routes={"/clips/lake.mp4": Route(data)})
    with http_files(files) as base:
        signed = write_sheets(f"{base}/clips/lake.mp4?X-Amz-Signature=SECRETSIG", tmp_path / "signed",
                              window=1)
    assert [p.name for p in signed] == ["lake-w1.png"]
    assert files.bytes_sent < len(data) * 2  # read with range requests, never twice over
    width, height = sheet_size()
    want = np.asarray(Image.open(local[0]))
    for sheet in (tmp_path / "s3" / "lake-w1.png", signed[0]):
        got = np.asarray(Image.open(sheet))
        assert got.shape == (height, width, 3)
        for i in range(12):
            x, y = tile_origin(i)
            assert np.array_equal(got[y:y + 224, x:x + 224], want[y:y + 224, x:x + 224]), (sheet, i)
        strip = height - 16 - 200  # the audio strip: waveform and spectrogram
        assert np.array_equal(got[strip + 16:], want[strip + 16:]), sheet
        assert not np.array_equal(got[:30], want[:30])  # the header names a different source
    missing = _cli("inspect", "s3://vids/demo/nothing.mp4?X-Amz-Signature=SECRETSIG", endpoint=endpoint)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr
    assert "s3://vids/demo/nothing.mp4" in missing.stderr
    assert "SECRETSIG" not in missing.stderr + missing.stdout


_PRELOAD_CHECK = """
import functools, sys
from seeknetic_prep.sources import client_modules
from seeknetic_prep.util.procs import preload_also, worker_context
if sys.argv[1] == "urls":
    preload_also(client_modules(["clips/a.mp4", "s3://vids/demo/a.mp4"]))
ctx = worker_context(["seeknetic_prep.executors.local"])
with ctx.Pool(1) as pool:
    print(pool.apply(functools.partial(eval, "'s3fs' in __import__('sys').modules")))
"""


@pytest.mark.parametrize(("paths", "preloaded"), [("urls", "True"), ("local", "False")])
def test_a_runs_store_client_is_imported_once_by_the_fork_server(paths: str, preloaded: str) -> None:
    """A run over ``s3://`` has the fork server import s3fs (~0.6 s) once, so each decode worker
    starts with it; a run over local paths leaves it out."""
    proc = subprocess.run([sys.executable, "-c", _PRELOAD_CHECK, paths], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [preloaded]
