"""File names in the report (issue 22.13): a failed file whose name is not UTF-8 made ``report``
raise ``UnicodeEncodeError``; a file whose name is not UTF-8 got no thumbnails (opened by its
display form); a file literally named ``caf\\xe9.mp4`` merged with the real byte name; the
``file://`` link printed was not percent-encoded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from _pipeline_helpers import ROOT


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKNETIC_")}
    env["PYTHONIOENCODING"] = "utf-8:strict"  # as under a strict UTF-8 locale: raw surrogates crash
    return subprocess.run([sys.executable, "-m", "seeknetic_prep", *args], env=env, capture_output=True,
                          text=True, timeout=240, cwd=ROOT)


def test_names_that_are_not_utf8_or_look_alike_in_the_report(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.fsencode(folder)
    shutil.copyfile(ROOT / "fixtures" / "short_700ms.mp4", os.path.join(raw, b"caf\xe9.mp4"))
    shutil.copyfile(ROOT / "fixtures" / "no_audio.mp4", folder / "caf\\xe9.mp4")  # a look-alike
    with open(os.path.join(raw, b"bad\xff.mp4"), "wb") as f:
        f.write(b"not a video" * 100)
    out = tmp_path / "o #1 100%"
    run = _cli("run", str(folder), "--local", "--out", str(out), "--workers", "0", "--quiet")
    assert run.returncode == 1, run.stderr  # the bad file failed, the other two completed
    proc = _cli("report", "--out", str(out))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert (out / "report.html").resolve().as_uri() in proc.stdout
    assert "%20%231%20100%25/report.html" in proc.stdout
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "bad\\xff.mp4" in page  # the failed file, escaped
    sections = page.split("<h2>Files</h2>")[1].split("<h2>")[0].split("<h3>")[1:]
    assert len(sections) == 2, sections  # two files, not merged into one
    for section in sections:
        assert "caf\\xe9.mp4" in section
        assert "no thumbnails" not in section and section.count("<img") >= 3, section[:300]
