"""Results without a model: embeddings and tags computed from the uploaded content itself.

The emulator must give a pipeline something to check: the same tensors always give the same
vector, near-identical content near vectors, different content different ones, and tags that
follow what is on screen. So every result is a pure function of the pixels and samples:

* each frame is shrunk to a :data:`THUMB` x :data:`THUMB` RGB thumbnail (area average), the
  audio to a 64-number summary (loudness over time, spectrum shape);
* an embedding is a fixed, seeded random projection of those features to :data:`EMBEDDING_DIM`
  dimensions, plus a faint direction seeded by a hash of the raw bytes (so any change moves the
  vector a little), L2-normalised. A linear map of smooth features keeps small changes small;
* text is hashed word by word (and word pair) into the same space, so texts sharing words lie
  closer than texts that share none;
* tags are measured: luma for lighting, hue histogram for colour, phase correlation between
  frames for camera movement, detail (Laplacian energy) for shot size, the vertical luma
  gradient for the shooting angle.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import weakref
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import numpy as np

from seeknetic_prep.emulator.config import EMBEDDING_DIM

__all__ = [
    "MODEL_NAMES",
    "THUMB",
    "Content",
    "audio_features",
    "embed_content",
    "embed_text",
    "tag_content",
    "video_thumbs",
]

THUMB = 64
_GRID = 8
_AUDIO_BINS = 32
_VIDEO_FEATURES = 3 * _GRID * _GRID * 3 + 12 * 3
_AUDIO_FEATURES = 2 * _AUDIO_BINS
_FEATURES = _VIDEO_FEATURES + _AUDIO_FEATURES + 1
_PROJECTION_SEED = 0x5EE4E71C

MODEL_NAMES = {
    "embedding": f"seeknetic-emulator/embedding-{EMBEDDING_DIM} (emulated, no model)",
    "tagging": "seeknetic-emulator/tagging (emulated, no model)",
}


class Content:
    """What a job's inputs boil down to: frame thumbnails and an audio summary (either may be absent).

    Built window by window (``add_video``/``add_audio``) so a long ``video_base64`` job never
    holds more than thumbnails in memory.
    """

    def __init__(self, *, digest: bool = True) -> None:
        self._thumbs: list[np.ndarray] = []
        self._audio: list[np.ndarray] = []
        # Only embeddings use the digest; tags would hash 2.7 MB a window for nothing.
        self._digest = hashlib.sha256() if digest else None

    def add_video(self, video: np.ndarray) -> None:
        if self._digest is not None:
            self._digest.update(b"video")
            self._digest.update(np.ascontiguousarray(video).data)  # hashed in place, no copies
        self._thumbs.append(_thumbs_of(video))

    def add_audio(self, audio: np.ndarray) -> None:
        if self._digest is not None:
            self._digest.update(b"audio")
            self._digest.update(np.ascontiguousarray(audio).data)
        self._audio.append(audio_features(audio))

    @property
    def digest(self) -> bytes:
        """A hash of every byte seen: the part of identity that thumbnails round away.

        Raises:
            ValueError: the content was made with ``digest=False``.
        """
        if self._digest is None:
            raise ValueError("this Content keeps no digest (made with digest=False)")
        return self._digest.digest()

    @property
    def thumbs(self) -> np.ndarray | None:
        """``(T, THUMB, THUMB, 3)`` uint8 RGB, or None without video."""
        return np.concatenate(self._thumbs) if self._thumbs else None

    @property
    def audio(self) -> np.ndarray | None:
        """The mean audio summary over the windows seen, or None without audio."""
        return np.mean(self._audio, axis=0) if self._audio else None


_recent_thumbs: OrderedDict[int, tuple[weakref.ref[np.ndarray], np.ndarray]] = OrderedDict()


def _thumbs_of(video: np.ndarray) -> np.ndarray:
    """:func:`video_thumbs`, once per read-only array: a window's embedding and tagging jobs
    score the very same array (the upload stage decodes a repeated tensor once and hands out
    read-only arrays), and its thumbnails cost ~4 ms. Keyed by identity, checked through a weak
    reference, so a new array at a reused address is never mistaken for the old one."""
    if video.flags.writeable:
        return video_thumbs(video)
    hit = _recent_thumbs.get(id(video))
    if hit is not None and hit[0]() is video:
        return hit[1]
    thumbs = video_thumbs(video)
    thumbs.flags.writeable = False
    _recent_thumbs[id(video)] = (weakref.ref(video), thumbs)
    while len(_recent_thumbs) > 4:
        _recent_thumbs.popitem(last=False)
    return thumbs


def video_thumbs(video: np.ndarray) -> np.ndarray:
    """``(1, T, 3, H, W)`` or ``(T, 3, H, W)`` uint8 -> ``(T, THUMB, THUMB, 3)`` uint8 thumbnails."""
    # OpenCV: ~0.2 s that the emulator's start does not need (only jobs score)
    import cv2

    frames = video.reshape((-1, *video.shape[-3:]))
    out = np.empty((frames.shape[0], THUMB, THUMB, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        hwc = np.ascontiguousarray(frame.transpose(1, 2, 0))
        out[i] = cv2.resize(hwc, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    return out


def audio_features(audio: np.ndarray) -> np.ndarray:
    """Loudness over 32 time bins and the share of energy in 32 log-spaced bands, scaled by loudness."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return np.zeros(_AUDIO_FEATURES)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    rms = np.array(
        [np.sqrt(np.mean(part * part)) if part.size else 0.0 for part in np.array_split(x, _AUDIO_BINS)]
    )
    spectrum = np.abs(np.fft.rfft(x[: 1 << 19])) ** 2
    edges = np.unique(np.geomspace(1, max(spectrum.size, 2), _AUDIO_BINS + 1).astype(int))
    bands = np.add.reduceat(spectrum, edges[:-1])[:_AUDIO_BINS] if spectrum.size > 1 else np.zeros(1)
    bands = np.pad(bands, (0, _AUDIO_BINS - bands.size))
    total = float(bands.sum())
    loudness = float(np.sqrt(np.mean(x * x)))
    shape = np.sqrt(bands / total) if total > 0 else np.zeros(_AUDIO_BINS)
    return np.concatenate([rms, shape * min(1.0, 4 * loudness)])


