"""The one way emulator code says "answer this request with an error status".

Handlers and storage raise :class:`Problem`; the app renders every one as ``{"detail": ...}``
with its status, so the error shape cannot drift between endpoints.
"""

from __future__ import annotations

__all__ = ["Problem", "invalid"]


class Problem(Exception):
    """An HTTP error answer: ``status`` and the ``detail`` shown to the client."""

    def __init__(self, status: int, detail: object, *, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        super().__init__(f"{status}: {detail}")


def invalid(loc: list[str | int], msg: str, kind: str = "value_error") -> Problem:
    """A 422 in FastAPI's own shape, naming the body field ``loc`` and the rule it broke."""
    return Problem(422, [{"loc": ["body", *loc], "msg": msg, "type": kind}])
