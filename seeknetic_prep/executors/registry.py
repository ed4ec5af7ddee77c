"""Engines by name: ``make_executor(name, spec)`` and the ``seeknetic_prep.executors`` entry points.

A run names its engine (``--executor``); this module finds it. The two engines this package
ships are built in (``local``, ``ray``), and any installed distribution can add one by
declaring an entry point in the ``seeknetic_prep.executors`` group::

    [project.entry-points."seeknetic_prep.executors"]
    dask = "my_package.engine:ENGINE"      # an EngineFactory, or a plain create(spec, ...) function

so a third engine is one file plus its extra: ``--executor`` lists it, ``--executor-address``
reaches it, and the conformance suite (``tests/test_executor_contract.py``) runs on it. The
registry imports an engine's module only when that engine is asked for: Ray is never imported
by a run on the local engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from seeknetic_prep.errors import InvalidArgumentError

if TYPE_CHECKING:
    from seeknetic_prep.api.client import ClientConfig
    from seeknetic_prep.executors.base import Executor
    from seeknetic_prep.pipeline.spec import RunSpec

__all__ = ["GROUP", "EngineFactory", "engine", "executor_names", "make_executor"]

GROUP = "seeknetic_prep.executors"
_BUILTIN = {
    "local": "seeknetic_prep.executors.local:ENGINE",
    "ray": "seeknetic_prep.executors.ray:ENGINE",
}


class EngineFactory:
    """How the registry makes one engine for a run. Override :meth:`create`; the rest has
    defaults that suit an engine running on this machine."""

    def prepare(self, spec: RunSpec) -> None:
        """Check, before anything starts, what the engine needs (its extra installed, its
        address well formed); raise :class:`InvalidArgumentError` with one line if not."""
        if spec.executor_address is not None:
            raise InvalidArgumentError(
                f"Invalid --executor-address with --executor {spec.executor}: that engine runs on "
                "this machine; drop the address or pick an engine that takes one (ray).")

    def share_qps(self, qps: float | None) -> tuple[float | None, float | None]:
        """Split the run's one ``--qps`` budget into (the driver's, the engine's nodes'
        together); an engine whose nodes call no API gives all of it to the driver."""
        return qps, None

    def create(self, spec: RunSpec, *, client: ClientConfig | None, node_qps: float | None) -> Executor:
        """Start the engine for ``spec``. ``client``: how nodes build an upload client (None:
        windows come back with their bodies); ``node_qps``: the nodes' share of ``--qps``."""
        raise NotImplementedError


class _FunctionEngine(EngineFactory):
    """An entry point that is a plain ``create(spec, *, client, node_qps)`` function."""

    def __init__(self, create: Callable[..., Executor]) -> None:
        self._create = create

    def create(self, spec: RunSpec, *, client: ClientConfig | None, node_qps: float | None) -> Executor:
        return self._create(spec, client=client, node_qps=node_qps)


def _installed() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def executor_names() -> tuple[str, ...]:
    """Every engine a run may name: the built-in ones and those installed packages declare."""
    return tuple(sorted(set(_BUILTIN) | set(_installed())))


def engine(name: str) -> EngineFactory:
    """The factory of engine ``name`` (its module imported now).

    Raises:
        InvalidArgumentError: no engine has that name.
    """
    installed = _installed()
    loaded: Any
    if name in installed:
        loaded = installed[name].load()
    elif name in _BUILTIN:  # also from a source tree that was never pip-installed
        module, _, attr = _BUILTIN[name].partition(":")
        loaded = getattr(importlib.import_module(module), attr)
    else:
        raise InvalidArgumentError(
            f"Invalid executor {name!r}: must be one of {', '.join(executor_names())}.")
    if isinstance(loaded, EngineFactory):
        return loaded
    if isinstance(loaded, type) and issubclass(loaded, EngineFactory):
        return loaded()
    if callable(loaded):
        return _FunctionEngine(loaded)
    raise InvalidArgumentError(f"Invalid executor {name!r}: its entry point is not an engine ({loaded!r}).")


def make_executor(name: str, spec: RunSpec, *, client: ClientConfig | None = None,
                  node_qps: float | None = None) -> Executor:
    """Start engine ``name`` for ``spec`` (see :meth:`EngineFactory.create`).

    >>> from seeknetic_prep.pipeline.spec import RunSpec
    >>> with make_executor("local", RunSpec(workers=0)) as ex:   # one thread in this process
    ...     ex.capacity
    2
    """
    factory = engine(name)
    factory.prepare(spec)
    return factory.create(spec, client=client, node_qps=node_qps)
