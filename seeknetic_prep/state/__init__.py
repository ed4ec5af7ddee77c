"""The run's state on disk: one SQLite file per out folder, the source of truth for resume.

* :mod:`.store` -- ``Store``: units, files (byte-exact paths), batched writes.
* :mod:`.schema` -- the schema's versions and their migrations.
"""
