"""Text for a terminal: what a file name or an API's answer holds must never drive the terminal.

A file may be named with ESC, CR or newlines, and a tag value comes from a server: printed raw,
``\\x1b]0;...\\x07`` retitles the window, ``\\x1b[2J`` clears the screen, a CR rewrites the line
that says a file failed. :func:`printable` escapes every control character (C0, DEL, C1) and the
bidirectional overrides that reorder what is shown, the way Python's ``repr`` would, and leaves
all other text as it is. Used wherever a command prints a value it did not write itself.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

# C0 controls, DEL, C1 controls, and the bidi embeddings/overrides/isolates (Trojan Source).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` with every control character escaped (``\\x1b``, ``\\n``, ``\\u202e``).

    >>> printable("clip\\x1b]0;pwned\\x07.mp4")
    'clip\\\\x1b]0;pwned\\\\x07.mp4'
    """
    return _UNSAFE.sub(_escape, str(text))
