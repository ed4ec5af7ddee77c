"""Video in, exact windows out: the decode stage, on its own usable as a library.

* :mod:`.profile` -- what a window and a segment are (12 frames, 224 px, 22050 Hz, 10 s).
* :mod:`.sampling` -- pure: duration -> windows -> target timestamps.
* :mod:`.decoder` -- ``VideoDecoder``: one file open for decoding (device and threads are its
  arguments), frames out as a typed ``FrameBatch``; its parts, one PyAV concern each:
  :mod:`.source` (open, streams, errors), :mod:`.streams` (which video track),
  :mod:`.probe` (``MediaInfo``, the true end),
  :mod:`.frames` (the one-pass frame choice), :mod:`.colour` (YUV -> RGB), :mod:`.audio`.
* :mod:`.media` -- one-call shortcuts over the decoder: ``probe``, ``decode_frames_at``, ``decode_audio``.
* :mod:`.transform` -- numpy: rotate, resize + crop, resample.
* :mod:`.hw` -- which decoder a file gets: NVDEC (PyAV's ``cuda`` hwaccel) or the CPU.
* :mod:`.spans` -- where a task's packets lie in its file, from the container's index (for a
  reader over range requests); :mod:`.boxes` -- where an MP4's index lies, from its first bytes.
* :mod:`.preprocess` -- ``preprocess()`` and ``iter_segments()``, the entry points.

Importing the package loads nothing heavy; the decoder's modules load PyAV.
"""
