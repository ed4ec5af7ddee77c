"""How many upload and submission requests reached their handlers, per key and request_id.

Tests and the ``/_emulator/stats`` endpoint read it to prove what a client sent exactly once.
"""

from __future__ import annotations

from seeknetic_prep.emulator.storage.db import Database

__all__ = ["Stats"]


class Stats:
    def __init__(self, db: Database) -> None:
        self._db = db

    def count(self, owner: str, kind: str, request_id: str) -> None:
        """One more request of ``kind`` (``uploads`` or ``submissions``) for ``request_id``."""
        self._db.execute(
            "INSERT INTO stats (owner, kind, request_id, n) VALUES (?, ?, ?, 1) "
            "ON CONFLICT (owner, kind, request_id) DO UPDATE SET n = n + 1",
            (owner, kind, request_id),
        )

    def of(self, owner: str) -> dict[str, dict[str, int]]:
        """``{"uploads": {request_id: n}, "submissions": {request_id: n}}`` for one key."""
        out: dict[str, dict[str, int]] = {"uploads": {}, "submissions": {}}
        rows = self._db.rows(
            "SELECT kind, request_id, n FROM stats WHERE owner = ? ORDER BY request_id", (owner,)
        )
        for row in rows:
            out.setdefault(row["kind"], {})[row["request_id"]] = int(row["n"])
        return out
