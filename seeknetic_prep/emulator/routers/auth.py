"""Who is calling: the owner that :class:`~seeknetic_prep.emulator.guard.Guard` authenticated.

Authentication itself happens in the Guard, before any parsing; the two security schemes here
only document it in the OpenAPI document, so a generated client knows to send a key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from seeknetic_prep.emulator.guard import OWNER_SCOPE_KEY
from seeknetic_prep.emulator.problems import Problem

__all__ = ["Owner"]

_api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer_scheme = HTTPBearer(auto_error=False)


def _owner(
    request: Request,
    _key: Annotated[str | None, Depends(_api_key_scheme)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> str:
    """The caller, as the Guard authenticated it (the schemes are here to document auth in OpenAPI)."""
    owner = request.scope.get(OWNER_SCOPE_KEY)
    if not isinstance(owner, str):  # only reachable if the app is mounted without its Guard
        raise Problem(401, "Missing API key.")
    return owner


Owner = Annotated[str, Depends(_owner)]
"""An endpoint parameter of this type receives the caller's owner id (never the key)."""
