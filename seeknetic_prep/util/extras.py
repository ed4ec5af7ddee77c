"""Optional parts of the install, checked before they are used.

The core (decode, upload, poll, store) needs only PyAV, numpy, soxr, requests, tqdm and
Pillow. The local emulator also needs a web server (FastAPI, uvicorn) and OpenCV for the
picture statistics its fake model scores with; they come with the ``emulator`` extra. A
command that needs it checks first, so a user without it gets one line that says what to
install instead of a ``ModuleNotFoundError`` traceback from deep inside a child process.
"""

from __future__ import annotations

import importlib.util

from seeknetic_prep.errors import InvalidArgumentError

__all__ = ["EMULATOR_MODULES", "missing", "require_emulator"]

EMULATOR_MODULES = ("fastapi", "uvicorn", "cv2")
"""What ``pip install "seeknetic-prep[emulator]"`` adds, by import name."""


def missing(modules: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (found without importing them)."""
    gone = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or blocked package counts as missing
            found = False
        if not found:
            gone.append(name)
    return gone


def require_emulator(what: str = "the local emulator") -> None:
    """Raise unless the ``emulator`` extra is installed.

    Raises:
        InvalidArgumentError: (exit 2) naming the missing modules and the pip command.
    """
    gone = missing(EMULATOR_MODULES)
    if gone:
        raise InvalidArgumentError(
            f"{what} needs the emulator extra ({', '.join(gone)} not installed): "
            'pip install "seeknetic-prep[emulator]"'
        )
