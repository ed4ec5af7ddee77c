"""``seeknetic-prep prune --out DIR``: forget the paths a run found gone, for good."""

from __future__ import annotations

import argparse
from pathlib import Path

from seeknetic_prep.util.outlock import OutLock
from seeknetic_prep.util.text import printable

HELP = ("Forget the paths a run found deleted or renamed away (status 'gone') for good, in the state "
        "and in parts/; their contents' jobs stay known, so the same bytes are never submitted again.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="seeknetic-out", type=Path,
                        help="the output folder of a run (default ./seeknetic-out)")


def main(args: argparse.Namespace) -> int:
    # SQLite, pyarrow: here, not at the top (cli imports every command module for its parser)
    from seeknetic_prep.results.parts import drop_paths
    from seeknetic_prep.state.store import Store, existing_state

    db = existing_state(args.out)
    with OutLock(args.out), Store(db) as store:  # not while a run writes the same state
        paths = store.gone_paths()
        # The parts first: a crash before the state is changed leaves them gone, and prune redoes it.
        rows = drop_paths(args.out, paths, keep=store.keep_embeddings)
        store.forget_gone(paths)
    print(printable(f"pruned {len(paths)} gone path(s) from {db} and {rows} row(s) from "
                    f"{args.out / 'parts'}"))
    return 0


__all__ = ["HELP", "add_arguments", "main"]
