"""``--executor ray`` over a bucket: a two-node Ray cluster on loopback reads the objects
itself from moto's S3 server (no shared filesystem), and its results equal the local engine's
on the same files from disk."""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: stay on loopback

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from _pipeline_helpers import read_results
from _sources_helpers import forget_clients, s3_env, s3_server

from seeknetic_prep.api.client import Client, RetryPolicy
from seeknetic_prep.pipeline.driver import RunOptions, run_folder

FAST = RetryPolicy(max_attempts=8, base_delay_s=0.02, max_delay_s=0.5)
FILES = ("demo/lake.mp4", "vfr.mp4", "late_audio_25s.mkv", "bad/not_media.mp4")


@pytest.fixture(scope="module")
def bucket_and_cluster(fixtures_dir: Path) -> Iterator[Any]:
    """moto's server with the files in ``s3://vids/ray/``, then (so that its nodes get the AWS
    variables from their start) a head and a second node, one CPU each, on 127.0.0.1."""
    import boto3
    import ray
    from ray.cluster_utils import Cluster

    with s3_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        for name, value in s3_env(endpoint).items():
            mp.setenv(name, value)
        forget_clients()
        client = boto3.client("s3")
        client.create_bucket(Bucket="vids")
        for name in FILES:
            client.upload_file(str(fixtures_dir / name), "vids", f"ray/{Path(name).name}")
        started = time.monotonic()
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
        try:
            c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            c.wait_for_nodes()
            print(f"ray cluster up in {time.monotonic() - started:.1f} s")
            yield c
        finally:
            if ray.is_initialized():
                ray.shutdown()
            c.shutdown()
            forget_clients()


def _rows(out: Path) -> list[tuple[Any, ...]]:
    return sorted((x["request_id"] or "", x["start_ms"] or 0, x["end_ms"] or 0,
                   tuple(x["frame_times_ms"] or ()), x["status"], json.dumps(x.get("embedding")),
                   json.dumps(x.get("tags"), sort_keys=True), Path(x["path"]).name, x["service"])
                  for x in read_results(out))


@pytest.mark.slow
def test_ray_over_a_bucket_equals_local_from_disk(bucket_and_cluster: Any, fixtures_dir: Path,
                                                  tmp_path: Path) -> None:
    from seeknetic_prep.emulator import EmulatorConfig, running
    from seeknetic_prep.executors.ray import RayExecutor

    folder = tmp_path / "videos"
    folder.mkdir()
    for name in FILES:
        shutil.copy(fixtures_dir / name, folder / Path(name).name)
    with running(EmulatorConfig(data_dir=tmp_path / "emu1")) as server, \
            Client(server.api_key, base_url=server.base_url, retry=FAST) as c:
        engine = RayExecutor(bucket_and_cluster.address, client=c.worker_config())
        remote = run_folder(["s3://vids/ray/"], out=tmp_path / "ray", client=c, executor=engine)
    with running(EmulatorConfig(data_dir=tmp_path / "emu2")) as server, \
            Client(server.api_key, base_url=server.base_url, retry=FAST) as c:
        local = run_folder([folder], out=tmp_path / "local", client=c, options=RunOptions(workers=0))
    assert remote.files_ok == local.files_ok == 3 and remote.files_failed == local.files_failed == 1
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
