"""Pure: how pending paths become invalidation requests, and what they cost.

CloudFront bills every path of an invalidation request ($0.005 after the first 1,000 paths
a month), counts a wildcard as one path, and limits what can be in progress at once per
distribution (3,000 paths, 15 of them wildcards). So the batcher

* holds partial batches back while bulk work is still arriving (:func:`should_flush`),
* collapses a folder's paths into one ``folder/*`` when that saves paths and the wildcard
  budget allows (:func:`plan_batch`),
* names each request with a ``CallerReference`` derived from the batch's identity and
  content (:func:`caller_reference`): a retried request is the same request, so CloudFront
  answers it with the invalidation it already created instead of creating a second one,
* spaces retries out with jittered exponential backoff (:func:`backoff_delay`).

Nothing in this module imports Django.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pipeline.cdn.paths import covers, folder_of, is_wildcard, wildcard_for

# Per-distribution limits of CloudFront, and the most paths one request may carry.
CLOUDFRONT_MAX_PATHS_IN_PROGRESS = 3000
CLOUDFRONT_MAX_WILDCARDS_IN_PROGRESS = 15

_AFTER_ALL = "\U0010ffff"


@dataclass(frozen=True)
class BatchPlan:
    """What one invalidation request carries."""

    paths: tuple[str, ...]
    """Every path of the request: the wildcards, then the files they do not cover (sorted)."""
    wildcards: tuple[str, ...]
    """The wildcard paths among ``paths``."""
    covered: int
    """How many of the requested paths the request invalidates (all of them)."""

    @property
    def saved(self) -> int:
        """Paths the wildcards saved: what one path each would have cost, minus this plan."""
        return self.covered - len(self.paths)


def plan_batch(paths: Iterable[str], *, wildcard_threshold: int, max_wildcards: int) -> BatchPlan:
    """Collapse folders into wildcards where that is cheaper and allowed.

    A folder (the parent of a requested path) becomes ``folder/*`` when it holds at least
    ``wildcard_threshold`` (and at least two) of the requested paths, counting its
    subfolders, since a CloudFront wildcard is a prefix match. The folders saving the most
    paths win the ``max_wildcards`` budget; a folder inside a chosen one is already covered.
    The root folder is never collapsed (``/*`` would empty the whole distribution's cache).
    ``wildcard_threshold <= 0`` disables collapsing.
    """
    unique = sorted(set(paths))
    if any(is_wildcard(p) for p in unique):
        raise ValueError("plan_batch() takes file paths; wildcards are its output")
    wildcards: list[str] = []
    if wildcard_threshold > 0 and max_wildcards > 0:
        minimum = max(2, wildcard_threshold)
        candidates: list[tuple[int, str]] = []
        for folder in Counter(folder_of(p) for p in unique):
            if folder == "/":
                continue
            under = bisect.bisect_left(unique, folder + _AFTER_ALL) - bisect.bisect_left(
                unique, folder
            )
            if under >= minimum:
                candidates.append((under, folder))
        # Most paths saved first; on a tie the shorter (outer) folder first, so an outer
        # folder is always considered before the folders inside it.
        candidates.sort(key=lambda c: (-c[0], len(c[1]), c[1]))
        for _, folder in candidates:
            if len(wildcards) >= max_wildcards:
                break
            wildcard = wildcard_for(folder)
            if not any(covers(chosen, wildcard) for chosen in wildcards):
                wildcards.append(wildcard)
    wildcards.sort()
    files = [p for p in unique if not any(covers(w, p) for w in wildcards)]
    return BatchPlan(paths=(*wildcards, *files), wildcards=tuple(wildcards), covered=len(unique))


def caller_reference(*, batch_id: int, created: datetime, paths: Sequence[str]) -> str:
    """The ``CallerReference`` of a batch: stable across retries, unique across batches.

    Derived from the batch's identity (its row id and creation time) and its content (the
    sorted paths). Content alone is not enough: the same paths overwritten again next week
    need a *new* invalidation, and CloudFront would answer a reused reference with the old,
    completed one.
    """
    digest = hashlib.sha256()
    digest.update(f"{batch_id}\n{created.isoformat()}\n".encode())
    for path in sorted(paths):
        digest.update(path.encode("utf-8"))
        digest.update(b"\n")
    return f"pipeline-{batch_id}-{digest.hexdigest()[:32]}"


def should_flush(
    *,
    pending: int,
    capacity: int,
    threshold: int,
    newest_age: float,
    oldest_age: float,
    quiet_period: float,
    max_delay: float,
) -> bool:
    """Whether to send a batch of the ``pending`` paths now.

    A full batch (``threshold`` paths, or all the capacity left) always goes. A partial one
    waits while paths keep arriving (the newest is younger than ``quiet_period``), so that
    bulk work ends up in few, full requests, but never longer than ``max_delay`` after the
    oldest path was requested.
    """
    if pending <= 0 or capacity <= 0:
        return False
    return (
        pending >= min(threshold, capacity) or newest_age >= quiet_period or oldest_age >= max_delay
    )


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before attempt ``attempt + 1``: exponential, capped, half jittered."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + rand() * ceiling / 2


@dataclass(frozen=True)
class CostEstimate:
    """What the paths sent in one month cost (CloudFront bills per path, per account)."""

    paths: int
    free_paths: int
    price_per_path: Decimal

    @property
    def billable_paths(self) -> int:
        return max(0, self.paths - self.free_paths)

    @property
    def cost(self) -> Decimal:
        return self.billable_paths * self.price_per_path


def estimate_cost(paths: int, *, free_paths: int, price_per_path: Decimal) -> CostEstimate:
    """The month's estimated bill for ``paths`` invalidation paths."""
    return CostEstimate(paths=paths, free_paths=free_paths, price_per_path=price_per_path)
