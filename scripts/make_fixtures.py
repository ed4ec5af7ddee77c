#!/usr/bin/env python3
"""Write the test media in ``fixtures/`` and the ground truth that describes them.

    python scripts/make_fixtures.py                  # rewrites fixtures/ (a few hundred KB in all)
    python scripts/make_fixtures.py --only ties24.mp4  # writes that one, merges its ground truth

A re-run may give other bytes for the files it rewrites (encoder builds differ): ``--only``
adds a new fixture without touching the others.

Every frame shows its own index as a 6x6 grid of black/white cells in the middle of the
picture (16 bits of index, then the same 16 bits inverted as a check), so a test can read back
which frame a tensor holds after a 16:9 centre-crop, a 224 px resize and lossy coding. The four
corner cells are red (top-left), green (top-right), blue (bottom-left) and white (bottom-right):
an orientation marker, and a check that colours survive YUV -> RGB. Audio is a sine whose
frequency steps every second: ``base_hz + step_hz * k`` during second ``k`` of the audio
stream, so a test can tell which second of sound came back.

``ground_truth.json`` records for each file: every frame's pts in ms (read back from the
container's packets, in presentation order) and its index, the display rotation, the audio plan
(start on the video timeline, end, tone rule), the expected windows, and for the bad files the
cause the library must report. PyAV writes everything (no ffmpeg binary needed); the rotated
clip gets its display matrix from ``VideoStream.set_display_matrix`` (the iPhone portrait
matrix, which FFmpeg reads as -90 degrees) and the script checks PyAV reads it back.

Encoders run single-threaded with fixed settings so a re-run gives the same frames and tones.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures"

GRID = 6  # cells per side
BITS = 16
CORNERS = {(0, 0): (255, 0, 0), (0, GRID - 1): (0, 255, 0), (GRID - 1, 0): (0, 0, 255),
           (GRID - 1, GRID - 1): (255, 255, 255)}
DATA_CELLS = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in CORNERS]
assert len(DATA_CELLS) == 2 * BITS
# iPhone portrait: FFmpeg reads rotation -90 (rotate 90 degrees clockwise to display).
IPHONE_PORTRAIT_MATRIX = [0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30]
# A MOV ``chan`` atom's layout tags (CoreAudio): the muxer writes a channel bitmap, which reads
# back as FFmpeg's native 7.1; the tag MPEG 7.1 C (L R C LFE Ls Rs Rls Rrs) reads back as a
# custom-order layout, as files from other tools do.
MOV_CH_LAYOUT_USE_BITMAP = 1 << 16
MOV_CH_LAYOUT_MPEG_7_1_C = (128 << 16) | 8


def code_bits(index: int) -> list[int]:
    """32 cell values: the index's 16 bits (MSB first), then the same bits inverted."""
    bits = [(index >> (BITS - 1 - b)) & 1 for b in range(BITS)]
    return bits + [1 - b for b in bits]


def draw_frame(index: int, width: int, height: int, background: tuple[int, int, int]) -> np.ndarray:
    """An upright RGB picture of ``width`` x ``height`` showing ``index`` in a centred grid."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = background
    # A slow diagonal ramp so neighbouring frames differ and encoders have texture to code.
    ramp = ((np.arange(width)[None, :] + np.arange(height)[:, None] + 3 * index) % 64).astype(np.uint8)
    img[..., 1] = np.clip(img[..., 1].astype(np.int16) + ramp - 32, 0, 255).astype(np.uint8)
    side = (min(width, height) * 2 // 3) // GRID * GRID
    cell = side // GRID
    top, left = (height - side) // 2, (width - side) // 2
    bits = code_bits(index)
    for (r, c), rgb in CORNERS.items():
        img[top + r * cell: top + (r + 1) * cell, left + c * cell: left + (c + 1) * cell] = rgb
    for (r, c), bit in zip(DATA_CELLS, bits, strict=True):
        img[top + r * cell: top + (r + 1) * cell, left + c * cell: left + (c + 1) * cell] = 255 * bit
    return img


def tone(seconds: float, rate: int, base_hz: float, step_hz: float, amp: float = 0.5) -> np.ndarray:
    """``base_hz + step_hz * k`` during second k, phase-continuous, float32 mono."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    freq = base_hz + step_hz * np.floor(t)
    phase = 2 * np.pi * np.cumsum(freq) / rate
    return (amp * np.sin(phase)).astype(np.float32)


@dataclass
class Spec:
    name: str  # path under fixtures/
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    width: int = 320
    height: int = 180
    frame_ms: list[float] = field(default_factory=list)  # pts of each frame, ms
    time_base: Fraction = Fraction(1, 15360)
    codec_options: dict[str, str] = field(default_factory=dict)
    background: tuple[int, int, int] = (96, 96, 96)
    rotate_portrait: bool = False  # draw upright portrait content, store it rotated, tag -90
    orient: tuple[int, bool] | None = None  # (ccw degrees, mirrored): store so that this shows it
    colorspace_709: bool = False
    audio: dict[str, Any] | None = None  # codec, rate, layout, start_s, seconds, base_hz, step_hz
    container_options: dict[str, str] = field(default_factory=dict)
    title: bytes | None = None  # the container title's raw bytes, UTF-8 or not
    mov_layout_tag: int | None = None  # rewrite the MOV chan atom's layout tag (see above)
    cue_shift: int = 0  # Matroska: move every Cues cluster position this many bytes on


