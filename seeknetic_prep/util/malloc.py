"""Keep freed multi-megabyte buffers in the process instead of handing them back to the kernel.

Every window moves ~6 MB of upload bodies through each process of a run (base64 text, the
JSON around it, the decoded arrays, pickled copies on the way through a pipe), and frees it a
moment later. glibc serves a block that big with its own ``mmap`` and returns it with
``munmap`` on ``free``, so the next window's buffers come back as fresh pages: one page fault
and one zeroed 4 KB page at a time. Measured in the emulator on 2 cores: 7,900 minor faults and
29 ms of system time per window; with the thresholds below, ~500 faults and 15 ms (the whole
emulator 81 -> 70 ms of CPU per window).

``M_MMAP_THRESHOLD`` at 32 MiB (glibc's maximum) keeps such blocks on the heap, where a free
block is reused; ``M_TRIM_THRESHOLD`` lets up to 64 MiB of free heap stay mapped rather than be
trimmed and faulted in again. A process holds at most that much more than it uses. Elsewhere
than glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_buffers"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 64 << 20

_done = False


def keep_freed_buffers() -> bool:
    """Set this process's malloc thresholds (once); whether they took effect."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on (no lookup)
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _done
