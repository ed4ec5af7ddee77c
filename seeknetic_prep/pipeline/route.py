"""Where each event of the decode engine goes: the ledger first, then the next stage.

The driver (:mod:`.driver`) feeds the engine and decides when the run is over; this is the other
half of its loop, kept apart so the rules of one event can be read in one place: a plan is
admitted by the ledger (its decode tasks queued, its units with keys submitted, its submitted
units polled), a decoded window's bodies go to the upload stage once the ledger claims each
request id, a failed task is recorded as the file's or the content's failure, and a window's
thumbnails are kept for the report. A claim the ledger refuses is a unit some stage already
holds: nothing goes anywhere twice.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace

from seeknetic_prep.errors import StateError
from seeknetic_prep.executors import Event, Planned, PlanTask, TaskDone, TaskFailed, WindowReady
from seeknetic_prep.pipeline.inputs import known_row
from seeknetic_prep.pipeline.ledger import Ledger, Work
from seeknetic_prep.pipeline.poll import PollStage
from seeknetic_prep.pipeline.spec import RunOptions
from seeknetic_prep.pipeline.tally import Totals
from seeknetic_prep.pipeline.tasks import DecodeTask, is_environmental
from seeknetic_prep.pipeline.upload import UploadStage
from seeknetic_prep.sources import redact
from seeknetic_prep.state.store import Store
from seeknetic_prep.state.thumbs import ThumbStore

__all__ = ["Router", "Stopping"]

log = logging.getLogger(__name__)


class Stopping(Exception):
    """The run is stopping (its flag is set): the driver's loop ends and closes out."""


class Router:
    """Routes the engine's events of one run to its ledger and stages."""

    def __init__(self, *, store: Store, ledger: Ledger, totals: Totals, uploads: UploadStage,
                 polls: PollStage, thumbs: ThumbStore, options: RunOptions,
                 listed: dict[str, tuple[int, int]]) -> None:
        self.store, self.ledger, self.totals = store, ledger, totals
        self.uploads, self.polls, self.thumbs = uploads, polls, thumbs
        self.opt = options
        self.listed = listed  # what a listing said of each URL: size and version tag

    def skip_known(self, path: str) -> bool:
        """A file the state has finished is counted from it, with no probe (see
        :func:`~seeknetic_prep.pipeline.inputs.known_row`)."""
        row = known_row(self.store, path, self.listed, self.opt.services)
        if row is None:
            return False
        self.ledger.known(redact(path), row)
        self.totals.probed(path)
        return True

    def route(self, event: Event, backlog: deque[DecodeTask]) -> None:
        """Act on one event; a planned file's decode tasks join ``backlog``, which the driver
        feeds to the engine as it has room (so plans run ahead of decoding, not the reverse).

        Raises:
            Stopping: the upload stage refused an item because the run is stopping.
        """
        if isinstance(event, WindowReady):
            window, fp = event.window, event.task.fingerprint
            if window.wanted:
                self.ledger.window_decoded(fp, window.decoder)
            if window.thumbs:
                self.keep_thumbs(fp, window.index, window.thumbs)
            for service, rid, body in window.bodies:
                if self.ledger.claim(rid):
                    self._put(Work(rid, service, fp, body=body, frame_times_ms=window.frame_times_ms,
                                   lookup=self.ledger.needs_lookup(rid)))
            for service, rid, keys in window.uploaded:
                if self.ledger.claim(rid):
                    self.ledger.uploaded(rid, keys, window.frame_times_ms)
                    self._put(Work(rid, service, fp, r2_keys=keys, lookup=self.ledger.needs_lookup(rid)))
        elif isinstance(event, Planned):
            path = event.task.path  # a presigned URL's signature never reaches the state:
            admission = self.ledger.admit(redact(path), event.plan, resize=self.opt.resize,
                                          windows_per_task=self.opt.windows_per_task,
                                          decode=self.opt.decode)
            # ... only the decode tasks, which open it
            backlog.extend(replace(t, path=path) for t in admission.tasks)
            for work in admission.submit:
                self._put(work)
            for rid, service in admission.poll:
                self.polls.add(rid, service)
            jobs = sum(len(t.request_ids) for t in admission.tasks)
            jobs += len(admission.submit) + len(admission.poll)
            self.totals.probed(event.task.path, jobs=jobs)
        elif isinstance(event, TaskFailed):
            task = event.task
            if isinstance(task, PlanTask):
                self.ledger.file_failed(redact(task.path), str(event.error))
                self.totals.probed(task.path)
            else:
                self.ledger.content_failed(task.fingerprint, str(event.error),
                                           environmental=is_environmental(event.error))
        else:
            assert isinstance(event, TaskDone)

    def keep_thumbs(self, fp: str, index: int, jpegs: bytes) -> None:
        """Keep a window's thumbnails for ``report`` (which decodes again where one is missing)."""
        try:
            self.thumbs.put(fp, index, jpegs)
        except StateError as exc:  # a cache for the report (which then decodes): never the run's failure
            log.debug("%s", exc)

    def _put(self, work: Work) -> None:
        if not self.uploads.put(work):
            raise Stopping
