"""The run: files -> plan -> decode -> serialize -> upload -> submit -> poll -> store.

* :mod:`.spec` -- what a run is told and tells: options, progress callbacks, the summary.
* :mod:`.discover` -- finding video files under the paths given.
* :mod:`.tasks` -- the plain values passed between stages and engines (no PyAV, no SQLite).
* :mod:`.worker` -- the PyAV side: plan a file, decode and serialize its windows.
* :mod:`.payloads` -- upload bodies, content fingerprints, deterministic request ids.
* :mod:`.ledger` -- what is left to do, and the exactly-once rules every stage asks.
* :mod:`.upload` -- the upload/submit stage (threads over a bounded queue).
* :mod:`.poll` -- the poll stage (``async_status`` until each job is finished).
* :mod:`.route` -- ``Router``: each engine event to the ledger, then the next stage.
* :mod:`.driver` -- ``run_folder``: wires the stages, feeds the engine, stops on a flag.

The driver never imports :mod:`.worker`: decoding happens in an engine's workers
(:mod:`seeknetic_prep.executors`).
"""
