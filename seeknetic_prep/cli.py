"""The ``seeknetic-prep`` command line: parse, call the library, map errors to exit codes.

All behaviour lives in the library; this module only wires the command modules of
:mod:`seeknetic_prep.commands` into one parser and turns our error tree into one line on
stderr and an exit code (see :func:`seeknetic_prep.errors.exit_code_for`). A traceback here is
a bug: only exceptions outside our tree may produce one.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from seeknetic_prep import __version__
from seeknetic_prep.commands import COMMANDS
from seeknetic_prep.errors import SeekneticPrepError, exit_code_for
from seeknetic_prep.util.malloc import keep_freed_buffers
from seeknetic_prep.util.text import printable


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line like every other validation error (not a usage
    block), and still exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="seeknetic-prep",
        description="Turn local video into Seeknetic tensors, upload them, and collect embeddings and tags.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name}", __package__)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 failures, 2 usage/auth, 3 quota, 130 Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_buffers()  # a run moves megabytes a window through this process: see .malloc
    try:
        code: int = args._main(args)
    except SeekneticPrepError as exc:
        print(f"seeknetic-prep {args.command}: error: {printable(exc)}", file=sys.stderr)
        return exit_code_for(exc)
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more (as the docs advise)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # the machine said no (a full disk, a file where a folder belongs)
        where = f": {exc.filename}" if exc.filename else ""
        fix = ("; free some space and run the same command again (what was saved is kept)"
               if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "")
        print(f"seeknetic-prep {args.command}: error: {printable(f'{exc.strerror or exc}{where}{fix}')}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if argv is None:  # the command itself, now exiting: a second Ctrl-C must not cut that short
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # (it killed the process by SIGINT, not 130)
        print(f"seeknetic-prep {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
