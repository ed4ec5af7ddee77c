"""The endpoints, one router per concern; :func:`seeknetic_prep.emulator.app.create_app` joins them.

:mod:`.uploads` (``POST /files/upload/tensors``), :mod:`.jobs` (the two async submissions and
``GET /async_status/{request_id}``), :mod:`.text` (``POST /video_embedding/encode_text``),
:mod:`.stats` (``GET /_emulator/stats``, the emulator's own). Each module builds its router from
what it needs (storage, the quota, the worker's wake-up), so a router can be read, and tested,
without the others; :mod:`.auth` is the one dependency they share: who is calling.
"""
