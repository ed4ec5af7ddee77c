"""The one error tree of seeknetic-prep.

Every exception the package raises on purpose is a :class:`SeekneticPrepError`. Foreign
exceptions (``av.FFmpegError``, ``requests.RequestException``, ``sqlite3.Error``, ...) are
translated exactly once, at the seam where they enter (``decode``, ``api.transport``, ``state``), with
``raise X(...) from exc`` so the cause stays attached. Anything else that escapes is a bug.

Where an error is also a builtin kind of failure it inherits that builtin too, as PyAV does
(``InvalidDataError(FFmpegError, ValueError)``), so ``except ValueError`` keeps working::

    SeekneticPrepError
    ├── MediaError (ValueError)              unusable input file: missing, empty, not media,
    │                                        no video stream, truncated, undecodable
    ├── InvalidArgumentError (ValueError)    a value outside its rule (window bounds, options)
    ├── TensorError (ValueError)             tensor JSON that does not decode to its declared array
    ├── StateError                           the state database is unusable (corrupt, newer schema)
    ├── OutputInUseError                     another run holds the --out folder's lock
    └── APIError                             anything that went wrong talking to the API
        ├── APIStatusError                   the server answered with an error status
        │   ├── BadRequestError              400
        │   ├── AuthenticationError          401 (PermissionError)
        │   ├── QuotaExceededError           402
        │   ├── NotFoundError                404 (LookupError)
        │   ├── ConflictError                409
        │   ├── PayloadTooLargeError         413
        │   ├── ValidationError              422 (ValueError)
        │   ├── RateLimitError               429
        │   └── ServerError                  5xx
        ├── MalformedAnswerError (ValueError)  a 2xx answer that breaks the API's promises
        ├── NotTheAPIError                     the base URL answers, but not as the API does
        └── APIConnectionError (ConnectionError)   no answer: refused, reset, DNS
            ├── APITimeoutError (TimeoutError)     no answer in time
            ├── CancelledError                     the run is stopping: a wait or retry given up
            └── UnreachableError                   the API cannot be reached at all (at start-up)

Exit codes, for every command, live in one table here: :class:`ExitCode` names them,
:func:`exit_code_for` maps an error that stopped a command, and :class:`StopReason` maps why a
run stopped early. Nothing else in the package spells an exit code.
"""

from __future__ import annotations

from enum import Enum, IntEnum

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CancelledError",
    "ConflictError",
    "ExitCode",
    "InvalidArgumentError",
    "MalformedAnswerError",
    "MediaError",
    "NotFoundError",
    "NotTheAPIError",
    "OutputInUseError",
    "PayloadTooLargeError",
    "QuotaExceededError",
    "RateLimitError",
    "SeekneticPrepError",
    "ServerError",
    "StateError",
    "StopReason",
    "TensorError",
    "UnreachableError",
    "ValidationError",
    "error_for_status",
    "exit_code_for",
]


class SeekneticPrepError(Exception):
    """Root of every error seeknetic-prep raises on purpose.

    Picklable with all its attributes, whatever a subclass's ``__init__`` takes, because errors
    cross process pools (a decode worker's ``MediaError`` reaches the main process intact).
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[SeekneticPrepError], args: tuple[object, ...], state: dict[str, object]) -> Exception:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class MediaError(SeekneticPrepError, ValueError):
    """An input file cannot be turned into windows; the message names the file and the cause."""

    def __init__(self, path: object, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class InvalidArgumentError(SeekneticPrepError, ValueError):
    """A caller-supplied value breaks its rule; the message states the value and the rule."""


class TensorError(SeekneticPrepError, ValueError):
    """A tensor JSON object that does not decode to the array it declares."""


class StateError(SeekneticPrepError):
    """The state database cannot be used as it is (corrupt, or written by a newer version)."""


class OutputInUseError(SeekneticPrepError):
    """Another process holds the output folder's lock (see :mod:`seeknetic_prep.util.outlock`).

    A usage error (exit 2): the user started a second run on the same ``--out``.
    """


class EngineLostError(SeekneticPrepError):
    """The decode engine itself is gone (the Ray node this driver runs on lost its raylet, say
    because one of its agents was killed): no task can run, so the run stops with its state
    kept, instead of failing every file that was in flight."""


class APIError(SeekneticPrepError):
    """A call to the Seeknetic API (or the emulator) failed.

    ``request_id`` is the job or upload id involved when there is one, so a failure in a run of
    thousands of calls can be traced to its unit.
    """

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        self.request_id = request_id
        super().__init__(message)


class APIStatusError(APIError):
    """The server answered with an error status; ``detail`` is its explanation, ``retry_after``
    the seconds its ``Retry-After`` asked for (a 429, or a 503 that is busy), if any.
    ``status_code`` defaults to the class's own (each subclass names its status; 500 for
    :class:`ServerError`, which stands for every 5xx)."""

    status_code: int = 0

    def __init__(
        self, message: str, *, status_code: int | None = None, detail: object = None,
        request_id: str | None = None, retry_after: float | None = None,
    ) -> None:
        self.status_code = type(self).status_code if status_code is None else status_code
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(message, request_id=request_id)


class BadRequestError(APIStatusError):
    """400: the server could not parse the request."""

    status_code = 400


class AuthenticationError(APIStatusError, PermissionError):
    """401: the API key is missing or wrong."""

    status_code = 401


class QuotaExceededError(APIStatusError):
    """402: the key's quota is spent; more work needs more quota, not a retry."""

    status_code = 402


