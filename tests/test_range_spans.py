"""Reading a file in a bucket with few requests and no bytes nobody reads (issue 19: streamed,
never downloaded whole): a range reader told where a task's packets lie (byte spans from the
container's index), the plan's fingerprint ranges requested at once, and passes that demux only
their own stream. Through a :class:`RangeReader` over the bytes of real clips (the fetch
function is the unit's input, as in tests/test_sources.py); the windows decoded through it are
compared with the same windows decoded from the file."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from seeknetic_prep.decode.audio import audio_pass
from seeknetic_prep.decode.probe import probe
from seeknetic_prep.decode.sampling import plan_windows

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from _bench_inputs import Recipe, _encode, _x264  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 s of 320x240 H.264 (2 s GOPs, B-frames) with AAC, muxed video first as PyAV writes a
    file encoded that way: the audio lies after most of the video, not between it."""
    path = tmp_path_factory.mktemp("spans") / "clip.mp4"
    _encode(Recipe("spans", "mp4", "libx264", 320, 240, 15, 30.0, gop=30, bframes=2,
                   options=_x264(30, 2, "ultrafast"), seed=5), path)
    return path


def test_the_audio_pass_reads_the_audio_not_the_video_around_it(clip: Path) -> None:
    """The audio of the middle window lies after most of the video; a pass that demuxed every
    stream read the video from the keyframe before its seek onwards to get there, and back
    (10.7 MB of this 7 MB file; 0.6 MB now)."""
    data = clip.read_bytes()
    info = probe(clip)
    window = plan_windows(info.duration_ms)[1]
    import av

    with av.open(str(clip)) as container:
        first_audio = container.streams.audio[0].index_entries[0].pos
    assert first_audio > len(data) // 2  # the layout this test is about

    class Counted(io.BytesIO):
        read_bytes = 0

        def read(self, size: int | None = -1) -> bytes:
            out = super().read(size)
            Counted.read_bytes += len(out)
            return out

    chunks = audio_pass(Counted(data), info, window.start_ms, threads=1)
    heard = 0
    for _, samples in chunks:  # the window's audio and a second more, as the decoder takes it
        heard += len(samples)
        if heard >= 22_050 * (window.end_ms - window.start_ms + 1000) // 1000:
            break
    chunks.close()
    assert heard > 0
    assert Counted.read_bytes < len(data) // 5, (Counted.read_bytes, len(data))