def audio_frame(samples: np.ndarray, fmt: str, layout: str) -> av.AudioFrame:
    """An audio frame holding ``samples`` (channels x n, planar) in ``fmt``.

    Not ``AudioFrame.from_ndarray``: PyAV 15-18 sees a 9th plane in an 8-channel planar frame
    and fails on it; only the first ``channels`` planes are written here (the same bytes).
    """
    frame = av.AudioFrame(format=fmt, layout=layout, samples=samples.shape[1])
    planes = frame.planes
    for k in range(samples.shape[0]):
        planes[k].update(np.ascontiguousarray(samples[k]).tobytes())
    return frame


def orient_matrix(degrees: int, mirrored: bool) -> list[int]:
    """The display matrix (``AV_PKT_DATA_DISPLAYMATRIX``: row vectors, y down, 16.16) that turns
    the picture ``degrees`` counter-clockwise, then flips it left to right if ``mirrored``."""
    c, s = round(math.cos(math.radians(degrees))), round(math.sin(math.radians(degrees)))
    (a, b), (cc, d) = (c, -s), (s, c)
    if mirrored:  # then x -> -x: negate the first column
        a, cc = -a, -cc
    return [a << 16, b << 16, 0, cc << 16, d << 16, 0, 0, 0, 1 << 30]


def patch_once(path: Path, old: bytes, new: bytes) -> None:
    """Replace the one occurrence of ``old`` in the file by ``new`` (same length)."""
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1, (path, old, data.count(old))
    path.write_bytes(data.replace(old, new))


def cfr(fps: float, seconds: float) -> list[float]:
    return [i * 1000.0 / fps for i in range(round(fps * seconds))]


def vfr(seconds: float) -> list[float]:
    """Irregular frame durations, including one frame held for 700 ms."""
    steps = [33, 50, 17, 100, 40, 67, 25, 700, 33, 83]
    out, t, k = [], 0.0, 0
    while t < seconds * 1000:
        out.append(t)
        t += steps[k % len(steps)]
        k += 1
    return out


