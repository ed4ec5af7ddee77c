"""The Ray engine: plan and decode as Ray tasks on a cluster's nodes, each window uploaded from
the node that decoded it.

Why each piece is shaped as it is (after Ray's own design patterns):

* **decode is a streaming generator task** (``num_returns="streaming"``): a task yields each
  window as soon as it is decoded and uploaded, and Ray pauses it while
  ``_WINDOWS_BUFFERED`` of its windows are not yet pulled by the driver
  (``_generator_backpressure_num_objects``), so a slow driver slows the decoders instead of
  filling the object store;
* **tensor bytes stay on the node**: the task uploads each window's bodies itself, with the
  :class:`~seeknetic_prep.api.uploader.NodeUploader` the driver ships it (a client built in the
  worker from :class:`~seeknetic_prep.api.client.ClientConfig`), and yields the window with its
  r2 keys (``EncodedWindow.uploaded``) and no bodies. Upload bandwidth grows with the nodes; the
  driver only sees keys and frame times. A body whose upload fails in the worker is handed back
  as a body, and the driver's upload stage applies the run's retry, halt and failure rules to
  it, as for the local engine;
* **exactly once stays on the driver**: workers never submit a job and never touch the state
  database. A task Ray re-runs after a worker or node died may deliver a window twice; it was
  uploaded twice (idempotent) and the ledger's ``claim`` submits it once;
* **bounded in flight**: at most ``capacity`` tasks (2 per cluster CPU, capped), pulled with
  ``ray.wait``; with the per-task bound on unpulled windows the driver's memory is flat;
* **one --qps budget**: the workers' uploads share one pacer actor (the client's own
  :class:`~seeknetic_prep.api.pacing.TokenBucket` in an actor, handing out waits, so nodes'
  clocks never need to agree); the driver's own calls (submit, poll) are paced by its client's
  bucket. :func:`share_qps` splits the budget between the two;
* **one --max-upload-mbps cap**: a second actor holds a
  :class:`~seeknetic_prep.api.pacing.ByteBucket`; every node's uploads and the driver's own
  draw from it in leases (:class:`_SharedBytes`), so the cluster's uplink use stays under it.

Ray is imported only when this engine is built; without it, ``--executor ray`` is one line
saying how to install it (exit 2).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from seeknetic_prep.api.client import ClientConfig
from seeknetic_prep.api.pacing import ByteBucket, TokenBucket, mbps_to_bytes
from seeknetic_prep.api.uploader import NodeUploader
from seeknetic_prep.errors import EngineLostError, InvalidArgumentError, MediaError
from seeknetic_prep.executors.base import Event, Executor, PlanTask, Task, TaskFailed, to_event
from seeknetic_prep.executors.registry import EngineFactory
from seeknetic_prep.pipeline.tasks import DecodeTask, Message

if TYPE_CHECKING:
    from seeknetic_prep.pipeline.spec import RunSpec

__all__ = ["INSTALL_HINT", "RayExecutor", "import_ray", "share_qps"]

INSTALL_HINT = '--executor ray needs Ray: pip install "seeknetic-prep[ray]"'
_MAX_CAPACITY = 256
_WINDOWS_BUFFERED = 2
_MAX_RETRIES = 2
_WORKER_QPS_SHARE = 1 / 3  # per unit: one upload (workers) vs a submission and a poll or two (driver)
_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


def import_ray(address: str | None = None) -> Any:
    """``import ray``, or :class:`InvalidArgumentError` with how to install it.

    For a Ray started here or one on a loopback address, Ray is told to stay on loopback
    (by default it advertises the machine's network address even for a one-machine Ray).
    """

    if "ray" not in sys.modules and (address in (None, "local") or str(address).startswith(_LOOPBACK)):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        # Ray: an optional extra, loaded by the engine that uses it (a clear line if missing)
        import ray
    except ImportError as exc:
        raise InvalidArgumentError(INSTALL_HINT) from exc
    return ray


def _reachable(target: str) -> None:
    """One TCP connection to the head: a wrong address is one clear line, at once."""
    if target in ("local", "auto"):
        return
    host, sep, port = target.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidArgumentError(
            f"Invalid Ray address {target!r}: expected HOST:PORT (as `ray start --head` printed it).")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise InvalidArgumentError(
            f"Cannot reach the Ray cluster at {target!r}: {exc.strerror or exc}. Check --ray-address "
            "/ RAY_ADDRESS (the head's address, as `ray start --head` printed it).") from exc


def share_qps(qps: float | None) -> tuple[float | None, float | None]:
    """Split one ``--qps`` budget into (the driver's, the workers' together): a third to the
    uploads, two thirds to the driver's submissions, polls and lookups."""
    if qps is None:
        return None, None
    return qps * (1 - _WORKER_QPS_SHARE), qps * _WORKER_QPS_SHARE


# ------------------------------------------------------------------ what runs on the workers

class _Pacer:
    """The cluster's upload budget (a Ray actor): a :class:`TokenBucket` whose slots are handed
    out as waits, so no clock is compared across nodes."""

    def __init__(self, rate: float) -> None:
        self.bucket = TokenBucket(rate)

    def reserve(self) -> float:
        return self.bucket.reserve()


class _BytePacer:
    """The cluster's byte cap (a Ray actor): a :class:`ByteBucket` handing out waits."""

    def __init__(self, rate: float) -> None:
        self.bucket = ByteBucket(rate)

    def reserve(self, count: int) -> float:
        return self.bucket.reserve(count)

    def reserved(self) -> int:
        """Bytes handed out so far, to every node and the driver."""
        return self.bucket.reserved


class _SharedBytes:
    """A node's (or the driver's) view of the cluster's byte cap.

    Asking an actor for each 16 KiB block would cost more than sending it at a few hundred
    Mbit/s, so the cap is taken in leases (about 50 ms of the whole rate, 64 KiB to 1 MiB)
    spent locally; a lease's wait is served before its first byte goes, so the cluster is never
    ahead of the cap by more than a lease per sender. If the actor cannot be reached (its node
    died), the sender paces itself at the whole rate rather than stop the task.
    """

    def __init__(self, pacer: Any, rate: float) -> None:
        self.pacer = pacer
        self.rate = rate
        self.lease = int(min(1 << 20, max(64 << 10, rate * 0.05)))
        self._credit = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"pacer": self.pacer, "rate": self.rate}  # a lease is the sender's own

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["pacer"], state["rate"])  # type: ignore[misc]

    def reserve(self, count: int) -> float:
        with self._lock:
            if self._credit >= count:
                self._credit -= count
                return 0.0
            take = max(self.lease, count)
            self._credit += take - count
        # Ray: an optional extra, loaded by the engine that uses it
        import ray

        try:
            return float(ray.get(self.pacer.reserve.remote(take), timeout=30))
        except ray.exceptions.RayError:
            return take / self.rate