def _video_features(thumbs: np.ndarray) -> np.ndarray:
    # OpenCV: see above
    import cv2

    small = (
        np.stack([cv2.resize(t, (_GRID, _GRID), interpolation=cv2.INTER_AREA) for t in thumbs]).astype(
            np.float64
        )
        / 255.0
    )
    mean = small.mean(axis=0) - 0.5
    std = small.std(axis=0)
    diff = np.abs(np.diff(small, axis=0)).mean(axis=0) if len(small) > 1 else np.zeros_like(mean)
    per_frame = small.mean(axis=(1, 2))  # (T, 3)
    idx = np.linspace(0, len(per_frame) - 1, 12)
    profile = np.stack([np.interp(idx, np.arange(len(per_frame)), per_frame[:, c]) for c in range(3)], axis=1)
    features: np.ndarray = np.concatenate([mean.ravel(), std.ravel(), diff.ravel(), (profile - 0.5).ravel()])
    return features


@lru_cache(maxsize=1)
def _projection() -> np.ndarray:
    rng = np.random.default_rng(_PROJECTION_SEED)
    matrix: np.ndarray = rng.standard_normal((_FEATURES, EMBEDDING_DIM)) / np.sqrt(_FEATURES)
    return matrix


def _normalise(vector: np.ndarray) -> list[float]:
    norm = float(np.linalg.norm(vector))
    unit = vector / norm if norm > 0 else np.full(vector.shape, 1 / np.sqrt(vector.size))
    return [float(v) for v in unit]


def embed_content(content: Content) -> list[float]:
    """An L2-normalised :data:`EMBEDDING_DIM` vector that is a smooth function of the content."""
    video = _video_features(content.thumbs) if content.thumbs is not None and len(content.thumbs) else None
    features = np.concatenate(
        [
            video if video is not None else np.zeros(_VIDEO_FEATURES),
            content.audio if content.audio is not None else np.zeros(_AUDIO_FEATURES),
            [0.05],  # a constant so that all-grey silence still has a direction
        ]
    )
    smooth = features @ _projection()
    smooth /= max(float(np.linalg.norm(smooth)), 1e-12)
    # A faint content-hash direction: any byte changed moves the vector, by ~1e-4 in cosine.
    seed = int.from_bytes(content.digest[:8], "little")
    jitter = np.random.default_rng(seed).standard_normal(EMBEDDING_DIM) / np.sqrt(EMBEDDING_DIM)
    return _normalise(smooth + 0.01 * jitter)


def embed_text(text: str) -> list[float]:
    """Hashed words and word pairs, each a fixed random direction, summed and normalised."""
    words = re.findall(r"\w+", text.lower())
    tokens = words + [f"{a} {b}" for a, b in itertools.pairwise(words)] if words else [text.strip()]
    total = np.zeros(EMBEDDING_DIM)
    for i, token in enumerate(tokens):
        seed = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
        weight = 1.0 if i < len(words) or not words else 0.5
        total += weight * np.random.default_rng(seed).standard_normal(EMBEDDING_DIM)
    return _normalise(total)


