"""What one emulator instance is configured with, and the small rules every module shares.

API keys never leave this module in clear: everything downstream (SQLite rows, file paths,
rate-limit buckets) knows a key only by :func:`owner_id`, a one-way digest, so a data
directory or a log can be shared without leaking a key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    """Start-up settings; ``None`` for qps/quota means no limit.

    ``api_keys`` holds the keys in clear only so the in-process handle can hand the first one
    to a test; ``repr`` hides them.
    """

    data_dir: Path
    api_keys: tuple[str, ...] = field(repr=False)
    qps: float | None = None
    quota: int | None = None
    max_body_mb: float = 64.0
    job_seconds: float = DEFAULT_JOB_SECONDS
    fail_rate: float = 0.0
    seed: int | None = None
    keep_tensors: bool = False
    """Keep every uploaded tensor; by default a job's are deleted once it has finished."""

    def __post_init__(self) -> None:
        if not self.api_keys:
            raise InvalidArgumentError("Invalid api_keys (): at least one key is required.")
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
        if not 0.0 <= self.fail_rate <= 1.0:
            raise InvalidArgumentError(f"Invalid fail_rate {self.fail_rate}: must be in [0, 1].")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @classmethod
    def build(
        cls,
        *,
        data_dir: Path,
        api_keys: Sequence[str] | None,
        qps: float | None = None,
        quota: int | None = None,
        max_body_mb: float = 64.0,
        job_seconds: float = DEFAULT_JOB_SECONDS,
        fail_rate: float = 0.0,
        seed: int | None = None,
        keep_tensors: bool = False,
    ) -> EmulatorConfig:
        """A config with a freshly generated key when none is given."""
        keys = tuple(api_keys) if api_keys else (generate_api_key(),)
        return cls(
            data_dir=Path(data_dir),
            api_keys=keys,
            qps=qps,
            quota=quota,
            max_body_mb=max_body_mb,
            job_seconds=job_seconds,
            fail_rate=fail_rate,
            seed=seed,
            keep_tensors=keep_tensors,
        )
