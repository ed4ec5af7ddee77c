"""Process-level helpers with no stage of their own.

* :mod:`.malloc` -- keep freed multi-MB buffers in the process (glibc's thresholds).
* :mod:`.outlock` -- one run per out folder (an advisory lock).
* :mod:`.extras` -- one line, not a traceback, when an optional extra is missing.
"""
