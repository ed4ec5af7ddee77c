"""API keys: how one is cleaned and checked, hidden in text, read from a file, and made for ``--local``.

A key is a secret that travels in an HTTP header, so it must be printable ASCII without spaces
(``requests`` refuses anything else with an error that quotes the header, key included, and a
non-latin-1 character fails deeper still with a traceback). Keys are usually pasted from a file
or a web page, so surrounding whitespace (the file's final newline) is removed, and anything
else outside the rule is refused *before any request* with a message that says which character
is wrong and where, never the key itself.

Redaction covers the forms in which a key can reach a message besides its plain text: its
``repr`` (``'k\\n'``), its JSON string form, URL-quoted, and the ``repr`` of its bytes.

``--local`` needs a key that a rerun on the same ``--out`` finds again (the emulator files jobs
under it) and that nobody else can compute: :func:`local_key` makes a random one per output
folder, stored with mode 0600, created atomically and complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from seeknetic_prep.errors import InvalidArgumentError

__all__ = [
    "EMULATOR_KEYS_ENV",
    "LOCAL_KEY_FILE",
    "clean_api_key",
    "keys_from_env",
    "local_key",
    "read_key_file",
    "redact",
    "redact_value",
    "resolve_api_key",
    "secret_forms",
]

EMULATOR_KEYS_ENV = "SEEKNETIC_EMULATOR_API_KEYS"
"""Environment variable with the standalone emulator's keys, comma- or newline-separated."""

LOCAL_KEY_FILE = "api-key"
"""Name of the ``--local`` key's file inside ``<out>/emulator/`` (the emulator's own state)."""

REDACTED = "[redacted]"


def clean_api_key(raw: str, *, source: str) -> str:
    """``raw`` without surrounding whitespace, checked to be usable in an HTTP header.

    Args:
        raw: the key as given.
        source: where it came from, for the message (``"--api-key"``, ``"SEEKNETIC_API_KEY"``).

    Returns:
        The stripped key.

    Raises:
        InvalidArgumentError: the key is empty after stripping, or holds a space, a control
            character or a non-ASCII character; the message names the character's code point and
            position, never the key.

    >>> clean_api_key("  sk-123\\n", source="test")
    'sk-123'
    """
    key = raw.strip()
    if not key:
        raise InvalidArgumentError(f"Invalid API key from {source}: it is empty (or only whitespace).")
    for index, char in enumerate(key, start=1):
        if " " < char < "\x7f":
            continue
        if char.isspace() or char < " " or char == "\x7f":
            kind = "a space" if char == " " else "a control character"
            hint = "a stray line break, tab or space from copying"
        else:
            kind = "a non-ASCII character"
            hint = "a typographic dash or quote pasted for a plain one"
        raise InvalidArgumentError(
            f"Invalid API key from {source}: character {index} of {len(key)} is {kind} "
            f"(U+{ord(char):04X}); keys are printable ASCII without spaces (look for {hint})."
        )
    return key


def resolve_api_key(api_key: str | None) -> str:
    """The key a client uses: ``api_key`` when given, else ``SEEKNETIC_API_KEY``, cleaned by
    :func:`clean_api_key` before any request (requests would quote a bad header in its error).

    Raises:
        InvalidArgumentError: no key, or one that cannot go in a header.
    """
    source = "api_key (--api-key)" if api_key is not None else "SEEKNETIC_API_KEY"
    raw = api_key if api_key is not None else os.environ.get("SEEKNETIC_API_KEY")
    if not raw or not raw.strip():
        raise InvalidArgumentError(
            "No API key: pass api_key (--api-key) or set SEEKNETIC_API_KEY (or use --local)."
        )
    return clean_api_key(raw, source=source)


def secret_forms(key: str) -> tuple[str, ...]:
    """Every form of ``key`` that a message might carry, longest first (for :func:`redact`)."""
    forms = {
        key,
        repr(key)[1:-1],
        json.dumps(key)[1:-1],
        urllib.parse.quote(key, safe=""),
        urllib.parse.quote_plus(key, safe=""),
        repr(key.encode("utf-8", "surrogateescape"))[2:-1],
    }
    return tuple(sorted((f for f in forms if f), key=len, reverse=True))


def redact(text: str, forms: Iterable[str]) -> str:
    """``text`` with each of ``forms`` (from :func:`secret_forms`) replaced by ``[redacted]``."""
    for form in forms:
        text = text.replace(form, REDACTED)
    return text