class _SharedRate:
    """A worker's view of the pacer (its uploader's rate limit). If the pacer cannot be reached
    (its node died), the worker paces itself at the whole budget rather than stop the task."""

    def __init__(self, pacer: Any, rate: float) -> None:
        self.pacer = pacer
        self.rate = rate

    def reserve(self) -> float:
        # Ray: an optional extra, loaded by the engine that uses it
        import ray

        try:
            return float(ray.get(self.pacer.reserve.remote(), timeout=30))
        except ray.exceptions.RayError:
            return 1.0 / self.rate


def _plan_task(task: PlanTask) -> Message:
    (message,) = task.messages()  # a plan task says one thing: planned or failed
    return message


def _decode_task(task: DecodeTask, uploader: NodeUploader | None, threads: int) -> Iterator[Message]:
    from seeknetic_prep.pipeline.worker import configure  # PyAV: on the node, never the driver
    from seeknetic_prep.util.malloc import keep_freed_buffers

    keep_freed_buffers()  # once per Ray worker process: see seeknetic_prep.util.malloc
    configure(decode_threads=threads)
    for kind, payload in task.messages():
        if kind == "window" and uploader is not None and not uploader.gave_up and payload.bodies:
            done, left = uploader.upload(payload.bodies)  # a failure: the rest go to the driver
            payload = replace(payload, bodies=left, uploaded=done)
        yield kind, payload