_HUES = (
    (15, "red"),
    (45, "orange"),
    (70, "yellow"),
    (160, "green"),
    (200, "cyan"),
    (260, "blue"),
    (290, "purple"),
    (335, "magenta"),
    (360, "red"),
)


def _dominant_color(thumbs: np.ndarray) -> str:
    # OpenCV: see above
    import cv2

    hsv = cv2.cvtColor(thumbs.reshape(-1, THUMB, 3), cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.float64)
    saturated = (hsv[:, 1] > 70) & (hsv[:, 2] > 50)
    if saturated.mean() < 0.15:
        value = hsv[:, 2].mean() / 255.0
        return "black" if value < 0.2 else "white" if value > 0.8 else "gray"
    hues = hsv[saturated, 0] * 360.0 / 256.0
    counts = np.zeros(len(_HUES))
    bounds = np.array([b for b, _ in _HUES])
    np.add.at(counts, np.searchsorted(bounds, hues, side="right").clip(0, len(_HUES) - 1), 1)
    names: dict[str, float] = {}
    for (_, name), n in zip(_HUES, counts, strict=False):
        names[name] = names.get(name, 0.0) + float(n)
    return max(names, key=lambda k: names[k])


def _camera_movement(gray: np.ndarray, motion: float) -> str:
    # OpenCV: see above
    import cv2

    if len(gray) < 2 or motion < 0.004:
        return "static"
    window = cv2.createHanningWindow((THUMB, THUMB), cv2.CV_64F)
    shifts = []
    for a, b in itertools.pairwise(gray):
        (dx, dy), response = cv2.phaseCorrelate(a, b, window)
        if response > 0.2:
            shifts.append((dx, dy))
    if not shifts:
        return "handheld"
    dx, dy = np.median(np.array(shifts), axis=0)
    if max(abs(dx), abs(dy)) < 0.5:
        return "zoom" if motion > 0.03 else "static"
    # Content moving right on screen means the camera turned left.
    if abs(dx) >= abs(dy):
        return "pan_left" if dx > 0 else "pan_right"
    return "tilt_up" if dy > 0 else "tilt_down"


def tag_content(content: Content) -> dict[str, Any]:
    """Measured tags of the frames (and of the audio loudness when there is audio).

    Raises:
        ValueError: there are no frames to look at.
    """
    # OpenCV: see above
    import cv2

    thumbs = content.thumbs
    if thumbs is None or len(thumbs) == 0:
        raise ValueError("No video frames to tag.")
    rgb = thumbs.astype(np.float64) / 255.0
    gray = (rgb @ np.array([0.299, 0.587, 0.114])).astype(np.float64)  # (T, THUMB, THUMB)
    brightness = float(gray.mean())
    contrast = float(gray.std(axis=(1, 2)).mean())
    diffs = np.abs(np.diff(gray, axis=0)).mean(axis=(1, 2)) if len(gray) > 1 else np.zeros(0)
    motion = float(diffs.mean()) if diffs.size else 0.0
    cuts = int((diffs > 0.2).sum())
    detail = float(np.mean([np.abs(cv2.Laplacian(g, cv2.CV_64F)).mean() for g in gray]))
    third = THUMB // 3
    top, bottom = float(gray[:, :third].mean()), float(gray[:, -third:].mean())
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colorfulness = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))

    if detail < 0.01:
        shot_size = "extreme_close_up"
    elif detail < 0.04:
        shot_size = "close_up"
    elif detail < 0.09:
        shot_size = "medium_shot"
    elif detail < 0.16:
        shot_size = "wide_shot"
    else:
        shot_size = "extreme_wide_shot"
    if top > bottom * 1.25 + 0.02:
        angle = "low_angle"
    elif bottom > top * 1.25 + 0.02:
        angle = "high_angle"
    else:
        angle = "eye_level"
    lighting = "low_key" if brightness < 0.25 else "high_key" if brightness > 0.7 else "balanced"
    tags: dict[str, Any] = {
        "shot_size": shot_size,
        "camera_movement": _camera_movement(gray, motion),
        "shooting_angle": angle,
        "lighting": lighting,
        "dominant_color": _dominant_color(thumbs),
        "brightness": round(brightness, 4),
        "contrast": round(contrast, 4),
        "colorfulness": round(colorfulness, 4),
        "motion_intensity": round(motion, 4),
        "scene_cuts": cuts,
        "frames_analyzed": len(thumbs),
    }
    if content.audio is not None:
        tags["audio_loudness"] = round(float(content.audio[:_AUDIO_BINS].mean()), 4)
    return tags
