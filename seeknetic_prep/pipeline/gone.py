"""Results that follow the folder: the recorded paths under a run's inputs that are no longer
there are marked ``gone``.

After a file is deleted or renamed, its old path used to stay in ``results``, ``search`` and
``report`` for good. Now each run compares what it found under its inputs with what the state
recorded there: a path that no longer exists (a local file), or that the listing no longer has
(an object under a URL prefix), is marked ``gone``; its part carries a tombstone row that hides
its older rows (:func:`seeknetic_prep.results.parts.compact`). Its fingerprint and its
content's units stay, so a file that comes back, or the same bytes under a new name, is not
submitted again. Paths outside this run's inputs are untouched: several folders may share one
out folder. ``seeknetic-prep prune`` forgets gone paths for good.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from seeknetic_prep.sources.urls import is_url
from seeknetic_prep.state.rows import path_bytes
from seeknetic_prep.state.store import Store

__all__ = ["sweep_gone"]


def sweep_gone(store: Store, inputs: Sequence[str], found: Iterable[str], *,
               extensions: frozenset[str], unlisted: Iterable[str] = ()) -> int:
    """Mark gone what ``store`` recorded under ``inputs`` that this run did not find; how many.

    Args:
        inputs: the run's paths, folders and URL prefixes, as given.
        found: what discovery found under them.
        extensions: the run's video extensions: an object under a prefix with another
            extension was not looked for, so its absence from the listing says nothing.
        unlisted: URL prefixes whose listing failed this time (nothing under them is judged).
    """
    seen = {path_bytes(p) for p in found}
    skip = {path_bytes(u) for u in unlisted}
    gone = []
    for item in inputs:
        root = path_bytes(item)
        if root in skip:
            continue
        for raw in store.live_paths_under(root):
            if raw in seen:
                continue
            if is_url(item):
                name = raw.decode("utf-8", "surrogateescape").split("?", 1)[0]
                if os.path.splitext(name)[1].lower() not in extensions:
                    continue
            elif os.path.lexists(os.fsdecode(raw)):  # there, but not looked for (extension, hidden)
                continue
            gone.append(raw)
    store.mark_gone(gone)
    return len(gone)
