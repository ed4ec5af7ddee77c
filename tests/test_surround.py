"""7.1 audio (issue 21.2): files that killed the interpreter under PyAV 18.1 decode, exactly.

AAC and Opus 7.1 made ``AudioFrame.to_ndarray()`` read a 9th, garbage plane (SIGSEGV, rc 139);
PCM 7.1 in a MOV whose ``chan`` atom names a layout tag has a custom-order layout that PyAV
freed twice (SIGABRT, rc 134). A signal cannot be caught, so each file is decoded in a child
interpreter: the test fails, rather than the test run dying, if the guard ever goes.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pytest
from _media_truth import audio_checks

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
TRUTH: dict[str, Any] = json.loads((FIXTURES / "ground_truth.json").read_text())["files"]
SURROUND = ["surround71_aac.mp4", "surround71_opus.mkv", "surround71_pcm.mov"]

_PREPROCESS = """
import sys
import numpy as np
from seeknetic_prep.decode.media import probe
from seeknetic_prep.decode.preprocess import preprocess
segs = preprocess(sys.argv[1])
np.save(sys.argv[2], np.concatenate([s.audio[0, 0] for s in segs]))
print(probe(sys.argv[1]).audio_channels, [(s.start_ms, s.end_ms) for s in segs])
"""

# The reference mix, by a path that never reads a planar plane in Python: FFmpeg's resampler
# packs the channels into one plane first (fltp -> flt is a copy, s16 -> flt divides by 2^15).
_REFERENCE = """
import sys
import av
import numpy as np
chunks = []
with av.open(sys.argv[1]) as c:
    packer = av.AudioResampler(format="flt")
    for frame in [*c.decode(audio=0), None]:
        for out in packer.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1, out.layout.nb_channels))
    rate = c.streams.audio[0].rate
channels = np.ascontiguousarray(np.concatenate(chunks).T)
np.save(sys.argv[2], channels.mean(axis=0, dtype=np.float32))
print(rate, channels.shape[0])
"""


def _child(script: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)


def _native_copy(name: str, dest: Path) -> Path:
    """The file as PyAV can read it unguarded: the PCM MOV's ``chan`` atom given back the
    channel bitmap its muxer wrote (native 7.1) in place of the layout tag MPEG 7.1 C."""
    data = bytearray((FIXTURES / name).read_bytes())
    if name.endswith(".mov"):
        at = data.index(b"chan") + 8
        assert struct.unpack(">II", data[at:at + 8]) == ((128 << 16) | 8, 0)
        data[at:at + 8] = struct.pack(">II", 1 << 16, 0x63F)
    dest.write_bytes(bytes(data))
    return dest


@pytest.mark.parametrize("name", SURROUND)
def test_71_audio_decodes_in_a_child_that_is_not_killed_and_mixes_every_channel(
    name: str, tmp_path: Path
) -> None:
    truth = TRUTH[name]
    proc = _child(_PREPROCESS, FIXTURES / name, tmp_path / "got.npy")
    # A negative return code is a signal: -11 (SIGSEGV) and -6 (SIGABRT) before the guard.
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    channels, windows = proc.stdout.split(" ", 1)
    assert int(channels) == truth["audio"]["channels"] == 8
    assert json.loads(windows.replace("(", "[").replace(")", "]")) == truth["windows"]
    got = np.load(tmp_path / "got.npy")

    # The tone of every second is right (what make_fixtures.py wrote: base + step * k Hz),
    # and the window is silent after the content.
    checks = []
    for k, (start, end) in enumerate(truth["windows"]):
        checks += audio_checks(got[k * 220500:(k + 1) * 220500], start, end, truth["audio"])
    tones = [(t, e, m) for t, e, m in checks if e is not None]
    assert len(tones) >= 2 * truth["audio"]["end_ms"] // 1000 and len(checks) > len(tones)
    for t, expected, measured in checks:
        if expected is None:
            assert measured < 2e-3, f"{t:.2f} s should be silent, RMS {measured:.4f}"
        else:
            assert measured == pytest.approx(expected, abs=4), f"{t:.2f} s: {measured:.1f} Hz"

    # The mono mix is the mean of all 8 channels, resampled as librosa's soxr_hq does.
    ref = _child(_REFERENCE, _native_copy(name, tmp_path / f"native{Path(name).suffix}"),
                 tmp_path / "mean.npy")
    assert ref.returncode == 0, (ref.returncode, ref.stderr[-3000:])
    rate, n_channels = map(int, ref.stdout.split())
    assert (rate, n_channels) == (truth["audio"]["rate"], 8)
    want = librosa.resample(np.load(tmp_path / "mean.npy"), orig_sr=rate, target_sr=22050,
                            res_type="soxr_hq")
    n = round(truth["audio"]["end_ms"] * 22.05) - 50  # the flushed tail differs in its last samples
    assert float(np.abs(want[:n]).max()) > 0.2  # a real signal, not silence equal to silence
    np.testing.assert_allclose(got[:n], np.clip(want[:n], -1, 1), atol=1e-6)
