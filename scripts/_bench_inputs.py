"""Benchmark inputs: clips made with PyAV from a recipe, cached under ``.bench-cache/`` by its hash.

Flat or synthetic-gradient frames decode several times faster than camera footage (almost no
residual, every block skipped), which would flatter every decoder in the table. Each clip here
is a multi-octave noise texture that pans and drifts, plus per-frame grain, so the encoder has
real motion vectors and residual to write and the decoder real work to undo. Frames are built
directly in the encoder's YUV layout, so no colour conversion is spent on generation.

A file is named ``<name>-<hash>.<ext>``; the hash covers the recipe and ``GENERATOR_VERSION``,
so changing either makes a new file instead of silently reusing a stale one. Files are written
to a temporary name and renamed, so an interrupted generation never leaves a half file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1
CACHE_NAME = ".bench-cache"

__all__ = [
    "CACHE_NAME", "E2E_QUICK", "E2E_SET", "GENERATOR_VERSION", "RECIPES", "Recipe", "ensure", "ensure_folder",
]


@dataclass(frozen=True)
class Recipe:
    """How to make one clip. Every field goes into the cache key."""

    name: str
    ext: str  # container: mp4, webm, mkv
    codec: str  # PyAV encoder name: libx264, libx265, libvpx-vp9
    width: int
    height: int
    fps: int
    seconds: float
    pix_fmt: str = "yuv420p"
    gop: int = 250
    bframes: int = 3
    options: tuple[tuple[str, str], ...] = ()
    audio_codec: str | None = "aac"
    audio_rate: int = 48_000
    audio_layout: str = "stereo"
    seed: int = 0
    grain: int = 6  # amplitude of the per-frame noise, in 8-bit code values

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)

    def key(self) -> str:
        blob = json.dumps({"v": GENERATOR_VERSION, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def path(self, cache: Path) -> Path:
        return cache / f"{self.name}-{self.key()}.{self.ext}"


def _x264(gop: int, bframes: int, preset: str = "veryfast") -> tuple[tuple[str, str], ...]:
    # scenecut=0 and min-keyint=keyint pin the GOP: the bench is about a known GOP structure.
    # crf 21 on this texture gives ~10 Mbit/s at 1080p30, about what a phone records.
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:log-level=error"
    return (("preset", preset), ("crf", "21"), ("x264-params", params))


def _x265(gop: int, bframes: int) -> tuple[tuple[str, str], ...]:
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:log-level=error"
    return (("preset", "ultrafast"), ("crf", "22"), ("x265-params", params))


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "h264-1080p30-60s", "mp4", "libx264", 1920, 1080, 30, 60.0,
            gop=250, bframes=3, options=_x264(250, 3), audio_rate=48_000, seed=1,
        ),
        Recipe(
            "h264-360p30-35s", "mp4", "libx264", 640, 360, 30, 35.0,
            gop=300, bframes=3, options=_x264(300, 3), audio_rate=44_100, seed=2,
        ),
        Recipe(
            "hevc10-2160p30-5s", "mp4", "libx265", 3840, 2160, 30, 5.0, pix_fmt="yuv420p10le",
            gop=60, bframes=3, options=_x265(60, 3), audio_rate=96_000, audio_layout="5.1", seed=3,
        ),
        Recipe(
            "vp9-720p30-10s", "webm", "libvpx-vp9", 1280, 720, 30, 10.0, gop=150, bframes=0,
            options=(("deadline", "realtime"), ("cpu-used", "8"), ("row-mt", "1"), ("crf", "34"),
                     ("b", "0")),
            audio_codec="libopus", audio_rate=48_000, seed=4,
        ),
        Recipe(
            "h264-480p25-20s", "mp4", "libx264", 854, 480, 25, 20.0,
            gop=50, bframes=2, options=_x264(50, 2), audio_rate=48_000, seed=5,
        ),
    )
}
"""Clips of section (a); the first is also the whole-file clip of (b), the third the 4K of (c)."""

E2E_QUICK = ("h264-360p30-35s", "h264-480p25-20s", "vp9-720p30-10s")
"""The folder of section (d) under ``--quick``: small clips of different codecs, rates, lengths."""
E2E_SET = (*E2E_QUICK, "h264-1080p30-60s")
"""The folder of section (d): 13 windows, enough that start-up and the last poll do not dominate."""


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Multi-octave value noise in [0, 255] as float32: blobs, edges and fine detail at once."""
    import cv2

    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for cells in (4, 12, 40, 120, 400):
        gh, gw = max(2, h * cells // max(h, w)), max(2, cells)
        grid = rng.random((gh, gw), dtype=np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.6
    out /= total
    lo, hi = np.percentile(out, (1, 99))
    scaled: np.ndarray = np.clip((out - lo) / max(hi - lo, 1e-6) * 235 + 10, 0, 255)
    return scaled


def _planes(recipe: Recipe) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield the frames' Y, U, V planes (uint8 or uint16 for 10-bit), panning over one texture."""
    rng = np.random.default_rng(recipe.seed)
    w, h, n = recipe.width, recipe.height, recipe.frames
    margin_x, margin_y = max(16, w // 4), max(16, h // 4)
    luma = _texture(rng, h + 2 * margin_y, w + 2 * margin_x)
    cw, ch = w // 2, h // 2
    cu = _texture(rng, ch + margin_y, cw + margin_x) * 0.35 + 83
    cv = _texture(rng, ch + margin_y, cw + margin_x) * 0.35 + 83
    grain = [
        rng.integers(-recipe.grain, recipe.grain + 1, (h, w), dtype=np.int16) for _ in range(7)
    ]
    ten_bit = recipe.pix_fmt.endswith("10le")
    for i in range(n):
        # A slow Lissajous pan: motion in both axes, changing speed, never a whole-pixel repeat.
        t = i / max(1, n - 1)
        x = int(margin_x * (1 + np.sin(2 * np.pi * t * 1.3)))
        y = int(margin_y * (1 + np.sin(2 * np.pi * t * 0.7 + 1.0)))
        y_plane = luma[y : y + h, x : x + w] + grain[i % len(grain)]
        u_plane = cu[y // 2 : y // 2 + ch, x // 2 : x // 2 + cw]
        v_plane = cv[y // 2 : y // 2 + ch, x // 2 : x // 2 + cw]
        if ten_bit:
            yield (
                (np.clip(y_plane, 0, 255) * 4).astype(np.uint16),
                (u_plane * 4).astype(np.uint16),
                (v_plane * 4).astype(np.uint16),
            )
        else:
            yield (
                np.clip(y_plane, 0, 255).astype(np.uint8),
                u_plane.astype(np.uint8),
                v_plane.astype(np.uint8),
            )


def _audio_chunks(recipe: Recipe, channels: int, chunk: int) -> Iterator[np.ndarray]:
    """Planar float32 chunks: a different tone per channel over low noise, for the whole clip."""
    rng = np.random.default_rng(recipe.seed + 1000)
    total = int(recipe.seconds * recipe.audio_rate)
    freqs = np.array([220.0 * (1.5**c) for c in range(channels)])[:, None]
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(start, start + n) / recipe.audio_rate)[None, :]
        tone = 0.3 * np.sin(2 * np.pi * freqs * t)
        yield (tone + 0.02 * rng.standard_normal((channels, n))).astype(np.float32)


def _encode(recipe: Recipe, out: Path) -> None:
    import av

    with av.open(str(out), "w") as container:
        vs = container.add_stream(recipe.codec, rate=recipe.fps)
        vs.width, vs.height, vs.pix_fmt = recipe.width, recipe.height, recipe.pix_fmt
        vs.time_base = Fraction(1, recipe.fps)
        vs.codec_context.gop_size = recipe.gop
        if recipe.bframes:
            vs.codec_context.max_b_frames = recipe.bframes
        vs.options = dict(recipe.options)
        aus = None
        if recipe.audio_codec:
            aus = container.add_stream(recipe.audio_codec, rate=recipe.audio_rate)
            aus.layout = recipe.audio_layout
        frames = _planes(recipe)
        channels = aus.codec_context.layout.nb_channels if aus is not None else 0
        fmt = recipe.pix_fmt
        for i, (y, u, v) in enumerate(frames):
            h, w = recipe.height, recipe.width
            packed = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(h * 3 // 2, w)
            frame = av.VideoFrame.from_ndarray(packed, format=fmt)
            frame.pts, frame.time_base = i, Fraction(1, recipe.fps)
            container.mux(vs.encode(frame))
        container.mux(vs.encode(None))
        if aus is not None:
            fmt_name = aus.codec_context.format.name if aus.codec_context.format else "fltp"
            chunk = aus.codec_context.frame_size or 1024
            resampler = av.AudioResampler(format=fmt_name, layout=recipe.audio_layout, rate=recipe.audio_rate)
            pts = 0
            for data in _audio_chunks(recipe, channels, chunk):
                af = av.AudioFrame.from_ndarray(data, format="fltp", layout=recipe.audio_layout)
                af.sample_rate, af.pts, af.time_base = recipe.audio_rate, pts, Fraction(1, recipe.audio_rate)
                pts += data.shape[1]
                for rf in resampler.resample(af):
                    container.mux(aus.encode(rf))
            for rf in resampler.resample(None):
                container.mux(aus.encode(rf))
            container.mux(aus.encode(None))


def ensure(recipe: Recipe, cache: Path, *, log: bool = True) -> Path:
    """The clip for ``recipe``, generated into ``cache`` unless a file with its hash exists."""
    path = recipe.path(cache)
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    if log:
        print(f"generating {path.name} ({recipe.width}x{recipe.height} {recipe.codec}, "
              f"{recipe.seconds:g} s) ...", file=__import__("sys").stderr, flush=True)
    try:
        _encode(recipe, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def ensure_folder(names: tuple[str, ...], cache: Path) -> Path:
    """A folder of hard links (plain files to any walker) to the named clips, made once per set."""
    paths = [ensure(RECIPES[n], cache) for n in names]
    key = hashlib.sha256("".join(p.name for p in paths).encode()).hexdigest()[:10]
    folder = cache / f"e2e-{key}"
    if not folder.exists():
        tmp = cache / f".e2e-{key}.{os.getpid()}.tmp"
        tmp.mkdir(parents=True)
        for p in paths:
            try:
                os.link(p, tmp / p.name)
            except OSError:  # cross-device or no hard links: a copy is as good, only bigger
                import shutil

                shutil.copyfile(p, tmp / p.name)
        os.replace(tmp, folder)
    return folder
