"""HTTP service over the inference stage: ``damofd serve`` (optional extra ``damofd[serve]``).

* :mod:`damofd.serve.batcher` — :class:`DynamicBatcher`, cross-request batching (no web code).
* :mod:`damofd.serve.app` — :func:`create_app`, the FastAPI application; docs/serve.md.
* :mod:`damofd.serve.routes` — the endpoints behind it (request parsing, shared state).
"""

from damofd.serve.batcher import BatchStats, DynamicBatcher, filter_result

__all__ = ["BatchStats", "DynamicBatcher", "filter_result"]
