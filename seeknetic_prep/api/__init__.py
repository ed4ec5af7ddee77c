"""Talking to the Seeknetic API, in three layers as httpx does, and the pieces they share.

* :mod:`.transport` -- ``Request``/``Response`` values and the ``Transport`` seam: the only place
  ``requests`` is called and its exceptions are mapped (``MockTransport`` for tests).
* :mod:`.retry` -- ``RetryEngine``: one policy for every call (backoff, 429s, lost submissions
  looked up, ``--qps``, cancellation, the unreachable clock).
* :mod:`.session` -- ``Session``: the one holder of the key; auth header and redaction on every call.
* :mod:`.client` -- ``Client``: the connection, the key check, uploads, text queries; with
  :mod:`.jobs` -- ``JobCommands`` (inherited): submit with a lookup, status, wait;
  :mod:`.wire` -- bodies and answers.
* :mod:`.uploader` -- ``NodeUploader``: what a decode node uploads itself (picklable).
* :mod:`.pacing` -- retry backoff, the ``--qps`` token bucket, a rate found from 429s.
* :mod:`.keys` -- API keys: where they come from, what is refused, redaction in every form.
* :mod:`.tensors` -- ndarray <-> ``{"data", "shape", "dtype"}``, strict both ways.

Nothing here decodes video or touches the run's state: the pipeline calls in, never the reverse.
"""
