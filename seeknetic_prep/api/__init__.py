"""Talking to the Seeknetic API: the client, its pacing, key hygiene, and the tensor wire format.

* :mod:`.client` -- ``Client``: auth, endpoints, retries, typed errors, cancellation.
* :mod:`.pacing` -- retry backoff, the ``--qps`` token bucket, a rate found from 429s.
* :mod:`.keys` -- API keys: where they come from, what is refused, redaction in every form.
* :mod:`.tensors` -- ndarray <-> ``{"data", "shape", "dtype"}``, strict both ways.

Nothing here decodes video or touches the run's state: the pipeline calls in, never the reverse.
"""
