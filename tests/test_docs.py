"""The README cannot drift from the code: every command and flag that ``--help`` offers is in
it, its Python examples run, and the printed values its comments promise are what they print
(sqlite-utils keeps its docs honest the same way)."""

from __future__ import annotations

import re
import subprocess
import sys

from _pipeline_helpers import ROOT

from seeknetic_prep.cli import build_parser

README = (ROOT / "README.md").read_text()


def test_every_command_and_flag_is_in_the_readme() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = []
    for name, cmd in sub.choices.items():  # type: ignore[union-attr]
        if f"seeknetic-prep {name}" not in README:
            missing.append(name)
        for action in cmd._actions:
            missing += [f"{name} {flag}" for flag in action.option_strings
                        if flag.startswith("--") and flag != "--help" and f"`{flag}" not in README
                        and f" {flag}" not in README]
    assert not missing, f"in --help but not in README.md: {missing}"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_library_example_runs_and_prints_what_its_comments_say() -> None:
    block = next(b for b in _python_blocks() if "sp.preprocess(" in b)
    proc = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    promised = [line.split("#", 1)[1].strip() for line in block.splitlines()
                if line.startswith("print(") and "#" in line]
    printed = proc.stdout.splitlines()
    assert len(printed) == len(promised)
    for got, said in zip(printed, promised, strict=True):
        head = said.split(":")[0].split(",")[0].rstrip(".").strip()  # "(1, 12, 3, 224, 224) uint8"
        assert got.startswith(head.split("...")[0].split(" uint8")[0].split(" float32")[0]), (got, said)