class NotFoundError(APIStatusError, LookupError):
    """404: no such job or object for this key."""

    status_code = 404


class ConflictError(APIStatusError):
    """409: the request_id already names a different job."""

    status_code = 409


class PayloadTooLargeError(APIStatusError):
    """413: the body is over the server's limit; split it, do not retry it."""

    status_code = 413


class ValidationError(APIStatusError, ValueError):
    """422: the body does not match the API's schema or tensor rules."""

    status_code = 422


class RateLimitError(APIStatusError):
    """429: over the key's requests per second; ``retry_after`` seconds is the server's hint."""

    status_code = 429


class ServerError(APIStatusError):
    """5xx: the server failed; safe to retry because our request ids are deterministic.

    ``retry_after`` is set for a 503 that says when to come back (a server whose storage is full
    or whose upload memory is taken): a deliberate "busy", waited out as a 429 is, not a failure
    that counts against a call's attempts or a unit's rounds.
    """

    status_code = 500

    @property
    def busy(self) -> bool:
        """A 503 with a ``Retry-After``: the server is there and asks for patience."""
        return self.status_code == 503 and self.retry_after is not None


class MalformedAnswerError(APIError, ValueError):
    """The server answered 2xx, but not with what the API promises: not JSON, not an object,
    an embedding that is not 1024 finite numbers, a tag no column can hold.

    Kept apart from the other API errors because such an answer must never be stored (it would
    break every later ``results`` and ``search``) and asking again rarely helps: the job that
    got it fails with the message, which starts ``malformed answer:`` and says what was wrong.
    """


class NotTheAPIError(APIError):
    """The base URL answers, but not as the Seeknetic API does (an HTML page, a file server, a
    404 without the API's JSON error shape): a setup problem (``--base-url``), so the command
    stops at once with exit 2 instead of retrying calls that can never work."""


class APIConnectionError(APIError, ConnectionError):
    """No HTTP answer at all: refused, reset, dropped mid-body."""


class APITimeoutError(APIConnectionError, TimeoutError):
    """No answer within the timeout; the request may or may not have taken effect."""


class CancelledError(APIConnectionError):
    """The client was cancelled (the run is stopping): a wait or a retry was given up, and the
    call may or may not have reached the server. An :class:`APIConnectionError`, so a stage that
    treats "no answer" as "try later" needs no new case, and sees its stop flag set."""


class UnreachableError(APIConnectionError):
    """The API cannot be reached at all when a command starts (DNS, refused, no route): a setup
    problem (network, ``--base-url``), so the command stops at once with exit 2."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    cls.status_code: cls
    for cls in (BadRequestError, AuthenticationError, QuotaExceededError, NotFoundError, ConflictError,
                PayloadTooLargeError, ValidationError, RateLimitError)
}


def error_for_status(status_code: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status (5xx -> ServerError, unknown -> APIStatusError)."""
    if status_code >= 500:
        return ServerError
    return _BY_STATUS.get(status_code, APIStatusError)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code for an error that stopped a command: usage, setup or authentication (the
    user must fix a command, the network or a key, or stop a second run on the same --out);
    quota spent; anything else failed."""
    if isinstance(exc, (InvalidArgumentError, AuthenticationError, UnreachableError, NotTheAPIError,
                        OutputInUseError)):
        return ExitCode.USAGE
    if isinstance(exc, QuotaExceededError):
        return ExitCode.QUOTA
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.FAILED


class ExitCode(IntEnum):
    """The exit codes of every command (the README's table)."""

    OK = 0  # everything asked for is done
    FAILED = 1  # some files or jobs failed, or the run stopped on the API; the rest is done
    USAGE = 2  # usage, setup or authentication: fix the command, the network or the key
    QUOTA = 3  # the key's quota is spent: run the same command again later to resume
    INTERRUPTED = 130  # Ctrl-C: state kept, run the same command again to resume


class StopReason(str, Enum):
    """Why a run stopped before its end. A ``str`` so that ``summary.stopped_by == "quota"``
    reads as it always did; when several happen, the most serious (:attr:`rank`) is kept."""

    UNREACHABLE = "unreachable"  # every API call failed for longer than the run waits
    BACKEND_GONE = "backend_gone"  # the API server the run owns (--local's emulator) died
    CRASHED = "crashed"  # a stage thread of the run died (a bug): state kept, the message says why
    MAX_JOBS = "max_jobs"  # run --max-jobs N: N jobs submitted, the next one is left for a later run
    QUOTA = "quota"
    INTERRUPT = "interrupt"
    AUTH = "auth"

    @property
    def rank(self) -> int:
        return _STOP_RANK.index(self)

    @property
    def exit_code(self) -> ExitCode:
        return _STOP_EXIT[self]


_STOP_RANK = [StopReason.UNREACHABLE, StopReason.BACKEND_GONE, StopReason.CRASHED, StopReason.MAX_JOBS,
              StopReason.QUOTA,
              StopReason.INTERRUPT, StopReason.AUTH]
_STOP_EXIT = {
    StopReason.UNREACHABLE: ExitCode.FAILED,
    StopReason.BACKEND_GONE: ExitCode.FAILED,
    StopReason.CRASHED: ExitCode.FAILED,
    StopReason.MAX_JOBS: ExitCode.QUOTA,  # stops like a spent quota: run again to continue
    StopReason.QUOTA: ExitCode.QUOTA,
    StopReason.INTERRUPT: ExitCode.INTERRUPTED,
    StopReason.AUTH: ExitCode.USAGE,
}
