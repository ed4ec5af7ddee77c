"""``seeknetic-prep prep`` as a user runs it: a subprocess over the committed fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seeknetic_prep.api.tensors import decode_tensor
from seeknetic_prep.decode.preprocess import preprocess
from seeknetic_prep.pipeline.payloads import file_fingerprint, request_id_for

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
TRUTH: dict[str, Any] = json.loads((FIXTURES / "ground_truth.json").read_text())["files"]


def run_prep(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seeknetic_prep", "prep", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )


@pytest.fixture(scope="module")
def prepped(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("prep")
    return run_prep("fixtures", "--out", out), out


def test_prep_over_fixtures_writes_good_ones_and_exits_1(
    prepped: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, out = prepped
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name, truth in TRUTH.items():
        mine = [line for line in lines if line.endswith(f"fixtures/{name}") or f"fixtures/{name}:" in line]
        assert len(mine) == 1, (name, mine)  # one line per file
        if truth["kind"] == "bad":
            assert mine[0].startswith("FAIL") and truth["error"] in mine[0]
        else:
            assert mine[0].startswith("ok")
            folder = out / f"{Path(name).name}.{file_fingerprint(FIXTURES / name)[:12]}"
            assert len(list(folder.glob("*.json"))) == 2 * len(truth["windows"])
    assert not list(out.rglob("*.part"))
    bad_dirs = [p for p in out.iterdir() if any(p.name.startswith(Path(n).name + ".")
                                                for n, t in TRUTH.items() if t["kind"] == "bad")]
    assert bad_dirs == []


@pytest.mark.parametrize("name", ["cfr30_bframes.mp4", "rotated90.mp4", "late_audio_25s.mkv", "no_audio.mp4"])
def test_bodies_decode_to_the_arrays_preprocess_returns(
    prepped: tuple[subprocess.CompletedProcess[str], Path], name: str,
) -> None:
    _, out = prepped
    fp = file_fingerprint(FIXTURES / name)
    folder = out / f"{Path(name).name}.{fp[:12]}"
    for seg in preprocess(FIXTURES / name):
        emb = json.loads((folder / f"{request_id_for(fp, seg.window, 'embedding')}.json").read_text())
        tag = json.loads((folder / f"{request_id_for(fp, seg.window, 'tagging')}.json").read_text())
        assert set(emb) == {"service", "request_id", "video_input", "audio_input"}
        assert set(tag) == {"service", "request_id", "video_input", "video_kwargs"}
        assert emb["service"] == "embedding" and tag["service"] == "tagging"
        assert tag["video_kwargs"] == {"do_sample_frames": False, "fps": 12_000 / (seg.end_ms - seg.start_ms)}
        for body in (emb, tag):
            video = decode_tensor(body["video_input"])
            assert video.dtype == seg.video.dtype and video.shape == seg.video.shape
            assert np.array_equal(video, seg.video)
        audio = decode_tensor(emb["audio_input"])
        assert audio.dtype == np.float32 and audio.tobytes() == seg.audio.tobytes()  # bit-exact


def test_prep_one_service_and_exit_0(tmp_path: Path) -> None:
    proc = run_prep(FIXTURES / "short_700ms.mp4", FIXTURES / "demo", "--out", tmp_path,
                    "--service", "tagging")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bodies = sorted(tmp_path.rglob("*.json"))
    assert len(bodies) == 1 + 1 + 2 + 2  # short, desert, forest (2), lake (2)
    assert all(json.loads(p.read_text())["service"] == "tagging" for p in bodies)
    assert all(p.stem == json.loads(p.read_text())["request_id"] for p in bodies)


@pytest.mark.parametrize(
    ("flag", "value", "kinds"),
    [
        ("--services", "tagging,embedding", {"embedding", "tagging"}),
        ("--services", "embedding", {"embedding"}),
        ("--service", "both", {"embedding", "tagging"}),  # the old spelling still works
    ],
)
def test_prep_services_flag_matches_run(tmp_path: Path, flag: str, value: str, kinds: set[str]) -> None:
    proc = run_prep(FIXTURES / "short_700ms.mp4", "--out", tmp_path, flag, value)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {json.loads(p.read_text())["service"] for p in tmp_path.rglob("*.json")} == kinds


def test_prep_unknown_service_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = run_prep(FIXTURES / "short_700ms.mp4", "--out", tmp_path, "--services", "embedding,search")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "seeknetic-prep prep: error: Invalid services 'embedding,search': must be one or more of "
        "embedding, tagging, comma-separated."
    ]
    assert not list(tmp_path.rglob("*.json"))


def test_prep_missing_path_is_one_line_and_others_go_on(tmp_path: Path) -> None:
    proc = run_prep(tmp_path / "nope.mp4", FIXTURES / "demo" / "desert.mp4", "--out", tmp_path / "o")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.count("FAIL") == 1 and "nope.mp4: missing" in proc.stdout
    assert len(list((tmp_path / "o").rglob("*.json"))) == 2


def test_request_ids_are_deterministic_and_content_based(tmp_path: Path) -> None:
    copy = tmp_path / "renamed.mp4"
    copy.write_bytes((FIXTURES / "demo" / "lake.mp4").read_bytes())
    assert file_fingerprint(copy) == file_fingerprint(FIXTURES / "demo" / "lake.mp4")
    a = run_prep(copy, "--out", tmp_path / "a", "--service", "embedding")
    b = run_prep(FIXTURES / "demo" / "lake.mp4", "--out", tmp_path / "b", "--service", "embedding")
    assert a.returncode == b.returncode == 0
    names_a = sorted(p.name for p in (tmp_path / "a").rglob("*.json"))
    names_b = sorted(p.name for p in (tmp_path / "b").rglob("*.json"))
    assert names_a == names_b and len(names_a) == 2


def test_help_mentions_every_option() -> None:
    proc = run_prep("--help")
    assert proc.returncode == 0
    for option in ("--out", "--service", "--resize", "PATH"):
        assert option in proc.stdout


def test_upload_body_rules() -> None:
    from seeknetic_prep.errors import InvalidArgumentError
    from seeknetic_prep.pipeline.payloads import upload_body

    (seg,) = preprocess(FIXTURES / "short_700ms.mp4")
    body = upload_body(seg, service="tagging", request_id="a.b-c_1")
    assert body["video_kwargs"]["fps"] == pytest.approx(12 / 0.7)
    with pytest.raises(InvalidArgumentError, match="'search'"):
        upload_body(seg, service="search", request_id="x")  # type: ignore[arg-type]
    for bad in ("", "has space", "slash/no", "x" * 129):
        with pytest.raises(InvalidArgumentError, match="must match"):
            upload_body(seg, service="embedding", request_id=bad)


def test_fingerprint_is_content_based_and_never_reads_a_big_file_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:  # 3 GiB, sparse: reading it whole would take minutes
        fh.truncate(3 << 30)
    first = file_fingerprint(big)
    with big.open("r+b") as fh:
        fh.write(b"x")
    assert file_fingerprint(big) != first
    small = tmp_path / "a.txt"
    small.write_bytes(b"abc")
    other = tmp_path / "b.txt"
    other.write_bytes(b"abc")
    assert file_fingerprint(small) == file_fingerprint(other)
    other.write_bytes(b"abcd")
    assert file_fingerprint(small) != file_fingerprint(other)
    rid = request_id_for(first, preprocess(FIXTURES / "short_700ms.mp4")[0].window, "embedding", "pad")
    assert rid.endswith("-0-700-embedding-pad") and len(rid) <= 128


def test_a_255_byte_name_gets_its_bodies_like_any_file(tmp_path: Path) -> None:
    """Issue 22.13: a video whose name is 255 bytes (the most a file name may have) aborted all
    of ``prep`` (its bodies' folder, ``<name>.<12 hex>``, could not be made). Now the folder's
    name is cut to fit and the bodies are the file's; the other files go on."""
    src = tmp_path / "in"
    src.mkdir()
    long_name = "é" * 120 + "x" * 11 + ".mp4"  # 240 + 11 + 4 = 255 bytes in UTF-8
    assert len(long_name.encode()) == 255
    (src / long_name).write_bytes((FIXTURES / "short_700ms.mp4").read_bytes())
    (src / "desert.mp4").write_bytes((FIXTURES / "demo" / "desert.mp4").read_bytes())
    proc = run_prep(src, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    folders = sorted((tmp_path / "out").iterdir())
    assert len(folders) == 2 and all(len(os.fsencode(f.name)) <= 255 for f in folders)
    long_folder = next(f for f in folders if f.name.startswith("é"))
    bodies = sorted(long_folder.glob("*.json"))
    fp = file_fingerprint(src / long_name)
    assert [b.stem.split("-")[1] for b in bodies] == [fp[:16]] * 2  # the file's own ids
    assert long_folder.name.endswith(f".{fp[:12]}")
