"""The decoder object: it owns its container, takes threads and device as arguments, returns
typed frame batches, and routes NVDEC through the same door (tested here without a GPU)."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from seeknetic_prep.decode import decoder as decoder_module
from seeknetic_prep.decode import hw
from seeknetic_prep.decode.decoder import FrameBatch, VideoDecoder
from seeknetic_prep.decode.media import decode_frames_at, probe
from seeknetic_prep.errors import InvalidArgumentError, MediaError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
H264 = FIXTURES / "cfr30_bframes.mp4"
TARGETS = [500.0, 1700.0, 9000.0, 15000.0]
NO_GPU = not hw.cuda_present()


def test_it_opens_probes_and_closes_its_container() -> None:
    with VideoDecoder(H264, device="cpu") as dec:
        assert dec.info == probe(H264) and dec.device == "cpu"
        container = dec._container
        chunks = dec.audio(0)
        assert next(chunks)[0] == 0
    assert dec._container is None and chunks.gi_frame is None  # the audio pass is closed too
    with pytest.raises(AssertionError, match="Container is not open"):  # PyAV's own words
        next(container.demux())
    with pytest.raises(InvalidArgumentError, match=r"Invalid use of a closed VideoDecoder \(.*cfr30"):
        dec.frames_at(TARGETS)
    dec.close()  # twice: harmless


def test_a_file_that_is_not_video_fails_in_the_constructor(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="empty"):
        VideoDecoder(FIXTURES / "bad" / "empty.mp4")
    with pytest.raises(MediaError, match="no video stream"):
        VideoDecoder(FIXTURES / "bad" / "audio_only.mp4")


def test_frames_come_as_a_typed_batch_equal_to_the_streamed_frames() -> None:
    info = probe(H264)
    streamed = list(decode_frames_at(info, TARGETS, (398, 224)))
    with VideoDecoder(H264, device="cpu", info=info) as dec:
        batch = dec.frames_at(TARGETS, size=(398, 224))
        groups = list(dec.batches_at([TARGETS[:2], [], TARGETS[2:]], size=(398, 224)))
        full = dec.frames_at(TARGETS[:1])  # default size: the display size
    assert batch.pts_ms == tuple(pts for pts, _ in streamed) and len(batch) == 4
    assert np.array_equal(batch.data, np.stack([rgb for _, rgb in streamed]))
    assert [len(g) for g in groups] == [2, 0, 2] and groups[1].data.shape == (0, 224, 398, 3)
    assert np.array_equal(np.concatenate([g.data for g in groups]), batch.data)
    assert full.data.shape == (1, 180, 320, 3)


def test_a_rotated_file_is_scaled_in_its_stored_orientation() -> None:
    with VideoDecoder(FIXTURES / "rotated90.mp4", device="cpu") as dec:
        assert (dec.info.width, dec.info.height) == (180, 320)
        assert dec.frames_at([100.0], size=(224, 398)).data.shape == (1, 224, 398, 3)


@pytest.mark.parametrize(
    ("data", "pts", "rule"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), (0.0, 1.0), r"float32\[2, 8, 8, 3\]: must be uint8"),
        (np.zeros((8, 8, 3), np.uint8), (0.0,), r"uint8\[8, 8, 3\]: must be uint8\[n, height, width, 3\]"),
        (np.zeros((2, 8, 8, 4), np.uint8), (0.0, 1.0), "must be uint8"),
        (np.zeros((2, 8, 8, 3), np.uint8), (0.0,), "pts_ms of length 1: must hold one time per frame"),
        ([[0]], (), "list, must be a numpy array"),
    ],
)
def test_a_frame_batch_refuses_a_wrong_shape(data: Any, pts: tuple[float, ...], rule: str) -> None:
    with pytest.raises(InvalidArgumentError, match=rule):
        FrameBatch(data, pts)


def _clip(path: Path, width: int, height: int) -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), i * 40, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    return path


@pytest.mark.parametrize("known", [False, True])
def test_the_threads_argument_reaches_the_video_decoder(known: bool, tmp_path: Path) -> None:
    path = _clip(tmp_path / "vga.mp4", 640, 360)  # above the one-thread size
    info = probe(path) if known else None
    for threads in (1, 3):
        with VideoDecoder(path, device="cpu", threads=threads, info=info) as dec:
            assert dec.threads == threads
            assert dec._video.codec_context.thread_count == threads
            assert dec.frames_at([150.0]).pts_ms == (100.0,)
    with VideoDecoder(H264, device="cpu", threads=3) as dec:  # 320 x 180: one thread whatever
        assert dec._video.codec_context.thread_count == 1
    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="Invalid threads"):
            VideoDecoder(H264, threads=bad)  # type: ignore[arg-type]


def test_the_device_here_is_what_choose_device_says() -> None:
    with VideoDecoder(FIXTURES / "hevc10.mp4") as dec:
        assert dec.device == ("cpu" if NO_GPU else "cuda")
    with VideoDecoder(FIXTURES / "hevc10.mp4", gpu_allowed=False) as dec:
        assert dec.device == "cpu"


def test_cuda_falls_back_to_the_cpu_for_a_codec_nvdec_is_not_trusted_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hw, "cuda_present", lambda: True)
    with VideoDecoder(FIXTURES / "av1.mp4", device="cuda") as dec:
        assert dec.device == "cpu"
        got = dec.frames_at([100.0, 900.0])
    with VideoDecoder(FIXTURES / "av1.mp4", device="cpu") as dec:
        want = dec.frames_at([100.0, 900.0])
    assert got.pts_ms == want.pts_ms and np.array_equal(got.data, want.data)
    with VideoDecoder(H264, device="auto", gpu_allowed=False) as dec:  # a mixed pool's CPU worker
        assert dec.device == "cpu"


def test_nvdec_goes_through_the_same_door(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a device (faked), auto picks NVDEC for H.264: the probe's container is closed and
    the file opened again with the ``cuda`` hwaccel, its decoder fed by one thread."""
    sentinel = object()
    opened: list[Any] = []
    real_open = decoder_module.open_container

    def recording_open(source: Any, *, hwaccel: Any = None) -> Any:
        opened.append(hwaccel)
        return real_open(source)  # no GPU here: the CPU decoder stands in for NVDEC

    monkeypatch.setattr(hw, "cuda_present", lambda: True)
    monkeypatch.setattr(hw, "nvdec", lambda: sentinel)
    monkeypatch.setattr(decoder_module, "open_container", recording_open)
    with VideoDecoder(H264, threads=4) as dec:
        assert dec.device == "cuda" and opened == [sentinel]
        assert dec._video.codec_context.thread_count == 1
        assert len(dec.frames_at(TARGETS)) == 4


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device is present")
def test_without_a_device_nvdec_fails_as_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hw, "cuda_present", lambda: True)  # claims a device that is not there
    with pytest.raises(MediaError, match=r"cfr30_bframes\.mp4: NVDEC cannot open it .*use --decode cpu"):
        VideoDecoder(H264)
    monkeypatch.setattr(hw, "cuda_present", lambda: False)
    with pytest.raises(InvalidArgumentError, match="no CUDA device here"):
        VideoDecoder(H264, device="cuda")


