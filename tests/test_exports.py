"""The public surface: every exported name exists, is what it claims, and the CLI documents itself."""

from __future__ import annotations

import subprocess
import sys

import seeknetic_prep as sp
from seeknetic_prep.cli import build_parser
from seeknetic_prep.commands import COMMANDS


def test_all_names_resolve_and_preprocess_stays_a_function() -> None:
    import seeknetic_prep.decode.preprocess  # noqa: F401  (importing the module must not shadow the function)

    for name in sp.__all__:
        assert getattr(sp, name) is not None, name
    assert callable(sp.preprocess) and sp.preprocess.__module__ == "seeknetic_prep.decode.preprocess"
    assert sorted(sp.__all__) == sp.__all__ and 6 <= len(sp.__all__) <= 12
    assert issubclass(sp.MediaError, sp.SeekneticPrepError)


def test_importing_the_package_loads_neither_pyav_nor_fastapi() -> None:
    code = "import sys, seeknetic_prep; print('av' in sys.modules, 'fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_every_command_has_help_for_every_flag() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)  # type: ignore[arg-type]
    for name, cmd in sub.choices.items():  # type: ignore[union-attr]
        assert cmd.description, name
        for action in cmd._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_python_dash_m_works() -> None:
    cmd = [sys.executable, "-m", "seeknetic_prep", "--version"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("seeknetic-prep ")
