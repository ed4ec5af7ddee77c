"""Contact sheets: what one window's tensors hold, drawn so a person can check it by eye.

A sheet shows the 12 frames of a :class:`~seeknetic_prep.decode.profile.Segment` pixel for pixel (each
224 x 224 tile *is* the uploaded ``video[0, i]``, never rescaled), each labelled with the
presentation time of the frame used; the window's 220500 audio samples as a waveform with the
frame times marked on it and the zero padding after the window's end shaded; and a header with
the file, the window's bounds and how the picture was made upright and square (rotation, sample
aspect ratio, resize mode and crop). The tensors come from the library's own
:func:`~seeknetic_prep.decode.preprocess.iter_segments`, so the sheet shows exactly what ``run`` uploads.

Drawn with Pillow (the lightest well-kept imaging library; matplotlib would add ~40 MB).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from seeknetic_prep.decode.profile import (
    AUDIO_SAMPLES,
    FRAME_SIZE,
    FRAMES_PER_WINDOW,
    SAMPLE_RATE,
    WINDOW_MS,
    ResizeMode,
    Segment,
)
from seeknetic_prep.decode.transform import check_resize, scaled_size
from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.sources.urls import is_url, scheme
from seeknetic_prep.state.rows import display_path

if TYPE_CHECKING:
    from seeknetic_prep.decode.media import MediaInfo

__all__ = [
    "COLUMNS",
    "contact_sheet",
    "describe_geometry",
    "sheet_size",
    "spectrogram_box",
    "spectrogram_rows_hz",
    "tile_origin",
    "write_sheets",
]

COLUMNS = 4
"""Tiles per row: 4 x 3 keeps a sheet about as wide as a laptop screen (952 px)."""
_MARGIN = 16
_GAP = 8
_LABEL = 22
_HEADER = 78
_WAVE = 200
"""The audio strip: a title line, the waveform, the spectrogram, the time axis."""
_PLOT = 74
_BG = (24, 24, 27)
_FG = (230, 230, 230)
_DIM = (150, 150, 155)
_ACCENT = (250, 180, 60)
_WAVE_FG = (110, 190, 255)
_PAD_BG = (48, 40, 40)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` px (no font file on the system is needed)."""
    return ImageFont.load_default(size=size)


def tile_origin(i: int) -> tuple[int, int]:
    """Top-left ``(x, y)`` of frame ``i``'s 224 x 224 tile on a sheet (row-major, :data:`COLUMNS` wide)."""
    if not 0 <= i < FRAMES_PER_WINDOW:
        raise InvalidArgumentError(f"Invalid frame {i}: must be in [0, {FRAMES_PER_WINDOW}).")
    row, col = divmod(i, COLUMNS)
    return _MARGIN + col * (FRAME_SIZE + _GAP), _HEADER + row * (FRAME_SIZE + _LABEL + _GAP)


