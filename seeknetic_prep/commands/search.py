"""``seeknetic-prep search``: find windows in a run's results by text and/or tags."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

from seeknetic_prep.util.extras import require_emulator
from seeknetic_prep.util.text import printable

HELP = (
    "Rank the windows of a run's results (--out) by similarity to a text query (embedded by the "
    "API) and/or filter them by tags."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", nargs="?", default=None,
                        help="text to search for (omit to list the windows whose tags match)")
    parser.add_argument("--out", default="seeknetic-out", type=Path,
                        help="the run's output folder (default ./seeknetic-out)")
    parser.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE",
                        help="keep only windows with this tag value (repeatable, case-insensitive), "
                        "e.g. --tag shot_size=wide_shot; --list-tags shows the values")
    parser.add_argument("--where", action="append", default=[], metavar="'NAME OP VALUE'",
                        help="keep only windows whose tag compares so (repeatable; OP: = != < <= > >=), "
                        "e.g. --where 'brightness>0.5' --where 'scene_cuts>=1'")
    parser.add_argument("--list-tags", action="store_true",
                        help="print the tag names and the values that occur, then exit")
    parser.add_argument("--top", type=int, default=10, help="how many windows to show (default 10)")
    parser.add_argument("--json", action="store_true", help="one JSON object per hit instead of a table")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--ann", action="store_const", const="ann", dest="method", default="auto",
                     help='rank with the approximate index (needs pip install "seeknetic-prep[ann]"); '
                     "default: from 2,000,000 windows when installed")
    how.add_argument("--exact", action="store_const", const="exact", dest="method",
                     help="rank every window exactly, however many")
    parser.add_argument("--local", action="store_true",
                        help="embed the query with the built-in emulator (what `run --local` used)")
    parser.add_argument("--api-key", default=None, help="API key (default: $SEEKNETIC_API_KEY)")
    parser.add_argument("--base-url", default=None, help="API base URL (default: $SEEKNETIC_BASE_URL)")
    parser.add_argument("--region", default="tokyo", choices=("tokyo", "us", "cn"),
                        help="API region when no base URL is given (default tokyo)")


def sync_parts(out: Path) -> None:
    """Write the parts a run never wrote (killed, or a version-1 state), if there is a state.
    In a folder this user cannot write, say in one line what is left out instead."""
    db = out / "state.sqlite"
    if not db.exists():
        return
    # here, not at the top: cli imports every command module for its parser (pyarrow, SQLite)
    from seeknetic_prep.results.current import drop_superseded
    from seeknetic_prep.results.index import follow_rewrites
    from seeknetic_prep.results.part_rows import ensure_parts, missing_parts
    from seeknetic_prep.state.store import Store, reading_store
    from seeknetic_prep.util.readers import writable

    if writable(out / "parts") and writable(out):
        with Store(db) as store:
            written = ensure_parts(store, out)
            if written:  # a killed run's rows may supersede older ones
                follow_rewrites(out, drop_superseded(out, written, keep=store.keep_embeddings))
        return
    with reading_store(out) as store:
        missing = missing_parts(store, out)
    if missing:
        print(printable(f"note: {out} is read-only here: the results of {len(missing)} run(s) are in its "
                        "state but not in its parts (a run that was stopped hard), so they are left out; "
                        f"`seeknetic-prep results --out {out}` by the folder's owner writes them"),
              file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    # here, not at the top: cli imports every command module for its parser (requests, pyarrow)
    from seeknetic_prep.api.client import Client
    from seeknetic_prep.results.filters import conditions, filter_mask, parse_tag_filters, parse_where
    from seeknetic_prep.results.index import load_windows
    from seeknetic_prep.results.rank import list_tags, rank

    filters = conditions(parse_tag_filters(args.tag), parse_where(args.where))
    if args.local and args.query:  # say what to install before any work
        require_emulator("search --local")
    sync_parts(args.out)
    windows = load_windows(args.out)
    if args.list_tags:
        for name, values in list_tags(windows).items():
            if isinstance(values, tuple):
                print(printable(f"{name}: {values[0]} .. {values[1]}"))
            else:  # names and values come from the API: escaped (util.text)
                print(printable(f"{name}: " + ", ".join(f"{v} ({n})" for v, n in values)))
        return 0
    filter_mask(windows.table, filters)  # a filter that cannot match says so before the query costs a call
    query_vec: list[float] | None = None
    if args.query:
        with ExitStack() as stack:
            base_url, key = args.base_url, args.api_key
            if args.local:
                # FastAPI and uvicorn: only for --local
                from seeknetic_prep.emulator import running

                server = stack.enter_context(running())
                base_url, key = server.base_url, server.api_key
            client = stack.enter_context(Client(key, base_url=base_url, region=args.region))
            query_vec = client.encode_text(args.query)
    hits, matched = rank(windows, query_vec, where=filters, top=args.top, method=args.method)
    for hit in hits:
        if args.json:
            print(json.dumps({"path": hit.path, "start_ms": hit.start_ms, "end_ms": hit.end_ms,
                              "score": hit.score, "tags": dict(hit.tags)}))
            continue
        score = "      " if hit.score is None else f"{hit.score:+.3f}"
        # Categorical tags only: the measurements are in --json.
        tags = ", ".join(f"{k}={v}" for k, v in sorted(hit.tags.items()) if isinstance(v, str))
        span = f"[{hit.start_ms / 1000:.1f}-{hit.end_ms / 1000:.1f} s]"
        print(printable(f"{score}  {hit.path}  {span}  {tags}"))
    kind = "ranked" if query_vec is not None else "matching"
    print(printable(f"{len(hits)} of {matched} {kind} windows ({len(windows)} in {args.out})"),
          file=sys.stderr if args.json else sys.stdout)
    return 0


__all__ = ["HELP", "add_arguments", "main", "sync_parts"]
