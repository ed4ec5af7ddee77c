"""The error tree: builtin kinds, exit codes, and errors that survive a process pool."""

from __future__ import annotations

import pickle

import pytest

from seeknetic_prep import errors as e


def test_every_error_is_rooted_and_builtin_kinds_hold() -> None:
    assert issubclass(e.MediaError, ValueError)
    assert issubclass(e.ValidationError, ValueError)
    assert issubclass(e.AuthenticationError, PermissionError)
    assert issubclass(e.APITimeoutError, TimeoutError)
    assert issubclass(e.APIConnectionError, ConnectionError)
    for name in e.__all__:
        obj = getattr(e, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, e.SeekneticPrepError), name


def test_one_exit_code_table_for_errors_and_stops() -> None:
    assert [int(c) for c in e.ExitCode] == [0, 1, 2, 3, 130]
    assert e.exit_code_for(e.InvalidArgumentError("x")) == e.ExitCode.USAGE
    assert e.exit_code_for(e.QuotaExceededError("x", status_code=402)) == e.ExitCode.QUOTA
    assert e.exit_code_for(e.MediaError("a.mp4", "truncated")) == e.ExitCode.FAILED
    assert {r: r.exit_code for r in e.StopReason} == {
        e.StopReason.UNREACHABLE: 1, e.StopReason.BACKEND_GONE: 1, e.StopReason.CRASHED: 1,
        e.StopReason.MAX_JOBS: 3, e.StopReason.QUOTA: 3, e.StopReason.INTERRUPT: 130, e.StopReason.AUTH: 2}
    ranked = sorted(e.StopReason, key=lambda r: r.rank)
    assert ranked[-1] == "auth" and ranked[0] == "unreachable"  # the most serious stop wins


@pytest.mark.parametrize(
    "exc",
    [
        e.MediaError("clip.mp4", "truncated: the data ends at 3.2 s"),
        e.InvalidArgumentError("Invalid start_ms -1: must be >= 0."),
        e.RateLimitError("429 slow down", detail={"detail": "x"}, request_id="r1", retry_after=2.5),
        e.ServerError("502 bad gateway", status_code=502, detail="upstream", request_id="r2"),
        e.APITimeoutError("no answer in 60 s", request_id="r3"),
    ],
)
def test_errors_pickle_with_their_attributes(exc: e.SeekneticPrepError) -> None:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert back.__dict__ == exc.__dict__


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (e.InvalidArgumentError("x"), 2),
        (e.AuthenticationError("x", status_code=401), 2),
        (e.OutputInUseError("another run (pid 1) is using out"), 2),
        (e.QuotaExceededError("x", status_code=402), 3),
        (e.MediaError("a", "b"), 1),
        (e.ServerError("x", status_code=500), 1),
    ],
)
def test_exit_codes(exc: e.SeekneticPrepError, code: int) -> None:
    assert e.exit_code_for(exc) == code


def test_status_classes() -> None:
    assert e.error_for_status(413) is e.PayloadTooLargeError
    assert e.error_for_status(504) is e.ServerError
    assert e.error_for_status(418) is e.APIStatusError
