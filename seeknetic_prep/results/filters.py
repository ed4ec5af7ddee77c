"""Tag filters over a run's windows: ``--tag NAME=VALUE`` and ``--where "NAME OP VALUE"``.

A filter is checked against what it can match before it runs, so that a typo never reads as
"0 of N": an unknown tag names the tags there are, a categorical value that neither the API
(:data:`seeknetic_prep.api.tags.CATEGORIES`) nor these results know lists the real ones, a
comparison on a categorical tag or a non-number for a numeric one says so. A valid filter that
matches nothing is a valid answer. Categorical values compare case-insensitively; numeric
tags (the typed float and integer columns, and numbers among the tags outside them) with
``= != < <= > >=``.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from seeknetic_prep.api.tags import CATEGORIES
from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.results.parts import TAG_TYPES

__all__ = ["Condition", "conditions", "filter_mask", "parse_tag_filters", "parse_where"]

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_PC_OPS = {"=": pc.equal, "==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
           ">": pc.greater, ">=": pc.greater_equal}
_WHERE = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(>=|<=|!=|==|=|>|<)\s*(.*?)\s*$")
_EXAMPLE = "e.g. shot_size=wide_shot or brightness>0.5"


@dataclass(frozen=True)
class Condition:
    """``name op value``: one filter every kept window passes."""

    name: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_tag_filters(specs: Iterable[str]) -> dict[str, str]:
    """``["shot_size=close_up", ...]`` -> ``{"shot_size": "close_up"}``.

    Raises:
        InvalidArgumentError: a spec without ``=``, or one tag given two values (a window has
            one value per tag: the last used to win silently).
    """
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip():
            raise InvalidArgumentError(
                f"Invalid tag filter {spec!r}: must be NAME=VALUE, e.g. shot_size=wide_shot.")
        name, value = name.strip(), value.strip()
        if name in out and out[name].lower() != value.lower():
            raise InvalidArgumentError(
                f"Invalid tag filters {name}={out[name]!r} and {name}={value!r}: a window has one "
                f"value per tag, so no window matches both; give --tag {name}= once."
            )
        out[name] = value
    return out


def parse_where(specs: Iterable[str]) -> list[Condition]:
    """``["brightness > 0.5", "shot_size!=close_up"]`` -> conditions.

    Raises:
        InvalidArgumentError: a spec that is not ``NAME OP VALUE`` (the message shows one that is).
    """
    out = []
    for spec in specs:
        m = _WHERE.match(spec)
        if m is None or not m.group(3):
            raise InvalidArgumentError(
                f"Invalid --where {spec!r}: must be NAME OP VALUE with OP one of = != < <= > >=, {_EXAMPLE}.")
        out.append(Condition(m.group(1), m.group(2), m.group(3)))
    return out


def filter_mask(table: pa.Table, conditions: Sequence[Condition]) -> np.ndarray:
    """Rows that pass every condition, as a boolean array.

    Raises:
        InvalidArgumentError: a condition that can match nothing by construction (see the
            module docstring); the message lists what it could be.
    """
    mask = np.ones(table.num_rows, dtype=bool)
    extras: dict[str, list[Any]] | None = None
    for cond in conditions:
        if cond.name in TAG_TYPES:
            hit = _column_match(table, cond)
        else:
            extras = _extras(table) if extras is None else extras
            if cond.name not in extras:
                known = ", ".join(sorted({*TAG_TYPES, *extras}))
                raise InvalidArgumentError(f"Unknown tag {cond.name!r} in {str(cond)!r}: the results have "
                                           f"{known} (--list-tags shows their values).")
            hit = _extra_match(extras[cond.name], cond)
        mask &= hit
    return mask


def _number(cond: Condition) -> float:
    try:
        value = float(cond.value)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise InvalidArgumentError(
            f"Invalid filter {str(cond)!r}: {cond.name} is a number, so the value must be one (e.g. 0.5).")
    return value


def _column_match(table: pa.Table, cond: Condition) -> np.ndarray:
    column = table[cond.name]
    if pa.types.is_string(column.type):
        if cond.op not in ("=", "==", "!="):
            raise InvalidArgumentError(f"Invalid filter {str(cond)!r}: {cond.name} is a category; compare it "
                                       "with = or != (numbers take < <= > >=).")
        _check_category(column, cond)
        hit = _PC_OPS[cond.op](pc.utf8_lower(column), cond.value.lower())
    else:
        hit = _PC_OPS[cond.op](column, _number(cond))
    return np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), dtype=bool)


def _check_category(column: pa.ChunkedArray, cond: Condition) -> None:
    """A value neither the API nor these results know is a typo: refuse it with the real ones."""
    documented = CATEGORIES.get(cond.name, ())
    present = {str(v) for v in pc.unique(column.drop_null()).to_pylist()}
    if cond.value.lower() in {v.lower() for v in (*documented, *present)}:
        return
    counts = {c["values"]: int(c["counts"]) for c in pc.value_counts(column.drop_null()).to_pylist()}
    values = [*documented, *sorted(present - set(documented))]
    listed = ", ".join(f"{v} ({counts.get(v, 0)})" for v in values)
    raise InvalidArgumentError(f"Unknown value {cond.value!r} for tag {cond.name}: its values are {listed} "
                               "(windows with each in these results).")


def _extras(table: pa.Table) -> dict[str, list[Any]]:
    """The tags outside the typed columns: each name with its value per row (None where absent)."""
    rows = table["tags_extra"].to_pylist()
    parsed = [json.loads(text) if text else {} for text in rows]
    names = {k for p in parsed for k in p}
    return {name: [p.get(name) for p in parsed] for name in names}


def _extra_match(values: list[Any], cond: Condition) -> np.ndarray:
    op = _OPS[cond.op]
    numeric = cond.op not in ("=", "==", "!=")
    want: Any = _number(cond) if numeric else cond.value.lower()
    out = np.zeros(len(values), dtype=bool)
    for i, have in enumerate(values):
        items = have if isinstance(have, list) else [have]
        if numeric:
            out[i] = any(isinstance(v, (int, float)) and not isinstance(v, bool) and op(v, want)
                         for v in items)
        elif cond.op == "!=":
            out[i] = have is not None and all(str(v).lower() != want for v in items)
        else:
            out[i] = any(v is not None and str(v).lower() == want for v in items)
    return out


def conditions(tags: Mapping[str, str] | None, where: Sequence[Condition] = ()) -> list[Condition]:
    """``--tag`` filters (equality) and ``--where`` conditions as one list."""
    return [Condition(name, "=", value) for name, value in (tags or {}).items()] + list(where)
