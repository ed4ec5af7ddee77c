"""Where a command that only reads an out folder keeps what it must write.

Teams share results on a read-only mount or in another account's folder, so every reading
command (``status``, ``results``, ``search``, ``report``, ``plan``) works on a folder it cannot
write: the state is opened read-only, and the caches a reader builds (the search index, the
report) go to the user's own cache folder (``$XDG_CACHE_HOME/seeknetic-prep``, else
``~/.cache/seeknetic-prep``), in a subfolder named after the out folder's absolute path, so two
out folders never share one and the same folder always finds its cache again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cache_for", "user_cache_dir", "writable"]


def writable(path: Path) -> bool:
    """Whether this process may create and replace files in the folder ``path`` (or, for a
    path that does not exist yet, in the nearest folder above it that does). A read-only
    mount says no even to root."""
    target = Path(path)
    while not target.exists():
        if target.parent == target:
            return False
        target = target.parent
    return os.access(target, os.W_OK | os.X_OK)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/seeknetic-prep``, else ``~/.cache/seeknetic-prep``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "seeknetic-prep"


def cache_for(out: Path, kind: str) -> Path:
    """The user's cache folder of ``kind`` (``search``, ``report``) for the out folder ``out``."""
    real = Path(out).resolve()
    tag = hashlib.sha256(os.fsencode(real)).hexdigest()[:16]
    return user_cache_dir() / kind / f"{real.name or 'root'}-{tag}"
