"""File discovery and content fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.pipeline.discover import discover, parse_extensions


def test_walks_recursively_by_extension_skipping_hidden(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("a/x.MP4", "a/b/y.mkv", "a/notes.txt", ".hidden/z.mp4", "a/.w.mp4", "top.webm"):
        (tmp_path / name).write_bytes(b"x")
    found = sorted(p.relative_to(tmp_path).as_posix() for p in discover([tmp_path]))
    assert found == ["a/b/y.mkv", "a/x.MP4", "top.webm"]


def test_symlink_loops_and_duplicates_are_listed_once(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "v.mp4").write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "d" / "loop")
    os.symlink(tmp_path / "d" / "v.mp4", tmp_path / "alias.mp4")
    found = list(discover([tmp_path, tmp_path / "d", tmp_path / "d" / "v.mp4"]))
    assert len(found) == 1


def test_explicit_file_is_taken_whatever_its_extension(tmp_path: Path) -> None:
    f = tmp_path / "clip.bin"
    f.write_bytes(b"x")
    assert list(discover([f])) == [f]


def test_missing_path_names_it() -> None:
    with pytest.raises(InvalidArgumentError, match="nope"):
        list(discover(["/nope/nothing"]))


def test_extension_list_parsing() -> None:
    assert parse_extensions("mp4, .MOV,mkv") == frozenset({".mp4", ".mov", ".mkv"})
    with pytest.raises(InvalidArgumentError):
        parse_extensions(" , ")