# ------------------------------------------------------------------ the driver's side

class RayExecutor(Executor):
    """Plan and decode tasks on a Ray cluster.

    Args:
        address: the cluster (``host:port`` or ``ray://...``); default ``RAY_ADDRESS``, else a
            Ray started on this machine for the run (and shut down by :meth:`close`). If this
            process is already connected to Ray, that connection is used and left open.
        client: how workers build their upload client (:meth:`Client.worker_config`); None:
            windows come back with their bodies and the driver uploads them.
        qps: requests per second all workers' uploads share (see :func:`share_qps`).
        max_upload_mbps: one cap on the bytes the workers and the driver send, together.
        threads: FFmpeg threads per decode task (each task asks Ray for one CPU).
        max_retries: how often Ray re-runs a task whose worker or node died.

    Raises:
        InvalidArgumentError: Ray is not installed, or the cluster cannot be reached.
    """

    def __init__(self, address: str | None = None, *, client: ClientConfig | None = None,
                 qps: float | None = None, threads: int = 1, max_retries: int = _MAX_RETRIES,
                 local_cpus: int | None = None, max_upload_mbps: float | None = None) -> None:
        target = address or os.environ.get("RAY_ADDRESS") or "local"
        ray = import_ray(target)
        self._ray = ray
        self._connected = False
        self._closed = False
        if not ray.is_initialized():
            _reachable(target)  # Ray itself retries an unreachable head for minutes, silently
            options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            if target == "local":
                options.update(include_dashboard=False, num_cpus=local_cpus)
            try:
                ray.init(address=target, **options)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise InvalidArgumentError(
                    f"Cannot reach the Ray cluster at {target!r}: {exc}. Check --ray-address / "
                    "RAY_ADDRESS (the head's address, as `ray start --head` printed it)."
                ) from exc
            self._connected = True
        self.started_local = target == "local" and self._connected
        self._watchdog = _watch_local_ray(ray) if self.started_local else None
        self._threads = threads
        self._max_retries = max_retries
        self._pacer = (ray.remote(num_cpus=0, max_restarts=-1)(_Pacer).remote(qps)
                       if client is not None and qps else None)
        self._byte_pacer = None
        if max_upload_mbps is not None:
            rate = mbps_to_bytes(max_upload_mbps)
            self._byte_pacer = ray.remote(num_cpus=0, max_restarts=-1)(_BytePacer).remote(rate)
            self.upload_bandwidth = _SharedBytes(self._byte_pacer, rate)
        self._uploader = None if client is None else NodeUploader(
            client, _SharedRate(self._pacer, qps) if self._pacer is not None and qps else None,
            None if self._byte_pacer is None else _SharedBytes(self._byte_pacer, rate))
        self._plan = ray.remote(num_cpus=1, max_retries=max_retries)(_plan_task)
        self._decode = ray.remote(num_cpus=1, max_retries=max_retries, num_returns="streaming",
                                  _generator_backpressure_num_objects=_WINDOWS_BUFFERED)(_decode_task)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = max(2, min(_MAX_CAPACITY, 2 * cpus))
        self._running: dict[Any, Task] = {}

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def submit(self, task: Task) -> None:
        if self._closed:
            raise RuntimeError("submit on a closed executor")
        if isinstance(task, PlanTask):
            handle = self._plan.remote(task)
        else:
            handle = self._decode.remote(task, self._uploader, self._threads)
        self._running[handle] = task

    def events(self, timeout: float) -> list[Event]:
        if not self._running:
            return []
        ray = self._ray
        out: list[Event] = []
        wait_s: float = timeout
        while self._running and len(out) < 64:
            handles = list(self._running)
            ready, _ = ray.wait(handles, num_returns=1, timeout=wait_s, fetch_local=False)
            if not ready:
                break
            ready, _ = ray.wait(handles, num_returns=len(handles), timeout=0, fetch_local=False)
            for handle in ready:
                self._pull(handle, out)
            wait_s = 0
        return out

    def _pull(self, handle: Any, out: list[Event]) -> None:
        ray = self._ray
        task = self._running[handle]
        try:
            if isinstance(task, PlanTask):
                kind, payload = ray.get(handle)
            else:
                try:
                    ref = next(handle)
                except StopIteration:  # ended without a last word: only after a cancel
                    del self._running[handle]
                    out.append(self._crashed(task, "the task ended without a result"))
                    return
                kind, payload = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # our code raised something not ours: a bug
            raise RuntimeError(f"a Ray task hit a bug on {task.path}:\n{exc}") from exc
        except (ray.exceptions.LocalRayletDiedError, ray.exceptions.RaySystemError) as exc:
            # This node's raylet is gone (an agent it needs was killed): not this file's fault,
            # and every task in flight meets the same, so the run stops, its files untouched.
            raise EngineLostError(
                f"the Ray node of this run died ({type(exc).__name__}: its raylet, or an agent it "
                f"depends on, was killed)") from exc
        except ray.exceptions.RayError as exc:  # the worker or its node died, after Ray's retries
            del self._running[handle]
            out.append(self._crashed(task, type(exc).__name__))
            return
        if kind != "window":
            del self._running[handle]
        out.append(to_event(task, kind, payload))

    def _crashed(self, task: Task, why: str) -> TaskFailed:
        what = "probing" if isinstance(task, PlanTask) else "decoding"
        return TaskFailed(task, MediaError(
            task.path, f"the Ray worker died while {what} this file ({why}), "
            f"{1 + self._max_retries} times"), crashed=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        for handle in self._running:
            # already finished, or a kind Ray cannot force-cancel: the shutdown below ends it
            with contextlib.suppress(ValueError, TypeError, ray.exceptions.RayError):
                ray.cancel(handle, force=True)
        self._running.clear()
        for actor in (self._pacer, self._byte_pacer):
            if actor is not None:
                with contextlib.suppress(ValueError, ray.exceptions.RayError):
                    ray.kill(actor)
        if self._connected:
            ray.shutdown()  # ends this driver's job (its tasks too); stops a Ray started here
        if self._watchdog is not None:  # its Ray is stopped: nothing left to watch
            self._watchdog.kill()
            self._watchdog.wait()


def _watch_local_ray(ray: Any) -> Any:
    """A watchdog (:mod:`seeknetic_prep.util.watchdog`) that stops the Ray this run started if
    the run is killed without stopping it; None if Ray's processes cannot be found."""
    from seeknetic_prep.util.watchdog import watch

    try:  # Ray does not say which processes it started but in its node object
        node = ray._private.worker._global_node
        pids = [info.process.pid for infos in node.all_processes.values() for info in infos]
    except (AttributeError, TypeError):
        return None
    return watch(os.getpid(), pids)


class RayEngine(EngineFactory):
    """``--executor ray``: :class:`RayExecutor` on ``spec.executor_address`` (default
    ``RAY_ADDRESS``, else a Ray started here); nodes upload what they decode."""

    def prepare(self, spec: RunSpec) -> None:
        import_ray(spec.executor_address or os.environ.get("RAY_ADDRESS"))  # missing Ray: one line

    def share_qps(self, qps: float | None) -> tuple[float | None, float | None]:
        return share_qps(qps)

    def create(self, spec: RunSpec, *, client: ClientConfig | None, node_qps: float | None) -> Executor:
        return RayExecutor(spec.executor_address, client=client, qps=node_qps,
                           max_upload_mbps=spec.max_upload_mbps)


ENGINE = RayEngine()