def sheet_size() -> tuple[int, int]:
    """``(width, height)`` of every sheet: the layout does not depend on the content."""
    rows = -(-FRAMES_PER_WINDOW // COLUMNS)
    width = 2 * _MARGIN + COLUMNS * FRAME_SIZE + (COLUMNS - 1) * _GAP
    height = _HEADER + rows * (FRAME_SIZE + _LABEL + _GAP) + _WAVE + 2 * _MARGIN
    return width, height


def spectrogram_box() -> tuple[int, int, int, int]:
    """``(x, y, width, height)`` of the spectrogram on a sheet; its rows are at the frequencies
    :func:`spectrogram_rows_hz` gives (top row: highest), its columns span the 10 s evenly."""
    width, height = sheet_size()
    top = height - _MARGIN - _WAVE
    return _MARGIN, top + 16 + _PLOT + 4, width - 2 * _MARGIN, _PLOT


def spectrogram_rows_hz(height: int = _PLOT) -> np.ndarray:
    """The frequency each spectrogram row shows: log-spaced, Nyquist at the top, 50 Hz at the bottom."""
    return np.geomspace(SAMPLE_RATE / 2, _SPEC_LOW_HZ, height)


def describe_geometry(info: MediaInfo, resize: ResizeMode) -> str:
    """How a stored picture becomes the 224 x 224 tile, in one line, e.g. for a phone clip:
    ``stored 320x180, rotation -90, SAR 1:1 -> upright 180x320 -> crop: scaled to 224x398,
    rows 87-310 kept``. The sample aspect ratio is derived from the stored and display sizes.
    """
    rot = info.rotation % 180 != 0
    shown_w, shown_h = (info.height, info.width) if rot else (info.width, info.height)
    sar = Fraction(shown_w * info.coded_height, shown_h * info.coded_width).limit_denominator(100)
    sw, sh = scaled_size(info.width, info.height, resize)
    if resize == "crop":
        if sw > FRAME_SIZE:
            kept = f"columns {(sw - FRAME_SIZE) // 2}-{(sw - FRAME_SIZE) // 2 + FRAME_SIZE - 1} kept"
        elif sh > FRAME_SIZE:
            kept = f"rows {(sh - FRAME_SIZE) // 2}-{(sh - FRAME_SIZE) // 2 + FRAME_SIZE - 1} kept"
        else:
            kept = "nothing cropped"
        how = f"crop: scaled to {sw}x{sh}, {kept}"
    elif resize == "pad":
        how = f"pad: scaled to {sw}x{sh}, black bars to {FRAME_SIZE}x{FRAME_SIZE}"
    else:
        how = f"squash: scaled to {FRAME_SIZE}x{FRAME_SIZE} (aspect not kept)"
    return (
        f"stored {info.coded_width}x{info.coded_height}, rotation {info.rotation}, "
        f"SAR {sar.numerator}:{sar.denominator} -> upright {info.width}x{info.height} -> {how}"
    )


def contact_sheet(info: MediaInfo, segment: Segment, *, resize: ResizeMode = "crop") -> Image.Image:
    """Draw one window's sheet (see the module doc); tiles are placed at :func:`tile_origin`."""
    width, height = sheet_size()
    img = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(img)
    big, small = _font(17), _font(13)
    span = segment.end_ms - segment.start_ms
    draw.text((_MARGIN, 10), f"{info.path}", fill=_FG, font=big)
    draw.text(
        (_MARGIN, 34),
        f"window {segment.index}: [{segment.start_ms}, {segment.end_ms}) ms ({span / 1000:.2f} s of "
        f"{info.duration_ms / 1000:.2f} s)   {info.video_codec} {info.pix_fmt} {info.fps:.3g} fps   "
        + (f"audio {info.audio_codec} {info.audio_rate} Hz x{info.audio_channels}" if info.has_audio
           else "no audio stream"),
        fill=_DIM, font=small,
    )
    draw.text((_MARGIN, 53), describe_geometry(info, resize), fill=_DIM, font=small)
    for i in range(FRAMES_PER_WINDOW):
        x, y = tile_origin(i)
        img.paste(Image.fromarray(np.ascontiguousarray(segment.video[0, i].transpose(1, 2, 0))), (x, y))
        label = f"#{i}  {segment.frame_times_ms[i]:.1f} ms"
        draw.text((x + 2, y + FRAME_SIZE + 4), label, fill=_FG, font=small)
        if segment.target_times_ms:
            target = f"target {segment.target_times_ms[i]:.0f}"
            tw = draw.textlength(target, font=small)
            draw.text((x + FRAME_SIZE - tw - 2, y + FRAME_SIZE + 4), target, fill=_DIM, font=small)
    _audio(img, segment, top=height - _MARGIN - _WAVE, left=_MARGIN, width=width - 2 * _MARGIN)
    return img


def _audio(img: Image.Image, segment: Segment, *, top: int, left: int, width: int) -> None:
    """Min/max envelope per pixel column of the 10 s of samples, the spectrogram under it,
    padding shaded, frame times ticked."""
    draw = ImageDraw.Draw(img)
    small = _font(12)
    plot_top, plot_h = top + 16, _PLOT
    spec_top = plot_top + plot_h + 4  # as spectrogram_box() says
    axis = spec_top + _PLOT
    mid = plot_top + plot_h // 2
    samples = segment.audio.reshape(-1)
    spec = Image.fromarray(_spectrogram(samples, width, _PLOT))
    img.paste(spec, (left, spec_top))
    span_px = round(width * (segment.end_ms - segment.start_ms) / WINDOW_MS)
    if span_px < width:
        draw.rectangle((left + span_px, plot_top, left + width - 1, axis), fill=_PAD_BG)
        draw.text((left + span_px + 4, plot_top + 2), "zero padding (after the window's end)",
                  fill=_DIM, font=small)
    cols = np.array_split(samples, width)
    lo = np.array([c.min() for c in cols])
    hi = np.array([c.max() for c in cols])
    draw.line((left, mid, left + width - 1, mid), fill=_DIM)
    for x in range(min(span_px, width)):
        y0, y1 = mid - round(hi[x] * plot_h / 2), mid - round(lo[x] * plot_h / 2)
        draw.line((left + x, y0, left + x, max(y0, y1)), fill=_WAVE_FG)
    for t in segment.frame_times_ms:
        x = left + round((t - segment.start_ms) / WINDOW_MS * width)
        if left <= x < left + width:
            draw.line((x, plot_top, x, plot_top + 9), fill=_ACCENT, width=2)
    draw.text((left + 3, spec_top + 1), f"{SAMPLE_RATE // 2000} kHz", fill=_FG, font=small)
    draw.text((left + 3, axis - 15), f"{_SPEC_LOW_HZ} Hz", fill=_FG, font=small)
    seconds = WINDOW_MS // 1000
    for s in range(seconds + 1):
        x = min(left + round(s * 1000 / WINDOW_MS * width), left + width - 1)
        draw.line((x, axis, x, axis + 4), fill=_DIM)
        text = f"{segment.start_ms / 1000 + s:g} s"
        tx = x + 2 if s < seconds else x - 2 - draw.textlength(text, font=small)
        draw.text((tx, axis + 3), text, fill=_DIM, font=small)
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    title = (f"audio: {AUDIO_SAMPLES} samples, mono {SAMPLE_RATE} Hz, peak {peak:.3f}, rms {rms:.3f}"
             + ("" if segment.has_audio else " (the file has no audio: zeros)")
             + "   orange ticks: the 12 frame times   below: spectrogram, log frequency")
    draw.text((left, top), title, fill=_DIM, font=small)


_SPEC_LOW_HZ = 50
_SPEC_FFT = 1024
_SPEC_DB = 80.0
_MAGMA = np.array([(0, 0, 4), (80, 18, 123), (182, 54, 121), (251, 136, 97), (252, 253, 191)], np.float64)


def _spectrogram(samples: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(height, width, 3)`` uint8: one Hann-windowed FFT per pixel column, rows on a log
    frequency scale from 50 Hz (bottom) to Nyquist (top), the top 80 dB on a magma-like ramp."""
    x = samples.astype(np.float64)
    half = _SPEC_FFT // 2
    padded = np.concatenate([np.zeros(half), x, np.zeros(half)])
    centres = ((np.arange(width) + 0.5) * x.size / width).astype(np.int64)
    frames = padded[centres[:, None] + np.arange(_SPEC_FFT)[None, :]] * np.hanning(_SPEC_FFT)
    mag = np.abs(np.fft.rfft(frames, axis=1))  # (width, 513)
    freqs = np.fft.rfftfreq(_SPEC_FFT, 1 / SAMPLE_RATE)
    rows = spectrogram_rows_hz(height)
    bins = np.clip(np.searchsorted(freqs, rows), 0, freqs.size - 1)
    db = 20 * np.log10(mag[:, bins].T + 1e-9)  # (height, width)
    top = max(float(db.max()), -60.0)  # silence stays dark instead of being stretched
    level = np.clip((db - (top - _SPEC_DB)) / _SPEC_DB, 0.0, 1.0) * (len(_MAGMA) - 1)
    lo = np.floor(level).astype(np.int64).clip(0, len(_MAGMA) - 2)
    frac = (level - lo)[..., None]
    rgb = _MAGMA[lo] * (1 - frac) + _MAGMA[lo + 1] * frac
    return np.ascontiguousarray(rgb.round().astype(np.uint8))


def write_sheets(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    window: int | None = None,
    resize: ResizeMode = "crop",
) -> list[Path]:
    """Write one PNG contact sheet per window of ``path`` (or only window ``window``).

    Args:
        path: the video: a local path or a URL (``s3://``, ``https://``, ...), read with range
            requests like ``run`` reads it; the sheet names a URL without its signing values.
        out: where to write. A folder (one that exists, or a name ending in ``/`` or without
            a suffix): ``<folder>/<stem>-w<K>.png``. A file name: used as is for a single
            window, with ``-w<K>`` before its suffix for several. None: the current folder.
        window: the index of one window (0-based, as in the results' ``window_index``), or None for all.
        resize: as for :func:`~seeknetic_prep.decode.preprocess.preprocess`.

    Returns:
        The files written, in window order.

    Raises:
        MediaError: the video is unusable.
        InvalidArgumentError: ``window`` is not one of the file's windows, or ``out`` cannot
            be written.
    """
    # PyAV: sheet's drawing helpers are used without it
    from seeknetic_prep.decode.media import probe
    from seeknetic_prep.decode.preprocess import iter_segments
    from seeknetic_prep.decode.sampling import plan_windows
    from seeknetic_prep.sources import open_source

    mode = check_resize(resize)
    text = os.fspath(path)
    named = _named(text)
    source = open_source(text)  # a path as it is; a URL as a file over range requests
    try:
        info = probe(source)
        windows = plan_windows(info.duration_ms)
        if window is not None:
            if not 0 <= window < len(windows):
                raise InvalidArgumentError(
                    f"Invalid --window {window}: {named.name} has {len(windows)} window"
                    f"{'s' * (len(windows) != 1)} (0-{len(windows) - 1}, {WINDOW_MS // 1000} s each)."
                )
            windows = [windows[window]]
        targets = _targets(named, out, [w.index for w in windows])
        if not isinstance(source, str):
            source.seek(0)
        segments = iter_segments(cast(Any, source), windows, resize=mode, info=info)
        for segment, target in zip(segments, targets, strict=True):
            _save(contact_sheet(info, segment, resize=mode), target, out)
        return targets
    finally:
        if not isinstance(source, str):
            source.close()


def _named(text: str) -> Path:
    """What names the sheets: a path's file, or a URL's object: the key of ``s3://b/clip#1.mp4``
    (a bucket key may hold ``#`` and ``?``), the path of an ``https`` URL without its query
    (``video`` when it has none)."""
    if not is_url(text):
        return Path(text)
    key = urlsplit(text).path if scheme(text) in ("http", "https") else text.split("://", 1)[1]
    name = key.rstrip("/").rpartition("/")[2]
    return Path(name if name else "video")


def _save(sheet: Image.Image, target: Path, out: str | os.PathLike[str] | None) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(target, format="PNG", optimize=False)
    except OSError as exc:
        shown = display_path(os.fspath(out) if out is not None else ".")
        raise InvalidArgumentError(
            f"Invalid --out {shown!r}: cannot write {display_path(str(target))} ({_why(exc)})."
        ) from exc


def _targets(path: Path, out: str | os.PathLike[str] | None, indices: list[int]) -> list[Path]:
    """A folder is one that exists, or a name ending in a slash or without a suffix."""
    raw = "." if out is None else os.fspath(out)
    dest = Path(raw)
    if dest.is_dir() or raw.endswith(("/", os.sep)) or not dest.suffix:
        return [dest / _fit(path.stem, f"-w{k}.png") for k in indices]
    if len(indices) == 1:
        return [dest]
    return [dest.with_name(_fit(dest.stem, f"-w{k}{dest.suffix}")) for k in indices]


_NAME_MAX = 255  # bytes in one file name on every common filesystem


def _fit(stem: str, tail: str) -> str:
    """``stem + tail``, the stem cut so the whole fits in one file name (a 255-byte video name
    has room for no ``-w0.png``): at a character for a UTF-8 name, else at a byte."""
    raw = os.fsencode(stem)[: _NAME_MAX - len(os.fsencode(tail))]
    try:
        stem.encode("utf-8")
        cut = raw.decode("utf-8", "ignore")  # drops only a character the cut split
    except UnicodeEncodeError:  # not UTF-8 on disk: surrogate-escaped bytes, kept as bytes
        cut = os.fsdecode(raw)
    return cut + tail


def _why(exc: OSError) -> str:
    """``<path>: <reason>`` when the OS names the path that failed (a parent that is a file)."""
    return f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