def test_a_file_object_decodes_as_its_path_does() -> None:
    """The door for object storage: a binary file object with read and seek. The frame pass and
    the audio pass read it at once, each at its own place."""
    path, targets = FIXTURES / "vfr.mkv", [500.0, 1700.0, 4000.0, 5500.0]  # 6 s, Opus
    with VideoDecoder(path, device="cpu") as dec:
        want = dec.frames_at(targets)
        want_audio = list(dec.audio(3000))
    with path.open("rb") as fh, VideoDecoder(fh, device="cpu") as dec:
        assert dec.info == probe(path)  # named by the file object's name
        chunks = dec.audio(3000)
        first_chunk = next(chunks)  # the audio pass's container is open while the frames decode
        got = dec.frames_at(targets)
        got_audio = [first_chunk, *chunks]
    assert got.pts_ms == want.pts_ms and np.array_equal(got.data, want.data)
    assert [p for p, _ in got_audio] == [p for p, _ in want_audio]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got_audio, want_audio, strict=True))
    with VideoDecoder(io.BytesIO(path.read_bytes()), device="cpu") as dec:
        assert dec.info.path == "<stream>" and dec.frames_at(targets).pts_ms == want.pts_ms


def test_a_file_object_that_is_not_video_fails_as_ours() -> None:
    with pytest.raises(MediaError, match=r"^<stream>: empty"):
        VideoDecoder(io.BytesIO(b""))
    with pytest.raises(MediaError, match=r"^<stream>: not media"):
        VideoDecoder(io.BytesIO(b"This is a text file, not a video.\n" * 40))


def test_a_worker_hands_its_settings_to_the_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """``worker_init`` (threads, GPU or not) reaches every decoder the worker opens, as arguments."""
    from seeknetic_prep.pipeline import worker
    from seeknetic_prep.pipeline.tasks import DecodeTask

    seen: list[dict[str, Any]] = []
    real_init = VideoDecoder.__init__

    def spy(self: VideoDecoder, source: Any, **kwargs: Any) -> None:
        seen.append(kwargs)
        real_init(self, source, **kwargs)

    monkeypatch.setattr(VideoDecoder, "__init__", spy)
    task = DecodeTask(str(FIXTURES / "short_700ms.mp4"), "fp", ((0, 0, 700),), ())
    try:
        worker.configure(decode_threads=2, gpu=False)
        assert len(list(worker.encode_windows(task))) == 1
    finally:
        worker.configure()
    assert len(list(worker.encode_windows(task))) == 1  # the defaults again
    assert [(k["threads"], k["gpu_allowed"]) for k in seen] == [(2, False), (0, True)]
