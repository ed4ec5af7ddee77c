"""The end of a run, as the results see it: one call that leaves what the run did readable.

Why one function: a run's end has steps whose order matters -- the parts earlier runs never
wrote (killed with ``kill -9``) first, then this run's own part (whose embeddings the state then
forgets), then older parts rid of the rows it superseded (their embeddings, if held nowhere
else, back to the state), once for a state of an older version the hand-over of every
embedding its parts hold, then the search matrix grown by the new part -- and the driver used
to take them itself, so the pipeline imported the
search index (and, with it, a POSIX-only lock). Now the pipeline knows one name from this
package, :func:`finalize_run`, and what a run leaves behind can change here alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from seeknetic_prep.results.current import drop_superseded
from seeknetic_prep.results.embeddings import hand_over
from seeknetic_prep.results.index import follow_rewrites, update_index
from seeknetic_prep.results.part_rows import append_results_part, ensure_parts
from seeknetic_prep.results.parts import SERVICES, list_parts
from seeknetic_prep.state.store import Store

__all__ = ["finalize_run"]


def finalize_run(store: Store, out: Path, run_id: int, *,
                 services: Sequence[str] = SERVICES) -> Path | None:
    """Write run ``run_id``'s Parquet part (and any an earlier run left unwritten), then let
    search see its windows. Call it once the run stopped writing, also after an interrupt.

    Cost follows what the run did, not the history: the part holds only the windows and paths
    the run touched, an older part is written again only when the run superseded one of its
    rows (one read of every part's key columns finds them), and the search matrix is appended
    to, not rebuilt.

    Args:
        store: the run's state.
        out: the run's output folder (parts in ``out/parts``, the index in ``out/search``).
        run_id: from :meth:`Store.start_run`.
        services: the services a failed file is reported failed for.

    Returns:
        The run's new part, or ``None`` when it finished nothing (the index is then left alone).

    Raises:
        StateError: the state cannot be read, or the part's embeddings have another size than
            the index's.
    """
    written = ensure_parts(store, out, services=services, exclude=[run_id])
    part = append_results_part(store, out, run_id, services=services)
    # parts/ as one dataset: no part keeps a row this run superseded (see .current)
    follow_rewrites(out, drop_superseded(out, [*written, *([part] if part is not None else [])],
                                         keep=store.keep_embeddings))
    hand_over(store, list_parts(out))  # once per state: one written before schema 4 kept them all
    if part is not None or written:
        update_index(out)
    return part
