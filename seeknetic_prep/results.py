"""``<out>/results.jsonl``: the finished part of the state database, one line per unit.

The file is regenerated from the database and swapped in with ``os.replace``, at the end of a
run and when it is interrupted, so it is never half-written and never disagrees with the
state: the database is the truth, the file is its readable copy. Lines are sorted by path,
window and service, and carry no timestamps, so two runs over the same content give the same
file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .store import Store

__all__ = ["result_line", "write_results"]


def write_results(store: Store, path: Path, *, services: Sequence[str]) -> int:
    """Rewrite ``path`` atomically from ``store``; return the number of lines.

    Every file that could be preprocessed contributes one line per terminal (completed or
    failed) unit; a file that could not gets one ``failed`` line per service in ``services``.
    """
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as out:
        for file_row, unit in store.iter_result_rows():
            if file_row.status == "failed":
                for service in services:
                    out.write(json.dumps(result_line(
                        path=file_row.path, fingerprint=file_row.fingerprint, service=service,
                        status="failed", error=file_row.error,
                    )) + "\n")
                    count += 1
                continue
            if unit is None:
                continue
            result = unit.result or {}
            out.write(json.dumps(result_line(
                path=file_row.path, fingerprint=unit.fingerprint, service=unit.service,
                status=unit.status, error=unit.error, start_ms=unit.start_ms, end_ms=unit.end_ms,
                frame_times_ms=unit.frame_times_ms, request_id=unit.request_id,
                embedding=result.get("embedding"), tags=result.get("tags"),
            )) + "\n")
            count += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return count


def result_line(
    *,
    path: str,
    fingerprint: str | None,
    service: str,
    status: str,
    error: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    frame_times_ms: list[float] | None = None,
    request_id: str | None = None,
    embedding: object = None,
    tags: object = None,
) -> dict[str, Any]:
    """One results.jsonl record: ``embedding`` for the embedding service, ``tags`` for tagging."""
    line: dict[str, Any] = {
        "path": path,
        "fingerprint": fingerprint,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "frame_times_ms": frame_times_ms,
        "service": service,
        "request_id": request_id,
        "status": status,
    }
    if service == "embedding":
        line["embedding"] = embedding
    else:
        line["tags"] = tags
    line["error"] = error
    return line
