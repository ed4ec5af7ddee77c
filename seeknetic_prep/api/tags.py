"""The tags the video tagging API returns: their names, and the values of the categorical ones.

Known here so that a filter the results can never match (``shot_size=wide`` where the API says
``wide_shot``) is refused with the real values instead of quietly matching nothing, while a
real value that no window of these results happens to have still matches nothing, validly.
A value the API returns that is not listed is accepted too (the results are the authority).
The emulator's tagger (:mod:`seeknetic_prep.emulator.scoring`) says only these values.
"""

from __future__ import annotations

__all__ = ["CATEGORIES", "MEASURES"]

CATEGORIES: dict[str, tuple[str, ...]] = {
    "shot_size": ("extreme_close_up", "close_up", "medium_shot", "wide_shot", "extreme_wide_shot"),
    "camera_movement": ("static", "handheld", "zoom", "pan_left", "pan_right", "tilt_up", "tilt_down"),
    "shooting_angle": ("low_angle", "eye_level", "high_angle"),
    "lighting": ("low_key", "balanced", "high_key"),
    "dominant_color": ("black", "gray", "white", "red", "orange", "yellow", "green", "cyan", "blue",
                       "purple", "magenta"),
}
"""Each categorical tag's values, in the order the API's documentation gives them."""

MEASURES = ("brightness", "contrast", "colorfulness", "motion_intensity", "audio_loudness", "scene_cuts",
            "frames_analyzed")
"""The numeric tags: compared as numbers (``--where "brightness>0.5"``)."""
