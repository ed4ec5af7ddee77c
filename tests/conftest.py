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
