#!/usr/bin/env python3
"""Set-up and the two everyday jobs, on a machine that has only Python 3.10+.

    python3 scripts/dev.py demo    # venv + install with the emulator extra, then the main job against it
    python3 scripts/dev.py test    # venv + install with the test extra, then ruff, mypy, pytest

The virtual environment lives in ``.venv`` and is reinstalled whenever ``pyproject.toml``
changes (a stamp file holds its hash), so a dependency missing from pyproject fails the test
run instead of hiding behind something installed by hand. Standard library only: this file
runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".seeknetic-prep-installed"


def _run(cmd: list[str | os.PathLike[str]], **kw: object) -> int:
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)  # type: ignore[call-overload]


def ensure_venv(extra: str) -> None:
    """Create ``.venv`` and install the project (editable) with ``extra``, unless already current."""
    if sys.version_info < (3, 10):  # noqa: UP036 - this file runs before any check of the interpreter
        sys.exit(f"seeknetic-prep needs Python 3.10 or newer; this is {sys.version.split()[0]}.")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extra.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text().split() and want in STAMP.read_text().split():
        return
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    target = f".[{extra}]" if extra else "."
    if _run([PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", target]) != 0:
        sys.exit("installing the project failed (see pip's output above)")
    lines = STAMP.read_text().split() if STAMP.exists() else []
    STAMP.write_text("\n".join([*lines, want]) + "\n")


def demo(args: list[str]) -> int:
    ensure_venv("emulator")  # the demo runs against the built-in emulator (run --local)
    return _run([BIN / "seeknetic-prep", "run", "fixtures/demo", "--local", *args])


def test(args: list[str]) -> int:
    ensure_venv("test")
    for cmd in (
        [PY, "-m", "ruff", "check", "seeknetic_prep", "tests", "scripts"],
        [PY, "-m", "mypy"],
    ):
        if _run(cmd) != 0:
            return 1
    # Three pytest-xdist workers: much of the suite waits (on servers, throttled links, a Ray
    # starting, a job's seconds), so even on CI's two cores a third worker fills what two leave
    # idle (the suite on this 2-core machine, quiet: 911 s in one process, 520 s in two, using
    # 60% of the two cores, 433 s in three). Soaked under load with three (README).
    # tests/conftest.py says which tests share a worker. Any -n (``-n 0``: one process) or
    # ``-p no:xdist`` given runs it your way.
    given = any(a.startswith(("-n", "--numprocesses")) or a == "no:xdist" for a in args)
    return _run([PY, "-m", "pytest", *([] if given else ["-n", "3"]), *args])


def main() -> int:
    jobs = {"demo": demo, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in jobs:
        print(__doc__)
        return 2
    return jobs[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
