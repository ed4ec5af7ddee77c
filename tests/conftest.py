"""Shared fixtures: the committed media fixtures and a real emulator on a free loopback port.

Area-specific helpers live in ``tests/_<area>.py`` modules next to their tests; only fixtures
that several areas share belong here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def ground_truth() -> dict[str, Any]:
    """What ``scripts/make_fixtures.py`` recorded about each fixture it wrote."""
    data: dict[str, Any] = json.loads((FIXTURES / "ground_truth.json").read_text())
    return data


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One emulator for the session, faults off: HTTP on 127.0.0.1, port chosen by the OS."""
    from seeknetic_prep.emulator import EmulatorConfig, running

    with running(EmulatorConfig(data_dir=tmp_path_factory.mktemp("emulator"))) as server:
        yield server


RAY_MODULES = {"test_ray_executor", "test_ray_node_lost", "test_ray_watchdog", "test_sources_ray"}
"""Modules whose every test drives Ray (the rest reach it only through a ``[ray]`` parameter)."""


def xdist_group(nodeid: str) -> str:
    """Which tests one pytest-xdist worker runs together, in order (``scripts/dev.py test``
    runs two workers): every test that starts or joins a Ray, so two Rays never start side by
    side on a 2-core machine; otherwise the test's module, so a module-scoped fixture (an
    emulator, a Ray cluster, media made once) is set up on one worker, not on each, and a
    module's tests keep their order (some read what an earlier one left in their emulator).
    """
    path, _, rest = nodeid.partition("::")
    params = rest[rest.index("[") + 1:-1].split("-") if rest.endswith("]") and "[" in rest else []
    return "ray" if Path(path).stem in RAY_MODULES or "ray" in params else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's scope scheduling with :func:`xdist_group`'s scopes. (Its own
    ``--dist loadgroup`` reads a mark into the test's id, which pytest 9.2 no longer lets it
    change: the marks were ignored and a module's tests split across workers.)"""
    from xdist.scheduler import LoadScopeScheduling

    class _Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return _Scheduling(config, log)