def redact_value(value: object, forms: Iterable[str]) -> object:
    """``value`` (a server's JSON ``detail``) with :func:`redact` applied to every string in it."""
    if isinstance(value, str):
        return redact(value, forms)
    if isinstance(value, dict):
        return {k: redact_value(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, forms) for v in value]
    return value


def _split_keys(text: str) -> list[str]:
    """Keys from ``text``: one a line or comma-separated; blank lines and ``#`` comments ignored."""
    keys: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        keys.extend(part for part in line.split(",") if part.strip())
    return keys


def read_key_file(path: Path) -> list[str]:
    """The keys in ``path``: one a line, blank lines and lines starting with ``#`` ignored.

    Raises:
        InvalidArgumentError: the file cannot be read, holds no key, or a key breaks
            :func:`clean_api_key`'s rule (the message gives the line number, not the key).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InvalidArgumentError(f"Invalid --api-key-file {str(path)!r}: cannot read it ({why}).") from None
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keys.append(clean_api_key(line, source=f"--api-key-file {path} line {number}"))
    if not keys:
        raise InvalidArgumentError(f"Invalid --api-key-file {str(path)!r}: it holds no key (one per line).")
    return keys


def keys_from_env(name: str = EMULATOR_KEYS_ENV) -> list[str]:
    """The keys in environment variable ``name`` (comma- or newline-separated); [] when unset."""
    value = os.environ.get(name, "")
    return [clean_api_key(k, source=f"${name} (key {i})") for i, k in enumerate(_split_keys(value), start=1)]


def local_key(out: Path) -> str:
    """The ``--local`` emulator's key for output folder ``out``: random, made once, then reused.

    Kept in ``<out>/emulator/api-key`` with mode 0600 beside the emulator's state, so a rerun
    finds its jobs and deleting that folder resets both together. The file appears complete or
    not at all (written under a private name, then hard-linked into place, which never
    overwrites), so two processes racing, or a crash midway, cannot leave a half key.

    Raises:
        InvalidArgumentError: the file exists but does not hold a usable key.
    """
    folder = Path(out) / "emulator"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _own_private_folder(folder)
    path = folder / LOCAL_KEY_FILE
    if not path.exists():
        tmp = folder / f".{LOCAL_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, ("sk-local-" + secrets.token_urlsafe(32) + "\n").encode("ascii"))
            os.fsync(fd)
        except OSError as exc:  # a full disk: no half-written temporary file left, the path said
            tmp.unlink()
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        finally:
            os.close(fd)
        try:
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(tmp, path)
        finally:
            tmp.unlink()
    try:
        if path.is_symlink():  # planted: its target's key would be known to whoever made it
            raise InvalidArgumentError(f"{path} is a symlink")
        if os.name == "posix" and path.lstat().st_uid != os.geteuid():  # planted by another user
            raise InvalidArgumentError(f"{path} belongs to another user")
        if os.name == "posix" and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # loosened by hand: the key is only ours to read
        return clean_api_key(path.read_text(encoding="ascii"), source=str(path))
    except (OSError, UnicodeDecodeError, InvalidArgumentError):
        raise InvalidArgumentError(
            f"Invalid local key file {str(path)!r}: it does not hold a usable key; delete the "
            f"folder {str(folder)!r} (the local emulator's state) and run again."
        ) from None


def _own_private_folder(folder: Path) -> None:
    """Make sure only we can write in ``folder`` before a key is made or read there: one that
    others could write in (mode 0777, a shared mount) would let them plant a key file they know,
    or swap ours. Ours and loosened: tightened to 0700 (as the key file is to 0600). Not ours,
    or a symlink: refused, since whoever owns it controls what it holds.

    Raises:
        InvalidArgumentError: the folder is a symlink or belongs to another user.
    """
    if os.name != "posix":
        return
    st = folder.lstat()
    if folder.is_symlink() or st.st_uid != os.geteuid():
        what = "is a symlink" if folder.is_symlink() else f"belongs to another user (uid {st.st_uid})"
        raise InvalidArgumentError(
            f"Invalid local emulator folder {str(folder)!r}: it {what}, so its key could be known "
            f"to others; delete it (the local emulator's state) or use another --out."
        )
    if st.st_mode & 0o077:
        os.chmod(folder, 0o700)
