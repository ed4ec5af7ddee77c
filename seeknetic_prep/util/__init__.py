"""Process-level helpers with no stage of their own.

* :mod:`.malloc` -- keep freed multi-MB buffers in the process (glibc's thresholds).
* :mod:`.fsio` -- files replaced whole or not at all; the one portable file lock.
* :mod:`.outlock` -- one run per out folder (an advisory lock, from :mod:`.fsio`).
* :mod:`.extras` -- one line, not a traceback, when an optional extra is missing.
* :mod:`.watchdog` -- a run's helper processes (the Ray it started) ended when it is killed.
"""
