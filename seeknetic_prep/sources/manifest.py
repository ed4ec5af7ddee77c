"""``--from-list FILE``: the paths and URLs a list names, as video2dataset takes URL lists.

A text file holds one path or URL a line (blank lines and ``#`` comments skipped); a ``.csv``
or ``.parquet`` file holds them in its ``path`` column (else ``url``). Relative local paths are
taken relative to the list's folder, so a list travels with the videos it names.
"""

from __future__ import annotations

import csv
from pathlib import Path

from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.sources.urls import is_url

__all__ = ["read_list"]

_COLUMNS = ("path", "url")


def read_list(file: str | Path) -> list[str]:
    """The entries of a list file, in order, each once.

    Raises:
        InvalidArgumentError: the file is missing or unreadable, a table has neither a ``path``
            nor a ``url`` column, or it names nothing.
    """
    p = Path(file)
    try:
        if p.suffix.lower() == ".parquet":
            entries = _parquet(p)
        elif p.suffix.lower() == ".csv":
            entries = _csv(p)
        else:
            lines = p.read_text(encoding="utf-8").splitlines()
            entries = [s for s in (ln.strip() for ln in lines) if s and not s.startswith("#")]
    except OSError as exc:
        raise InvalidArgumentError(f"Invalid --from-list {str(p)!r}: {exc.strerror or exc}.") from exc
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(f"Invalid --from-list {str(p)!r}: not UTF-8 text ({exc.reason}).") from exc
    out = [e if is_url(e) or Path(e).is_absolute() else str(p.parent / e) for e in entries]
    if not out:
        raise InvalidArgumentError(f"Invalid --from-list {str(p)!r}: it names no path or URL.")
    return list(dict.fromkeys(out))


def _column(p: Path, names: list[str]) -> str:
    for want in _COLUMNS:
        for name in names:
            if name.strip().lower() == want:
                return name
    raise InvalidArgumentError(
        f"Invalid --from-list {str(p)!r}: no 'path' or 'url' column (columns: {', '.join(names)}).")


def _csv(p: Path) -> list[str]:
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        col = _column(p, list(reader.fieldnames or []))
        return [v.strip() for row in reader if (v := row.get(col) or "").strip()]


def _parquet(p: Path) -> list[str]:
    # pyarrow: only for a Parquet list
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(p)
    except Exception as exc:  # pyarrow's ArrowInvalid: not a Parquet file
        raise InvalidArgumentError(f"Invalid --from-list {str(p)!r}: not a Parquet file ({exc}).") from exc
    col = _column(p, list(schema.names))
    values = pq.read_table(p, columns=[col]).column(col).to_pylist()
    return [str(v).strip() for v in values if v is not None and str(v).strip()]
