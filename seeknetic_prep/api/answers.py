"""The door to the state: every ``async_status`` answer is checked before anything is kept.

Why once, here: a completed job's answer is stored in ``state.sqlite`` and copied into every
later Parquet part, so a value no column can hold (an embedding of 100 numbers, a tag of 2^63,
a NaN) does not fail its own job but every later ``run``, ``results`` and ``search``, and
``--retry-failed`` cannot reach it (the job counts as completed). An answer of the wrong shape
used to do worse: it killed the thread that polled it, or was asked again for an hour.

So :meth:`seeknetic_prep.client.Client.get_status` passes every answer through
:func:`check_status`, and a bad one becomes a :class:`~seeknetic_prep.errors.MalformedAnswerError`
whose message says what was wrong, in one line, for that job's failure::

    malformed answer: embedding has 100 numbers, expected 1024

What is refused is what the API's schema (``AsyncStatusRetrieveResponse``) rules out or what
our results cannot hold; what a newer API may plausibly add (another status word, another tag,
a nested tag value) passes, so this check never fails good jobs of a newer server.
"""

from __future__ import annotations

import math
from typing import Any

from seeknetic_prep.errors import MalformedAnswerError

__all__ = ["EMBEDDING_DIM", "check_embedding", "check_status"]

EMBEDDING_DIM = 1024
"""Numbers in an embedding: the width of the results' ``embedding`` column
(``results.DEFAULT_DIM``) and of the index that ``search`` ranks with."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(float32).max: an embedding is kept as float32
_REQUIRED = {"embedding": "embedding", "tagging": "tags"}


def check_status(answer: object, service: str | None = None) -> dict[str, Any]:
    """Return ``answer`` when it is an ``async_status`` answer the API can give, else raise.

    Always: a JSON object whose ``status`` is a string (an unknown word counts as still
    running: the job timeout still applies). Once ``completed``, for a job of ``service``
    (``None``: the answer's own ``task_type``): ``task_type``, when given, is that service; an
    embedding job has an ``embedding`` and a tagging job ``tags``; any ``embedding`` is exactly
    :data:`EMBEDDING_DIM` finite float32 numbers (:func:`check_embedding`); any ``tags`` is an
    object whose numbers are finite and whose integers fit in 64 bits, at any depth;
    ``model_name`` is a string or null.

    Raises:
        MalformedAnswerError: what is wrong, ``malformed answer: ...``, in one line.
    """
    if not isinstance(answer, dict):
        raise _bad(f"async_status answer is {_kind(answer)}, not an object")
    status = answer.get("status")
    if status is None:
        raise _bad("status is missing")
    if not isinstance(status, str):
        raise _bad(f"status is {_kind(status)}, not a string")
    if status != "completed":
        return answer
    task_type = answer.get("task_type")
    if task_type is not None and not isinstance(task_type, str):
        raise _bad(f"task_type is {_kind(task_type)}, not a string")
    if service is not None and task_type is not None and task_type != service:
        raise _bad(f"task_type is {task_type!r}, expected {service!r}")
    required = _REQUIRED.get(service or task_type or "")
    if required is not None and answer.get(required) is None:
        raise _bad(f"{required} is missing")
    if answer.get("embedding") is not None:
        check_embedding(answer["embedding"])
    if answer.get("tags") is not None:
        _check_tags(answer["tags"])
    model = answer.get("model_name")
    if model is not None and not isinstance(model, str):
        raise _bad(f"model_name is {_kind(model)}, not a string")
    return answer


def check_embedding(values: object, where: str = "embedding") -> list[float]:
    """``values`` as floats when they are exactly :data:`EMBEDDING_DIM` finite numbers that a
    float32 holds (1e39 would be kept as inf), else raise :class:`MalformedAnswerError`."""
    if not isinstance(values, list):
        raise _bad(f"{where} is {_kind(values)}, not an array of numbers")
    if len(values) != EMBEDDING_DIM:
        raise _bad(f"{where} has {len(values)} numbers, expected {EMBEDDING_DIM}")
    out: list[float] = []
    for i, x in enumerate(values):
        _check_number(x, f"{where}[{i}]", float32=True)
        out.append(float(x))
    return out


def _check_tags(tags: object) -> None:
    """Tags are an object of any JSON values (the API's schema says ``Dict[str, object]``), but
    every number in them, at any depth, must fit the Parquet columns and JSON: finite, and an
    integer within int64. Walked without recursion, so no nesting depth can break the walk."""
    if not isinstance(tags, dict):
        raise _bad(f"tags is {_kind(tags)}, not an object")
    todo: list[tuple[str, object]] = [(f"tags.{k}", v) for k, v in tags.items()]
    while todo:
        where, value = todo.pop()
        if isinstance(value, dict):
            todo.extend((f"{where}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            _check_number(value, where, float32=False)


def _check_number(x: object, where: str, *, float32: bool) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise _bad(f"{where} is {_kind(x)}, not a number")
    if isinstance(x, float):
        if math.isnan(x):
            raise _bad(f"{where} is NaN")
        if math.isinf(x):
            raise _bad(f"{where} is {'-' if x < 0 else ''}Infinity")
    elif not float32 and not _INT64_MIN <= x <= _INT64_MAX:
        raise _bad(f"{where} = {_digits(x)} does not fit in 64 bits")
    if float32 and not -_FLOAT32_MAX <= x <= _FLOAT32_MAX:
        raise _bad(f"{where} = {_digits(x) if isinstance(x, int) else f'{x:g}'} is outside float32's range")


def _digits(n: int) -> str:
    text = str(n)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"


def _kind(value: object) -> str:
    """A value's JSON kind, in the words of the message (``an array``, ``a string``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__  # not from JSON: a caller's own value


def _bad(reason: str) -> MalformedAnswerError:
    return MalformedAnswerError(f"malformed answer: {reason}")
