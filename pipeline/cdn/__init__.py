"""CDN invalidation: batched, de-duplicated, cost-aware.

The pipeline calls :func:`request_invalidation` for every public key it overwrites or
deletes. The paths are recorded in the database and return at once; the flush task sends
them to the configured backend in batches (see ``pipeline.cdn.services``).

This ``__init__`` imports nothing from Django at import time, so the pure modules
(``pipeline.cdn.paths``, ``pipeline.cdn.batching``) stay importable anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["request_invalidation"]


def request_invalidation(paths: Iterable[str]) -> int:
    """Record public object keys whose CDN copies are stale; returns how many are new.

    ``paths`` are public-bucket keys (``media/demo-photo/42/sunset/w640.webp``, no leading
    slash) that were *overwritten or deleted*; brand-new keys need no invalidation. Keys
    already pending are not recorded twice. Safe inside a transaction: the early flush is
    enqueued on commit.
    """
    from pipeline.cdn.services import request_invalidation as _request_invalidation

    return _request_invalidation(paths)
