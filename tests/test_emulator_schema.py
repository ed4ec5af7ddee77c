"""Schemathesis against the emulator's own ``/openapi.json``, over real HTTP, faults off: no 5xx.

Cases come from each operation's hypothesis strategy, in both positive (schema-valid) and
negative (schema-breaking) modes. schemathesis' pytest plugin (``from_fixture``) does not run
under pytest 9, so the strategies are driven with ``hypothesis.given`` directly. Examples per
operation are bounded and derandomized so the run is repeatable and well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from seeknetic_prep.emulator import EmulatorConfig, EmulatorHandle, running

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (only once schemathesis is there)
from schemathesis import GenerationMode  # noqa: E402

EXAMPLES = 30


@pytest.fixture(scope="module")
def schema_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    config = EmulatorConfig(data_dir=tmp_path_factory.mktemp("schema"), job_seconds=0.05, max_body_mb=4)
    with running(config) as handle:
        yield handle


def _operations(server: EmulatorHandle) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_schema_lists_every_endpoint(schema_server: EmulatorHandle) -> None:
    labels = {op.label for op in _operations(schema_server)}
    assert labels == {
        "POST /files/upload/tensors",
        "POST /video_embedding/encode_video/async",
        "POST /video_tagging/async",
        "GET /async_status/{request_id}",
        "POST /video_embedding/encode_text",
        "GET /_emulator/stats",
    }


@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
def test_no_server_errors(schema_server: EmulatorHandle, mode: Any) -> None:
    seen: dict[str, set[int]] = {}
    for operation in _operations(schema_server):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            headers = {**(case.headers or {}), "X-API-Key": schema_server.api_key}
            response = case.call(base_url=schema_server.base_url, headers=headers, timeout=30)
            seen.setdefault(case.operation.label, set()).add(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
            )
            if response.status_code >= 400:
                assert "detail" in response.json()

        check()
    print(f"\nschemathesis {mode.value}: statuses per operation {seen}")
    assert len(seen) == 6
    assert not schema_server.faults.injected
