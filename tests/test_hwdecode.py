"""Choosing the decoder (issue 10): the CPU, or NVDEC through PyAV's ``cuda`` hwaccel.

CI has no GPU, so these check the choice, the fallbacks and the errors; on a machine with a
CUDA device the same tests check that ``auto`` (NVDEC there) gives the CPU's windows to the bit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _pipeline_helpers import ROOT

from seeknetic_prep.decode import hw as hwdecode
from seeknetic_prep.decode.preprocess import preprocess
from seeknetic_prep.errors import InvalidArgumentError
from seeknetic_prep.executors.local import ProcessExecutor
from seeknetic_prep.pipeline.spec import RunOptions

NO_GPU = not hwdecode.cuda_present()


def _never() -> bool:
    raise AssertionError("asked for a CUDA device where the answer cannot depend on one")


def test_cpu_and_unchecked_codecs_never_get_the_gpu() -> None:
    """``cuda_present`` is not even asked: a CPU decode never touches the CUDA driver."""
    assert hwdecode.choose_device("cpu", "h264", gpu_allowed=True, cuda_present=_never) == "cpu"
    for codec in ("vp9", "av1", "mjpeg", "mpeg4"):  # NVDEC output not checked against the CPU's
        for mode in ("auto", "cuda"):  # "cuda" falls back: exactness outranks speed
            assert hwdecode.choose_device(mode, codec, gpu_allowed=True, cuda_present=_never) == "cpu"


@pytest.mark.parametrize(
    ("mode", "codec", "gpu_allowed", "present", "device"),
    [
        ("auto", "h264", True, True, "cuda"),  # a device: NVDEC
        ("auto", "hevc", True, True, "cuda"),
        ("auto", "h264", True, False, "cpu"),  # no device: the CPU, silently
        ("auto", "h264", False, True, "cpu"),  # a CPU worker of a mixed pool
        ("cuda", "h264", True, True, "cuda"),
        ("cuda", "h264", False, True, "cuda"),  # "cuda" insists; gpu_allowed limits "auto" only
        ("cuda", "av1", True, True, "cpu"),  # outside NVDEC_CODECS: the CPU
        ("cpu", "h264", True, True, "cpu"),
    ],
)
def test_device_choice_table(mode: str, codec: str, gpu_allowed: bool, present: bool, device: str) -> None:
    chosen = hwdecode.choose_device(mode, codec, gpu_allowed=gpu_allowed, cuda_present=lambda: present)
    assert chosen == device


def test_cuda_for_an_nvdec_codec_without_a_device_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="Invalid --decode cuda: no CUDA device here"):
        hwdecode.choose_device("cuda", "hevc", gpu_allowed=True, cuda_present=lambda: False)
    with pytest.raises(InvalidArgumentError, match="must be one of auto, cpu, cuda"):
        hwdecode.choose_device("nvdec", "av1", gpu_allowed=True, cuda_present=_never)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="must be one of auto, cpu, cuda"):
        hwdecode.check_decode("gpu")
    with pytest.raises(InvalidArgumentError, match="decode 'nvdec'"):
        RunOptions(decode="nvdec")


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device is present")
def test_cuda_without_a_device_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="no CUDA device here"):
        hwdecode.check_decode("cuda")
    for command in (["run", "fixtures/demo", "--local"], ["prep", "fixtures/demo"]):
        proc = subprocess.run([sys.executable, "-m", "seeknetic_prep", *command, "--out",
                               str(tmp_path / command[0]), "--decode", "cuda"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"seeknetic-prep {command[0]}: error: Invalid --decode cuda: no CUDA device here (PyAV "
            "cannot open one); use --decode auto or cpu, or run where an NVIDIA GPU and its driver "
            "are present."]
        assert not (tmp_path / command[0]).exists()


@pytest.mark.parametrize("name", ["cfr30_bframes.mp4", "hevc10.mp4", "vfr.mp4", "rotated90.mp4"])
def test_auto_gives_the_cpu_windows_to_the_bit(name: str) -> None:
    """NVDEC where present, the CPU elsewhere: the tensors must not depend on which."""
    path = ROOT / "fixtures" / name
    auto, cpu = preprocess(path), preprocess(path, decode="cpu")
    assert len(auto) == len(cpu)
    for a, b in zip(auto, cpu, strict=True):
        assert list(a.frame_times_ms) == list(b.frame_times_ms)
        assert np.array_equal(a.video, b.video) and np.array_equal(a.audio, b.audio)


def test_gpu_workers_default_and_a_mixed_pool_decodes() -> None:
    assert RunOptions(decode="cpu").gpu_worker_count == 0
    assert RunOptions(gpu_workers=3).gpu_worker_count == 3
    assert RunOptions().gpu_worker_count == (0 if NO_GPU else 8)
    from seeknetic_prep.executors.base import Planned, PlanTask

    pool = ProcessExecutor(1, gpu_workers=1)  # without a GPU the "GPU" worker decodes on the CPU
    try:
        for name in ("cfr30_bframes.mp4", "hevc10.mp4", "vp9.webm", "demo/lake.mp4"):
            pool.submit(PlanTask(str(ROOT / "fixtures" / name)))
        planned = []
        while pool.in_flight:
            planned += [e for e in pool.events(1.0) if isinstance(e, Planned)]
        assert len(planned) == 4
    finally:
        pool.close()
