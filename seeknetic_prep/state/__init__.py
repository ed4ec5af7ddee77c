"""The run's state on disk: one SQLite file per out folder, the source of truth for resume.

* :mod:`.store` -- ``Store``, the one door to the database, assembled from:
* :mod:`.opening` -- opening the file: what is not our state refused, migrations;
* :mod:`.connection` -- the connection: batched writes, reads after a flush;
* :mod:`.units`, :mod:`.files`, :mod:`.runs`, :mod:`.blobs` -- typed queries, one class per
  table's concern;
* :mod:`.rows` -- the row values they return (no positional tuples) and the path forms;
* :mod:`.schema` -- the schema's versions and their migrations;
* :mod:`.readonly` -- ``StateView``, the state read by ``plan`` without changing it;
* :mod:`.thumbs` -- ``ThumbStore``, the windows' thumbnails kept at decode time for ``report``
  (their own file: a cache for people, not state).
"""
