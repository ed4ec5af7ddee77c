"""What a run leaves for people and programs: Parquet parts, exports, search, report, sheets.

* :mod:`.finalize` -- ``finalize_run()``: the end of a run (its part, then the search index).
* :mod:`.parts` -- the Parquet part each run writes, and how parts merge into current rows.
* :mod:`.export` -- ``seeknetic-prep results``: one Parquet, JSONL, CSV or ``.npy`` file.
* :mod:`.index` -- the memory-mapped embedding matrix; exact ranking and tag filters.
* :mod:`.ann` -- the approximate index (HNSW, usearch) for runs of many millions of windows.
* :mod:`.report` -- ``report.html``, drawn from what :mod:`.report_data` reads.
* :mod:`.sheet` -- contact sheets of a window's tensors (``inspect``).
"""
