"""What one emulator instance is configured with, and the small rules every module shares.

API keys never leave this module in clear: everything downstream (SQLite rows, file paths,
rate-limit buckets) knows a key only by :func:`owner_id`, a one-way digest, so a data
directory or a log can be shared without leaking a key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seeknetic_prep.api.keys import clean_api_key
from seeknetic_prep.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_JOB_SECONDS",
    "EMBEDDING_DIM",
    "REQUEST_ID_PATTERN",
    "EmulatorConfig",
    "generate_api_key",
    "new_request_id",
    "owner_id",
]

REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
"""``[A-Za-z0-9._-]{1,128}`` without a leading dot, so no id can be ``.``, ``..`` or hidden."""
REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)

EMBEDDING_DIM = 1024
DEFAULT_JOB_SECONDS = 0.3


def owner_id(api_key: str) -> str:
    """The stable, non-reversible name under which a key's uploads and jobs are stored."""
    return hashlib.sha256(b"seeknetic-emulator:" + api_key.encode("utf-8")).hexdigest()[:32]


def generate_api_key() -> str:
    return "sk-emu-" + secrets.token_urlsafe(24)


def new_request_id() -> str:
    """The request_id the server makes for a request that names none."""
    return "emu-" + uuid.uuid4().hex


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything one emulator starts with: :func:`~seeknetic_prep.emulator.running`,
    :func:`~seeknetic_prep.emulator.spawned`, :func:`~seeknetic_prep.emulator.serve` and the
    ``emulator`` command each take one, so a setting is named once, here.

    Checked when made: a setting that breaks its rule raises
    :class:`~seeknetic_prep.errors.InvalidArgumentError` naming it.

    >>> EmulatorConfig(qps=5, job_seconds=0.2).job_seconds
    0.2
    """

    data_dir: Path | None = None
    """Where SQLite and tensors live; None: a temporary directory, removed when the server stops."""
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    """Accepted keys; none: one is generated (``api_keys[0]`` then). ``repr`` hides them: they
    are held in clear only so the in-process handle can hand the first one to a test."""
    qps: float | None = None
    """Per-key requests per second (token bucket); None: no limit."""
    quota: int | None = None
    """Async jobs each key may submit in total; None: no limit."""
    max_body_mb: float = 64.0
    """Request bodies above this are answered 413."""
    job_seconds: float = DEFAULT_JOB_SECONDS
    """A job is pending for half of this, processing until it, then completed or failed."""
    fail_rate: float = 0.0
    """Share of requests answered with an injected 500/502/504 (``seed`` replays them)."""
    seed: int | None = None
    keep_tensors: bool = False
    """Keep every uploaded tensor; by default a job's are deleted once it has finished."""
    upload_memory_mb: float = 1024.0
    """Memory that request bodies in flight may cost (about 3x their size; bodies under 1 MiB
    are free): over it, a body waits its turn up to 10 s, then gets 503 with Retry-After."""
    read_timeout_s: float = 30.0
    """A request's head must arrive within this of its connection opening (or the previous
    answer), and its body within this of its head: else 408 (an idle connection is closed)."""
    host: str = "127.0.0.1"
    port: int = 0
    """0: any free port (the URL says which)."""

    def __post_init__(self) -> None:
        if not self.api_keys:
            object.__setattr__(self, "api_keys", (generate_api_key(),))
        for index, key in enumerate(self.api_keys, start=1):
            # The rule a client applies before sending (printable ASCII, no spaces): a key no
            # client can send is a configuration mistake. The message never quotes the key.
            if clean_api_key(key, source=f"api_keys (key {index})") != key:
                raise InvalidArgumentError(
                    f"Invalid API key from api_keys (key {index}): it has surrounding whitespace."
                )
        if self.qps is not None and not self.qps > 0:
            raise InvalidArgumentError(f"Invalid qps {self.qps}: must be > 0 (or unset for no limit).")
        if self.quota is not None and self.quota < 0:
            raise InvalidArgumentError(f"Invalid quota {self.quota}: must be >= 0 (or unset for no limit).")
        if not self.max_body_mb > 0:
            raise InvalidArgumentError(f"Invalid max_body_mb {self.max_body_mb}: must be > 0.")
        if not self.job_seconds >= 0:
            raise InvalidArgumentError(f"Invalid job_seconds {self.job_seconds}: must be >= 0.")
        if not self.upload_memory_mb > 0:
            raise InvalidArgumentError(f"Invalid upload_memory_mb {self.upload_memory_mb}: must be > 0.")
        if not self.read_timeout_s > 0:
            raise InvalidArgumentError(f"Invalid read_timeout_s {self.read_timeout_s}: must be > 0.")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise InvalidArgumentError(f"Invalid fail_rate {self.fail_rate}: must be in [0, 1].")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON values (for the child process: a field added later reaches it too)."""
        data_dir = None if self.data_dir is None else str(self.data_dir)
        return {**dataclasses.asdict(self), "data_dir": data_dir, "api_keys": list(self.api_keys)}

    @classmethod
    def from_json(cls, fields: Mapping[str, Any]) -> EmulatorConfig:
        """The config :meth:`to_json` wrote."""
        values = dict(fields)
        data_dir = values.pop("data_dir")
        return cls(
            data_dir=None if data_dir is None else Path(data_dir),
            api_keys=tuple(values.pop("api_keys")),
            **values,
        )