def write(spec: Spec) -> dict[str, Any]:
    path = OUT / spec.name
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), "w", options={"fflags": "+bitexact", **spec.container_options})
    # Muxers write UTF-8; a title that is not is written as a same-length ASCII stand-in and
    # its bytes put in place afterwards.
    stand_in = None if spec.title is None else bytes(b if b < 0x80 else 0x3F for b in spec.title)
    if stand_in is not None:
        container.metadata["title"] = stand_in.decode("ascii")
    fps = round(1000 * len(spec.frame_ms) / (spec.frame_ms[-1] + 1)) or 1
    vs = container.add_stream(spec.codec, rate=fps, options=spec.codec_options)
    vs.width, vs.height, vs.pix_fmt = spec.width, spec.height, spec.pix_fmt
    vs.codec_context.time_base = spec.time_base
    vs.time_base = spec.time_base
    vs.codec_context.thread_count = 1
    if spec.colorspace_709:
        vs.codec_context.colorspace = 1  # AVCOL_SPC_BT709
        vs.codec_context.color_primaries = 1
        vs.codec_context.color_trc = 1
        vs.codec_context.color_range = 1  # limited
    if spec.rotate_portrait:
        vs.set_display_matrix(IPHONE_PORTRAIT_MATRIX)
    if spec.orient is not None:
        vs.set_display_matrix(orient_matrix(*spec.orient))
    astream = None
    if spec.audio is not None:
        a = spec.audio
        astream = container.add_stream(a["codec"], rate=a["rate"], layout=a["layout"])
        astream.codec_context.thread_count = 1
        if a.get("bit_rate"):
            astream.codec_context.bit_rate = a["bit_rate"]
        astream.time_base = Fraction(1, a["rate"])

    for index, ms in enumerate(spec.frame_ms):
        if spec.rotate_portrait:
            upright = draw_frame(index, spec.height, spec.width, spec.background)
            img = np.ascontiguousarray(np.rot90(upright, k=1))  # stored CCW; display turns it CW
        elif spec.orient is not None:
            degrees, mirrored = spec.orient
            upright = (draw_frame(index, spec.height, spec.width, spec.background) if degrees % 180
                       else draw_frame(index, spec.width, spec.height, spec.background))
            # Display = turn ccw, then mirror; so stored = unmirror, then turn back.
            unmirrored = upright[:, ::-1] if mirrored else upright
            img = np.ascontiguousarray(np.rot90(unmirrored, k=-(degrees // 90)))
        else:
            img = draw_frame(index, spec.width, spec.height, spec.background)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        if spec.colorspace_709:
            frame = frame.reformat(format=spec.pix_fmt, dst_colorspace="itu709", dst_color_range="MPEG")
            frame.colorspace = 1
            frame.color_range = 1
        else:
            frame = frame.reformat(format=spec.pix_fmt)
        frame.pts = round(Fraction(ms) / 1000 / spec.time_base)
        frame.time_base = spec.time_base
        for packet in vs.encode(frame):
            container.mux(packet)
    for packet in vs.encode():
        container.mux(packet)

    if astream is not None and spec.audio is not None:
        a = spec.audio
        rate, channels = a["rate"], av.AudioLayout(a["layout"]).nb_channels
        mono = tone(a["seconds"], rate, a["base_hz"], a["step_hz"])
        gains = np.linspace(1.0, 0.4, channels)[:, None].astype(np.float32)
        samples = gains * mono[None, :] / float(gains.mean())  # the channel average is the tone
        start = round(a["start_s"] * rate)
        fmt = "s16p" if a["codec"].startswith("pcm_s16") else "fltp"
        for k in range(0, samples.shape[1], 1024):
            chunk = samples[:, k:k + 1024]
            if fmt == "s16p":
                chunk = (chunk * 32767).astype(np.int16)
            frame = audio_frame(chunk, fmt, a["layout"])
            frame.sample_rate = rate
            frame.pts = start + k
            frame.time_base = Fraction(1, rate)
            for packet in astream.encode(frame):
                container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    container.close()
    if spec.title is not None and stand_in is not None:
        patch_once(path, stand_in, spec.title)
        try:  # the point of the file: PyAV's default (strict UTF-8) cannot even open it
            av.open(str(path)).close()
            raise AssertionError(f"{spec.name}: PyAV read a title that is not UTF-8")
        except UnicodeDecodeError:
            pass
    if spec.mov_layout_tag is not None:
        retag_mov_chan(path, spec.mov_layout_tag)
    if spec.cue_shift:
        shift_cues(path, spec.cue_shift)
    return truth_for(spec, path)


def retag_mov_chan(path: Path, tag: int) -> None:
    """Give the MOV ``chan`` atom (version/flags, layout tag, bitmap, ...) layout tag ``tag``."""
    data = bytearray(path.read_bytes())
    assert data.count(b"chan") == 1, path
    at = data.index(b"chan") + 8  # after the name and version/flags
    assert struct.unpack(">I", data[at:at + 4])[0] == MOV_CH_LAYOUT_USE_BITMAP, path
    data[at:at + 8] = struct.pack(">II", tag, 0)
    path.write_bytes(bytes(data))


def _ebml_children(data: bytes | bytearray, start: int, end: int) -> list[tuple[int, int, int]]:
    """The EBML elements in ``data[start:end]``: (id with its marker bits, body offset, size)."""
    out = []
    i = start
    while i < end:
        ident, n1 = _vint(data, i, marker=True)
        size, n2 = _vint(data, i + n1, marker=False)
        out.append((ident, i + n1 + n2, size))
        i += n1 + n2 + size
    return out


def _vint(data: bytes | bytearray, i: int, *, marker: bool) -> tuple[int, int]:
    first, length, mask = data[i], 1, 0x80
    while not first & mask:
        mask >>= 1
        length += 1
    value = first if marker else first & (mask - 1)
    for k in range(1, length):
        value = (value << 8) | data[i + k]
    return value, length


def shift_cues(path: Path, by: int) -> None:
    """Move every CueClusterPosition (Segment > Cues > CuePoint > CueTrackPositions) ``by``
    bytes on, in place: a muxer that wrote its index a few bytes off each cluster's start."""
    data = bytearray(path.read_bytes())
    moved = 0
    for seg_id, seg, seg_size in _ebml_children(data, 0, len(data)):
        cues = [(b, n) for i, b, n in _ebml_children(data, seg, seg + seg_size) if i == 0x1C53BB6B]
        for body, size in cues if seg_id == 0x18538067 else []:
            for _, point, point_size in _ebml_children(data, body, body + size):
                for tid, track, track_size in _ebml_children(data, point, point + point_size):
                    for fid, at, n in _ebml_children(data, track, track + track_size) if tid == 0xB7 else []:
                        if fid == 0xF1:
                            value = int.from_bytes(data[at:at + n], "big") + by
                            data[at:at + n] = value.to_bytes(n, "big")
                            moved += 1
    assert moved, path
    path.write_bytes(bytes(data))


def truth_for(spec: Spec, path: Path) -> dict[str, Any]:
    """Read back the container facts (pts, rotation, audio start) the tests compare against."""
    with av.open(str(path), metadata_errors="replace") as c:
        v = c.streams.video[0]
        packets = [(float(p.pts * p.time_base * 1000), float(p.duration * p.time_base * 1000))
                   for p in c.demux(v) if p.pts is not None]
    origin = min(t for t, _ in packets)  # the library's timeline zero: the first frame's pts
    packets = [(t - origin, d) for t, d in packets]
    pts = sorted(t for t, _ in packets)
    # Where the video ends: the end of its last frame (its stored duration, else the last step).
    last_step = pts[-1] - pts[-2] if len(pts) > 1 else 0.0
    last_t, last_d = max(packets)
    duration_ms = last_t + (last_d or last_step)
    assert len(pts) == len(spec.frame_ms), (spec.name, len(pts), len(spec.frame_ms))
    with av.open(str(path), metadata_errors="replace") as c:
        first = next(c.decode(video=0))
        rotation = first.rotation
        assert float(first.pts * first.time_base * 1000) == origin
    if spec.orient is None:
        assert rotation == (-90 if spec.rotate_portrait else 0), (spec.name, rotation)
    else:
        with av.open(str(path)) as c:
            side = next(s for s in next(c.decode(video=0)).side_data if "DISPLAYMATRIX" in str(s.type))
            assert list(struct.unpack("<9i", bytes(side))) == orient_matrix(*spec.orient), spec.name
        rotation = spec.orient[0]
    audio = None
    if spec.audio is not None:
        a = spec.audio
        # Where the container really put the sound, relative to the first video frame (muxers
        # shift streams: B-frame delay in MPEG-TS, AAC priming in an mp4 empty edit).
        with av.open(str(path), metadata_errors="replace") as c:
            # Set, never read: PyAV 17-18 frees a custom-order layout (the retagged MOV) twice
            # when its context's layout is read, or when a frame carrying it is freed.
            c.streams.audio[0].codec_context.layout = a["layout"]
            decoded = c.decode(audio=0)
            af = next(decoded)
            if a.get("priming_gap"):
                # A fragmented mp4 cannot shift the AAC priming frame back: it stays at 0 and a
                # gap up to the sound's first real samples (at the video's B-frame delay) follows.
                af = next(decoded)
            start_ms = float(af.pts * af.time_base * 1000) - origin
        audio = {"start_ms": start_ms, "end_ms": start_ms + a["seconds"] * 1000,
                 "base_hz": a["base_hz"], "step_hz": a["step_hz"], "rate": a["rate"],
                 "channels": av.AudioLayout(a["layout"]).nb_channels, "codec": a["codec"]}
    n_windows = math.ceil(round(duration_ms) / 10_000)
    return {
        "kind": "good",
        "codec": spec.codec,
        "pix_fmt": spec.pix_fmt,
        "coded_size": [spec.width, spec.height],
        "display_size": ([spec.height, spec.width]
                         if spec.rotate_portrait or (spec.orient and spec.orient[0] % 180)
                         else [spec.width, spec.height]),
        "rotation": rotation,
        "mirrored": bool(spec.orient and spec.orient[1]),
        "origin_ms": origin,
        "duration_ms": duration_ms,
        "windows": [[i * 10_000, min((i + 1) * 10_000, round(duration_ms))] for i in range(n_windows)],
        "frames": [[i, ms] for i, ms in enumerate(pts)],
        "audio": audio,
    }


def aac(rate: int = 44100, layout: str = "stereo", start_s: float = 0.0, seconds: float = 0.0,
        base_hz: float = 300, step_hz: float = 100, codec: str = "aac", bit_rate: int = 0) -> dict[str, Any]:
    return {"codec": codec, "rate": rate, "layout": layout, "start_s": start_s, "seconds": seconds,
            "base_hz": base_hz, "step_hz": step_hz, **({"bit_rate": bit_rate} if bit_rate else {})}


X264_LONG_GOP = {"g": "300", "bf": "3", "preset": "veryfast", "crf": "28"}
X264 = {"preset": "veryfast", "crf": "28"}


def specs() -> list[Spec]:
    return [
        Spec("cfr30_bframes.mp4", frame_ms=cfr(30, 20), codec_options=X264_LONG_GOP,
             audio=aac(seconds=20)),
        Spec("vfr.mp4", frame_ms=vfr(12), time_base=Fraction(1, 1000), codec_options=X264,
             background=(40, 90, 140), audio=aac(seconds=12, base_hz=400)),
        Spec("vfr.mkv", frame_ms=vfr(6), time_base=Fraction(1, 1000), codec_options=X264,
             background=(140, 60, 60), audio=aac(seconds=6, base_hz=500, codec="libopus", rate=48000)),
        Spec("rotated90.mp4", frame_ms=cfr(25, 6), codec_options=X264, background=(70, 120, 70),
             rotate_portrait=True, audio=aac(seconds=6)),
        Spec("no_audio.mp4", frame_ms=cfr(25, 8), codec_options=X264, background=(120, 120, 40)),
        Spec("late_audio_25s.mkv", frame_ms=cfr(15, 25), time_base=Fraction(1, 1000),
             codec_options=X264_LONG_GOP, background=(60, 60, 120),
             audio=aac(start_s=2.0, seconds=23)),
        Spec("late_audio.mp4", frame_ms=cfr(15, 8), codec_options=X264, background=(90, 60, 120),
             audio=aac(start_s=2.0, seconds=6, base_hz=600)),
        Spec("six_ch_48k.mp4", frame_ms=cfr(24, 11), codec_options=X264, background=(30, 30, 30),
             audio=aac(rate=48000, layout="5.1", seconds=11)),
        Spec("hevc10.mp4", codec="libx265", pix_fmt="yuv420p10le", frame_ms=cfr(24, 5),
             codec_options={"preset": "ultrafast", "x265-params": "log-level=error:pools=1:frame-threads=1"},
             background=(128, 100, 160), colorspace_709=True, audio=aac(seconds=5)),
        Spec("vp9.webm", codec="libvpx-vp9", frame_ms=cfr(24, 4), time_base=Fraction(1, 1000),
             codec_options={"deadline": "realtime", "cpu-used": "8", "crf": "40", "b": "0"},
             pix_fmt="yuv420p", background=(150, 150, 150), audio=aac(rate=48000, seconds=4,
                                                                    codec="libopus")),
        Spec("av1.mp4", codec="libsvtav1", frame_ms=cfr(24, 3),
             codec_options={"preset": "10", "crf": "40", "svtav1-params": "lp=1:lookahead=0"},
             background=(60, 140, 140), audio=aac(seconds=3, base_hz=800)),
        Spec("mjpeg.avi", codec="mjpeg", pix_fmt="yuvj420p", frame_ms=cfr(10, 4),
             time_base=Fraction(1, 10), codec_options={"qscale": "3"}, background=(100, 50, 20),
             audio=aac(rate=22050, layout="mono", seconds=4, codec="pcm_s16le")),
        # MPEG-TS starts its clock at 1.4 s: timeline zero is the first frame, not the container's 0.
        Spec("mpegts_offset.ts", frame_ms=cfr(25, 5), codec_options=X264, background=(150, 90, 150),
             audio=aac(seconds=5, base_hz=700)),
        Spec("short_700ms.mp4", frame_ms=cfr(30, 0.7), codec_options=X264, background=(20, 80, 80),
             audio=aac(seconds=0.7, base_hz=1000)),
        # A good clip whose container title is Latin-1 ("Caf\xe9"), as old Windows tools write it.
        Spec("latin1_title.mp4", frame_ms=cfr(25, 4), codec_options=X264, background=(110, 80, 60),
             title=b"Caf\xe9", audio=aac(seconds=4, base_hz=900)),
        # 7.1: PyAV reads a 9th plane in 8-channel planar frames (AAC, Opus), and frees the
        # custom-order layout of a retagged PCM MOV twice.
        Spec("surround71_aac.mp4", frame_ms=cfr(24, 3), codec_options=X264, background=(50, 70, 110),
             audio=aac(rate=48000, layout="7.1", seconds=3, base_hz=400, bit_rate=160_000)),
        Spec("surround71_opus.mkv", frame_ms=cfr(24, 3), time_base=Fraction(1, 1000), codec_options=X264,
             background=(110, 50, 70), audio=aac(rate=48000, layout="7.1", seconds=3, base_hz=450,
                                                 codec="libopus", bit_rate=160_000)),
        Spec("surround71_pcm.mov", frame_ms=cfr(24, 2), codec_options=X264, background=(70, 110, 50),
             audio=aac(rate=8000, layout="7.1", seconds=2, base_hz=350, codec="pcm_s16le"),
             mov_layout_tag=MOV_CH_LAYOUT_MPEG_7_1_C),
        Spec("demo/lake.mp4", frame_ms=cfr(15, 12), codec_options=X264, background=(30, 90, 160),
             audio=aac(seconds=12, base_hz=350)),
        Spec("demo/desert.mp4", frame_ms=cfr(15, 7), codec_options=X264, background=(200, 160, 90),
             audio=aac(seconds=7, base_hz=450)),
        Spec("demo/forest.webm", codec="libvpx-vp9", frame_ms=cfr(12, 15), time_base=Fraction(1, 1000),
             codec_options={"deadline": "realtime", "cpu-used": "8", "crf": "40", "b": "0"},
             background=(40, 120, 50), audio=aac(rate=48000, seconds=15, base_hz=550, codec="libopus")),
    ]


def write_bad() -> dict[str, dict[str, Any]]:
    bad = OUT / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict[str, Any]] = {}
    # Truncated: moov (the index) in front, so the header declares 10 s that the file lacks.
    spec = Spec("bad/truncated.mp4", frame_ms=cfr(25, 10), codec_options=X264,
                container_options={"movflags": "faststart"}, audio=aac(seconds=10))
    write(spec)
    data = (OUT / spec.name).read_bytes()
    (OUT / spec.name).write_bytes(data[: len(data) * 55 // 100])
    truth[spec.name] = {"kind": "bad", "error": "truncated"}
    (bad / "empty.mp4").write_bytes(b"")
    truth["bad/empty.mp4"] = {"kind": "bad", "error": "empty"}
    (bad / "not_media.mp4").write_bytes(b"This is a text file, not a video.\n" * 40)
    truth["bad/not_media.mp4"] = {"kind": "bad", "error": "not media"}
    (bad / "random.mkv").write_bytes(np.random.default_rng(7).integers(0, 256, 20_000, np.uint8).tobytes())
    truth["bad/random.mkv"] = {"kind": "bad", "error": "not media"}
    # Audio only: a valid file without a video stream.
    with av.open(str(bad / "audio_only.mp4"), "w", options={"fflags": "+bitexact"}) as c:
        s = c.add_stream("aac", rate=44100, layout="mono")
        mono = tone(2, 44100, 300, 100)
        for k in range(0, len(mono), 1024):
            f = av.AudioFrame.from_ndarray(mono[None, k:k + 1024], format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = 44100, k, Fraction(1, 44100)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    truth["bad/audio_only.mp4"] = {"kind": "bad", "error": "no video stream"}
    for damage in damaged():
        truth[damage.name] = write_damaged(damage)
    return truth


def messy_specs() -> list[Spec]:
    """Files that players handle and a careless decoder does not (issue 21)."""
    return [
        # 24 fps: every target of window 0 and many of window 1 fall exactly on a frame's start.
        Spec("ties24.mp4", frame_ms=cfr(24, 20), codec_options=X264, width=128, height=72,
             background=(80, 110, 90)),
        # Mirrors in the display matrix: FFmpeg's one rotation number reads a horizontal flip
        # as 180 degrees and a vertical flip as 0; a front camera stores a turn and a flip.
        Spec("hflip.mp4", frame_ms=cfr(25, 2), codec_options=X264, width=160, height=90,
             background=(120, 70, 70), orient=(0, True)),
        Spec("vflip.mp4", frame_ms=cfr(25, 2), codec_options=X264, width=160, height=90,
             background=(70, 120, 70), orient=(180, True)),
        Spec("front_camera.mp4", frame_ms=cfr(25, 2), codec_options=X264, width=160, height=90,
             background=(70, 70, 120), orient=(-90, True), audio=aac(seconds=2, base_hz=650)),
        # MPEG-TS whose 33-bit PTS wraps 8.4 s in: FFmpeg unwraps it to start at -8.4 s, so a
        # seek to timestamp 0 ("the top") lands 8.4 s in.
        Spec("wrap_pts.ts", frame_ms=cfr(12, 12), codec_options={"g": "12", **X264}, width=128, height=72,
             background=(90, 130, 130), container_options={"output_ts_offset": "95435.3"},
             audio=aac(rate=22050, layout="mono", seconds=12, base_hz=700, bit_rate=24_000)),
        # Fragmented mp4 with B-frames, as ffmpeg's +frag_keyframe+empty_moov writes it: the
        # video starts at 80 ms (two frames of B-frame delay) and the audio's priming frame at 0,
        # so A/V sync is a 78.7 ms jump in the audio timestamps before the sound's first sample.
        # WebM whose Cues point 4 bytes into each cluster: a seek to any cue lands mid-cluster
        # (VP9 refuses the packets there) or on the next cluster, a second late.
        Spec("bad_cues.webm", codec="libvpx-vp9", frame_ms=cfr(24, 4), time_base=Fraction(1, 1000),
             width=128, height=72, background=(150, 110, 150),
             codec_options={"deadline": "realtime", "cpu-used": "8", "crf": "40", "b": "0", "g": "24"},
             container_options={"cluster_time_limit": "1000"}, cue_shift=4),
        Spec("frag_bframes.mp4", frame_ms=cfr(25, 4), codec_options={"bf": "2", "g": "25", **X264},
             width=128, height=72, background=(60, 100, 130),
             container_options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
             audio={**aac(rate=48000, layout="mono", seconds=4, base_hz=500, bit_rate=32_000),
                    "priming_gap": True}),
    ]


@dataclass
class Cut:
    """A stream copy of ``source`` from ``cut_s`` on, as ``ffmpeg -ss CUT -i src -c copy`` makes
    it: the video from the keyframe before the cut (its head hidden by an mp4 edit list), the
    audio from the first packet at or after it, both shifted so that the cut is time 0."""

    name: str
    source: Spec
    cut_s: Fraction


def write_cut(cut: Cut) -> dict[str, Any]:
    src_spec = cut.source
    src_spec.name = "_cut_source.mp4"
    write(src_spec)
    src_path, path = OUT / src_spec.name, OUT / cut.name
    with av.open(str(src_path)) as src, av.open(str(path), "w", options={"fflags": "+bitexact"}) as dst:
        vin = src.streams.video[0]
        outs = {s.index: dst.add_stream_from_template(s) for s in (vin, *src.streams.audio[:1])}
        key = max(p.pts for p in src.demux(vin)
                  if p.pts is not None and p.is_keyframe and p.pts * vin.time_base <= cut.cut_s)
        src.seek(0)
        for packet in src.demux(*[src.streams[i] for i in outs]):
            if packet.pts is None or packet.size == 0:
                continue
            stream = packet.stream
            if packet.pts < (key if stream is vin else cut.cut_s / stream.time_base):
                continue
            shift = round(cut.cut_s / stream.time_base)
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = outs[stream.index]
            dst.mux(packet)
    src_path.unlink()
    # Ground truth from what FFmpeg shows (the edit list applied), indices from the source plan.
    cut_ms = float(cut.cut_s * 1000)
    with av.open(str(path)) as c:
        shown = [float(f.pts * f.time_base * 1000) for f in c.decode(video=0)]
    origin = shown[0]
    planned = np.array(src_spec.frame_ms)
    frames = [[int(np.abs(planned - (ms + cut_ms)).argmin()), ms - origin] for ms in shown]
    step = src_spec.frame_ms[1] - src_spec.frame_ms[0]
    duration_ms = frames[-1][1] + step
    a = src_spec.audio
    audio = None if a is None else {
        "start_ms": -cut_ms - origin, "end_ms": a["seconds"] * 1000 - cut_ms - origin,
        "base_hz": a["base_hz"], "step_hz": a["step_hz"], "rate": a["rate"],
        "channels": av.AudioLayout(a["layout"]).nb_channels, "codec": a["codec"]}
    n_windows = math.ceil(round(duration_ms) / 10_000)
    return {
        "kind": "good", "codec": src_spec.codec, "pix_fmt": src_spec.pix_fmt,
        "coded_size": [src_spec.width, src_spec.height], "display_size": [src_spec.width, src_spec.height],
        "rotation": 0, "origin_ms": origin, "duration_ms": duration_ms,
        "windows": [[i * 10_000, min((i + 1) * 10_000, round(duration_ms))] for i in range(n_windows)],
        "frames": frames, "audio": audio,
    }


@dataclass
class Drop:
    """``source`` with audio packets ``first .. first + count - 1`` left out, as a live recording
    that lost them: the packets after keep their timestamps, so the sound has a hole there."""

    name: str
    source: Spec
    first: int
    count: int


def write_drop(drop: Drop) -> dict[str, Any]:
    src_spec = drop.source
    src_spec.name = "_drop_source" + Path(drop.name).suffix
    write(src_spec)
    src_path, path = OUT / src_spec.name, OUT / drop.name
    hole: list[float] = []
    with av.open(str(src_path)) as src, av.open(str(path), "w", options={"fflags": "+bitexact"}) as dst:
        kept = (src.streams.video[0], src.streams.audio[0])
        outs = {s.index: dst.add_stream_from_template(s) for s in kept}
        audio_index = src.streams.audio[0].index
        k = 0
        for packet in src.demux(*[src.streams[i] for i in outs]):
            if packet.pts is None or packet.size == 0:
                continue
            if packet.stream_index == audio_index:
                k += 1
                if drop.first <= k - 1 < drop.first + drop.count:
                    start = float(packet.pts * packet.time_base * 1000)
                    end = start + float(packet.duration * packet.time_base * 1000)
                    hole = [hole[0] if hole else start, end]
                    continue
            packet.stream = outs[packet.stream_index]
            dst.mux(packet)
    src_path.unlink()
    truth = truth_for(src_spec, path)
    assert truth["audio"] is not None
    truth["audio"]["hole_ms"] = [t - truth["origin_ms"] for t in hole]
    return truth


def write_two_video(name: str, main: Spec, decoy: Spec) -> dict[str, Any]:
    """``main`` and ``decoy`` muxed into one file, the decoy's video first but not default
    (mp4: not enabled), ``main``'s video second and default, then ``main``'s audio."""
    main.name, decoy.name = "_main.mp4", "_decoy.mp4"
    truth = write(main)
    write(decoy)
    path = OUT / name
    with av.open(str(OUT / main.name)) as m, av.open(str(OUT / decoy.name)) as d, \
            av.open(str(path), "w", options={"fflags": "+bitexact"}) as dst:
        inputs = [d.streams.video[0], m.streams.video[0], *m.streams.audio[:1]]
        outs = [dst.add_stream_from_template(s) for s in inputs]
        outs[0].disposition = av.stream.Disposition(0)
        outs[1].disposition = av.stream.Disposition.default
        out_of = {(id(s.container), s.index): k for k, s in enumerate(inputs)}
        packets = [(p.dts * p.time_base, out_of[id(c), p.stream_index], p) for c in (d, m)
                   for p in c.demux(*[s for s in inputs if s.container is c])
                   if p.dts is not None and p.size]
        for _, k, packet in sorted(packets, key=lambda x: (x[0], x[1])):
            packet.stream = outs[k]
            dst.mux(packet)
    (OUT / main.name).unlink()
    (OUT / decoy.name).unlink()
    with av.open(str(path)) as c:
        assert [bool(s.disposition & av.stream.Disposition.default) for s in c.streams.video] == [False, True]
    truth["video_index"] = 1
    return truth


@dataclass
class Damage:
    """``source`` with ``size`` bytes of its media data overwritten (seeded noise), starting 64
    bytes into the video packet shown at ``at_s``: what a bad sector or a broken copy leaves."""

    name: str
    source: Spec
    at_s: float
    size: int = 4096


def write_damaged(damage: Damage) -> dict[str, Any]:
    src_spec = damage.source
    src_spec.name = damage.name
    write(src_spec)
    path = OUT / damage.name
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        pos = next(p.pos for p in c.demux(v)
                   if p.pts is not None and abs(float(p.pts * p.time_base) - damage.at_s) < 0.001)
    data = bytearray(path.read_bytes())
    assert pos + 64 + damage.size < data.index(b"moov"), "the damage must stay in the media data"
    data[pos + 64: pos + 64 + damage.size] = np.random.default_rng(21).integers(
        0, 256, damage.size, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return {"kind": "bad", "error": "undecodable video: damaged from"}


def damaged() -> list[Damage]:
    return [
        # 4 KiB of noise 4.4 s into a 6 s clip (keyframes every second or so): FFmpeg decodes
        # all but the 4.36-5.84 s stretch.
        Damage("bad/damaged.mp4", Spec("", frame_ms=cfr(25, 6), width=160, height=90,
                                       codec_options={"g": "25", **X264},
                                       audio=aac(layout="mono", seconds=6, base_hz=500, bit_rate=32_000)),
               at_s=4.4),
    ]


def _boxes(data: bytearray, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """The ISO BMFF boxes in ``data[start:end]``: (type, offset, size)."""
    out = []
    while start < end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        out.append((kind, start, size))
        start += size
    return out


def set_edits(path: Path, edits: list[tuple[int, int]]) -> None:
    """Replace the one track's edit list by ``edits``, (duration in movie ticks, media time in
    media ticks) each, as phone and QuickTime trims write them; the moov must follow the media
    data (no chunk offset moves) and hold one track with an ``edts``."""
    data = bytearray(path.read_bytes())
    ((_, moov, moov_size),) = [b for b in _boxes(data, 0, len(data)) if b[0] == b"moov"]
    ((_, trak, trak_size),) = [b for b in _boxes(data, moov + 8, moov + moov_size) if b[0] == b"trak"]
    ((_, edts, edts_size),) = [b for b in _boxes(data, trak + 8, trak + trak_size) if b[0] == b"edts"]
    assert moov > data.index(b"mdat"), path
    elst = struct.pack(">I4sII", 16 + 12 * len(edits), b"elst", 0, len(edits)) + b"".join(
        struct.pack(">IiI", duration, media, 0x10000) for duration, media in edits)
    new = struct.pack(">I4s", 8 + len(elst), b"edts") + elst
    grow = len(new) - edts_size
    data[edts:edts + edts_size] = new
    struct.pack_into(">I", data, trak, trak_size + grow)
    struct.pack_into(">I", data, moov, moov_size + grow)
    total = sum(duration for duration, _ in edits)
    for kind, at, size in _boxes(data, moov + 8, moov + moov_size + grow):
        if kind == b"mvhd":
            struct.pack_into(">I", data, at + 24, total)  # version 0: after the timescale
        for inner, tk, _ in _boxes(data, at + 8, at + size) if kind == b"trak" else []:
            if inner == b"tkhd":
                struct.pack_into(">I", data, tk + 28, total)  # version 0: after the track id
    path.write_bytes(bytes(data))


def write_edited(name: str, spec: Spec, edits: list[tuple[int, int]]) -> dict[str, Any]:
    """``spec`` (video only, moov at the end, mvhd 1/1000 s) with the edit list ``edits``; the
    ground truth is what FFmpeg shows, each frame's index found through the edits."""
    spec.name = name
    write(spec)
    path = OUT / name
    set_edits(path, edits)
    with av.open(str(path)) as c:
        shown = [float(f.pts * f.time_base * 1000) for f in c.decode(video=0)]
    planned = np.array(spec.frame_ms)
    frames = []
    for ms in shown:
        start = 0.0
        for duration, media in edits:
            if ms < start + duration or (duration, media) == edits[-1]:
                source_ms = float(media * spec.time_base * 1000) + ms - start
                break
            start += duration
        frames.append([int(np.abs(planned - source_ms).argmin()), ms - shown[0]])
    duration_ms = float(sum(duration for duration, _ in edits))
    return {
        "kind": "good", "codec": spec.codec, "pix_fmt": spec.pix_fmt,
        "coded_size": [spec.width, spec.height], "display_size": [spec.width, spec.height],
        "rotation": 0, "origin_ms": shown[0], "duration_ms": duration_ms,
        "windows": [[0, round(duration_ms)]], "frames": frames, "audio": None,
    }


def edited() -> dict[str, tuple[Spec, list[tuple[int, int]]]]:
    return {
        # Two segments: source 0-2 s, then 3.4-6 s (a trim of 3.4 - 2 = 1.4 s out of the middle,
        # starting between keyframes): 4.6 s shown of 6 s stored.
        "two_edits.mp4": (Spec("", frame_ms=cfr(25, 6), width=128, height=72, background=(60, 60, 90),
                               codec_options={"g": "25", "bf": "0", **X264}),
                          [(2000, 0), (2600, 52224)]),
    }


def cuts() -> list[Cut]:
    return [
        # Cut at 2.52 s, 0.52 s after a keyframe: 13 frames kept before the edit, hidden by it.
        Cut("editlist_cut.mp4", Spec("", frame_ms=cfr(25, 6), width=160, height=90,
                                     codec_options={"g": "25", "bf": "2", **X264},
                                     background=(100, 90, 60), audio=aac(seconds=6, base_hz=500)),
            Fraction(252, 100)),
    ]


def drops() -> list[Drop]:
    return [
        # Three AAC frames (69.7 ms) lost 2.5 s in; the tone steps at 3.0 s, on its own clock.
        Drop("audio_drop.mp4", Spec("", frame_ms=cfr(10, 4), width=128, height=72, codec_options=X264,
                                    background=(130, 100, 60),
                                    audio=aac(layout="mono", seconds=4, base_hz=500, bit_rate=32_000)),
             first=108, count=3),
    ]


def two_video() -> dict[str, tuple[Spec, Spec]]:
    """Files with a second video track: (the default track, the other one, muxed first)."""
    return {
        # A 64x36 preview track first, at another rate (frame indices from 1000 on would not
        # fit: it shows its own 0.. at 5 fps), then the default 128x72 track at 10 fps.
        "two_video.mp4": (
            Spec("", frame_ms=cfr(10, 3), width=128, height=72, codec_options=X264,
                 background=(100, 60, 100), audio=aac(layout="mono", seconds=3, base_hz=550,
                                                      bit_rate=32_000)),
            Spec("", frame_ms=cfr(5, 3), width=64, height=36, codec_options=X264,
                 background=(200, 200, 60)),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="write only this fixture (repeatable) and merge its ground truth")
    args = parser.parse_args()
    if args.only:
        write_only(args.only)
        return
    for sub in ("demo", "bad"):
        shutil.rmtree(OUT / sub, ignore_errors=True)
    for old in OUT.glob("*.*"):
        if old.name not in ("README.md",):
            old.unlink()
    truth: dict[str, Any] = {}
    for spec in specs():
        truth[spec.name] = write(spec)
        print(f"wrote {spec.name}: {(OUT / spec.name).stat().st_size} bytes")
    for spec in messy_specs():
        truth[spec.name] = write(spec)
        print(f"wrote {spec.name}: {(OUT / spec.name).stat().st_size} bytes")
    for cut in cuts():
        truth[cut.name] = write_cut(cut)
        print(f"wrote {cut.name}: {(OUT / cut.name).stat().st_size} bytes")
    for drop in drops():
        truth[drop.name] = write_drop(drop)
        print(f"wrote {drop.name}: {(OUT / drop.name).stat().st_size} bytes")
    for name, (spec, edits) in edited().items():
        truth[name] = write_edited(name, spec, edits)
        print(f"wrote {name}: {(OUT / name).stat().st_size} bytes")
    for name, (main, decoy) in two_video().items():
        truth[name] = write_two_video(name, main, decoy)
        print(f"wrote {name}: {(OUT / name).stat().st_size} bytes")
    truth.update(write_bad())
    corners = {f"{r},{c}": rgb for (r, c), rgb in CORNERS.items()}
    doc = {"grid": {"cells": GRID, "bits": BITS, "corners": corners}, "files": truth}
    (OUT / "ground_truth.json").write_text(json.dumps(doc, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"fixtures: {len(truth)} files, {total} bytes")


def write_only(names: list[str]) -> None:
    """Write the named good fixtures and merge their ground truth into the existing file."""
    by_name: dict[str, Spec | Cut | Drop | Damage | tuple[Spec, Spec]] = {
        spec.name: spec for spec in [*specs(), *messy_specs(), *cuts(), *drops(), *damaged()]}
    by_name.update(two_video())
    edits = edited()
    unknown = sorted(set(names) - set(by_name) - set(edits))
    if unknown:
        raise SystemExit(f"unknown fixture(s): {', '.join(unknown)}; known: {', '.join(sorted(by_name))}")
    path = OUT / "ground_truth.json"
    doc = json.loads(path.read_text())
    for name in names:
        if name in edits:
            doc["files"][name] = write_edited(name, *edits[name])
            print(f"wrote {name}: {(OUT / name).stat().st_size} bytes")
            continue
        made = by_name[name]
        doc["files"][name] = (write_cut(made) if isinstance(made, Cut)
                              else write_drop(made) if isinstance(made, Drop)
                              else write_two_video(name, *made) if isinstance(made, tuple)
                              else write_damaged(made) if isinstance(made, Damage)
                              else write(made))
        print(f"wrote {name}: {(OUT / name).stat().st_size} bytes")
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
