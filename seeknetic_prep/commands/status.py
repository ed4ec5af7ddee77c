"""``seeknetic-prep status``: what a run's state database says, without touching the API."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from seeknetic_prep.util.text import printable

HELP = "Show a run's progress from --out: units by status, throughput so far, failed files with reasons."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="seeknetic-out", type=Path,
                        help="the output folder of a run (default ./seeknetic-out)")


def main(args: argparse.Namespace) -> int:
    # here, not at the top: cli imports every command module for its parser
    from seeknetic_prep.state.store import display_path, reading_store

    with reading_store(args.out) as store:
        db = store.path
        counts = store.counts()
        files = store.files()
        throughput = store.throughput()
        failed_units = store.units_with_status("failed")
    total = sum(counts.values())
    order = ("completed", "submitted", "uploaded", "planned", "failed")
    print(f"state: {printable(db)}")
    gone = sum(f.status == "gone" for f in files)
    print(f"files: {len(files)} paths ({sum(f.status == 'ok' for f in files)} preprocessed, "
          f"{sum(f.status == 'failed' for f in files)} failed"
          + (f", {gone} gone: deleted or renamed since; `seeknetic-prep prune` forgets them" if gone else "")
          + ")")
    print(f"jobs: {total} (" + ", ".join(f"{counts.get(s, 0)} {s}" for s in order) + ")")
    rates = throughput.rates()
    if rates is not None:
        print(f"throughput: {', '.join(rates)} over {throughput.runs} run(s), {throughput.busy_s:.1f} s")
    bad = [f for f in files if f.status == "failed"]
    if bad:
        print("failed files:")
        for f in bad:  # the path once: the reason may start with it, as typed
            print(f"  {printable(f'{f.display}: {display_path(f.reason)}')}")
    if failed_units:
        paths: dict[str | None, list[str]] = {}
        for f in files:  # one row per absolute path: a copy is listed, never counted twice
            paths.setdefault(f.fingerprint, []).append(f.display)
        print("failed jobs:")
        for u in failed_units[:50]:
            where = ", ".join(paths.get(u.fingerprint, ["?"]))
            print(printable(f"  {where} window {u.window_index} {u.service} ({u.request_id}): {u.error}"))
        if len(failed_units) > 50:
            print(f"  ... and {len(failed_units) - 50} more")
    print(disk_line(Path(args.out)))
    return 0


def disk_line(out: Path) -> str:
    """``disk: 12.3 MB in OUT (emulator 12.0 MB, state 0.2 MB, parts 0.1 MB)``, control
    characters escaped (:func:`~seeknetic_prep.util.text.printable`): what each
    top-level entry of a run's folder holds, grouped by what it is (``state.sqlite-wal`` is state)."""
    groups: dict[str, int] = {}
    for entry in sorted(out.iterdir()):
        if entry.name in (".lock", "settings.json"):  # a few bytes of bookkeeping
            continue
        size = 0
        for p in [entry, *(entry.rglob("*") if entry.is_dir() else ())]:
            with contextlib.suppress(OSError):  # a file a running emulator just deleted
                size += p.lstat().st_size if p.is_file() and not p.is_symlink() else 0
        group = entry.name.split(".")[0].split("-")[0] or entry.name
        groups[group] = groups.get(group, 0) + size
    parts = ", ".join(f"{name} {n / 1e6:.1f} MB" for name, n in sorted(groups.items(), key=lambda kv: -kv[1]))
    return printable(f"disk: {sum(groups.values()) / 1e6:.1f} MB in {out} ({parts})")


__all__ = ["HELP", "add_arguments", "disk_line", "main"]
