"""``seeknetic_prep.run``: the whole job from Python, as ``seeknetic-prep run`` does it.

>>> import seeknetic_prep as sp
>>> summary = sp.run("videos/", out="seeknetic-out", local=True)  # doctest: +SKIP
>>> summary.exit_code, summary.files_ok
(0, 22)

The official SDK is a library first, and so is this: the same options as the command (with
underscores for dashes), the same checks, the same state and results (a run from Python and one
from the shell resume each other), the same emulator for ``local=True``. It returns the
:class:`~seeknetic_prep.pipeline.spec.RunSummary` instead of printing one, and raises the error
tree of :mod:`seeknetic_prep.errors` instead of exiting. It works from a script without an
``if __name__ == "__main__":`` guard, from ``python -c`` and in a Jupyter kernel: the decode
workers never import the caller's main module (:mod:`seeknetic_prep.util.procs`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seeknetic_prep.commands.run import DEFAULT_OUT, add_arguments, execute
from seeknetic_prep.errors import InvalidArgumentError

if TYPE_CHECKING:
    from seeknetic_prep.pipeline.spec import RunSummary

__all__ = ["run"]

PathLike = str | os.PathLike[str]
_FIXED = {"paths", "out", "local", "api_key", "base_url", "quiet"}


def _defaults() -> dict[str, Any]:
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return vars(parser.parse_args([]))


def run(paths: PathLike | Iterable[PathLike] = (), *, out: PathLike = DEFAULT_OUT, local: bool = False,
        api_key: str | None = None, base_url: str | None = None, progress: bool = True,
        **options: Any) -> RunSummary:
    """Embed and tag every 10 s window of every video under ``paths``; resumable from ``out``.

    Args:
        paths: a file, folder or URL, or several (folders walked, prefixes listed recursively).
        out: the output folder: ``state.sqlite``, ``parts/`` (Parquet results), ``search/``.
        local: run against the built-in emulator, started for the run (needs the ``emulator``
            extra); its key lives in ``out``.
        api_key: the key (default ``$SEEKNETIC_API_KEY``); never printed, logged or stored.
        base_url: the API (default ``$SEEKNETIC_BASE_URL``, else the region's).
        progress: progress bars on a terminal (else, and with False, one line per file).
        **options: any other option of ``seeknetic-prep run``, dashes as underscores:
            ``services="embedding"`` (or a list), ``workers``, ``uploaders``, ``qps``, ``max_upload_mbps``,
            ``max_jobs``, ``retry_failed``, ``extensions`` (a string or a list), ``resize``,
            ``decode``, ``gpu_workers``, ``executor``, ``executor_address``, ``region``,
            ``bearer``, ``from_list``, ``keep_tensors``, ``report``, ``wait``.

    Returns:
        The run's summary (``exit_code`` is what the command would exit with; ``files_ok``,
        ``failures``, ``stopped_by``, ...).

    Raises:
        InvalidArgumentError: an unknown option or a value the command would refuse (the
            message names it and the choices), no path, a missing local path.
        AuthenticationError, UnreachableError, NotTheAPIError: the key or the API (as exit 2).
        OutputInUseError: another run holds ``out`` (pass ``wait=True`` to wait for it).
    """
    defaults = _defaults()
    unknown = sorted(set(options) - (set(defaults) - _FIXED))
    if unknown:
        raise InvalidArgumentError(
            f"Invalid option(s) {', '.join(unknown)} for seeknetic_prep.run(); the options are: "
            f"{', '.join(sorted(set(defaults) - _FIXED - {'paths'}))} (and paths, out, local, api_key, "
            "base_url, progress).")
    for name in ("services", "extensions"):  # the command takes these comma-separated
        if isinstance(options.get(name), (list, tuple, set, frozenset)):
            options[name] = ",".join(options[name])
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    args = argparse.Namespace(**{**defaults, **options, "paths": [os.fspath(p) for p in items],
                                 "out": Path(out), "local": local, "api_key": api_key,
                                 "base_url": base_url, "quiet": not progress})
    if args.from_list is not None:
        args.from_list = Path(args.from_list)
    summary = execute(args)
    if args.report:
        from seeknetic_prep.results.report import write_report  # pyarrow, the template: when asked for

        write_report(args.out)
    return summary
