"""Video in, exact windows out: the decode stage, on its own usable as a library.

* :mod:`.profile` -- what a window and a segment are (12 frames, 224 px, 22050 Hz, 10 s).
* :mod:`.sampling` -- pure: duration -> windows -> target timestamps.
* :mod:`.media` -- PyAV: open, probe, decode the chosen frames and the audio.
* :mod:`.transform` -- numpy: rotate, resize + crop, resample.
* :mod:`.hw` -- which decoder a file gets: NVDEC (PyAV's ``cuda`` hwaccel) or the CPU.
* :mod:`.preprocess` -- ``preprocess()`` and ``iter_segments()``, the entry points.

Importing the package loads nothing heavy; :mod:`.media` loads PyAV.
"""
