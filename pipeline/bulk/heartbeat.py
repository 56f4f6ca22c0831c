"""A detached run's heartbeat: renewed while a worker scans and plans it, so that the sweep
can tell a long scan from a dead worker.

``start_run`` is acknowledged on receipt (a scan may last hours: redelivery to a second
worker while it runs would be worse), so a worker killed during the scan or the plan
takes the run's only message with it. The run's ``heartbeat_at`` is the proof of life:
set when the run is handed to the workers, taken by the worker that starts it, renewed
every ``EVERY`` seconds (one cheap ``UPDATE``, checked at each file). The sweep publishes
``start_run`` again for a scanning or planning run silent for longer than
``MIGRATION["STALE_START_AFTER"]``; both steps resume where they stopped.

Each renewal is a compare-and-set on the value this worker wrote last: when the sweep (or
another start) has taken the run over, the renewal updates nothing and ``Superseded`` is
raised, so a worker that was only slow stops instead of scanning beside its successor.
"""

from __future__ import annotations

import time
from datetime import datetime

from django.utils import timezone

from pipeline.models import MigrationRun

__all__ = ["EVERY", "Heartbeat", "Superseded", "take_over"]

EVERY = 10.0
"""Seconds between two renewals (far below ``STALE_START_AFTER``)."""


class Superseded(Exception):
    """The run was started again elsewhere: this worker must leave it."""


def take_over(run_id: int, *, before: datetime | None = None) -> bool:
    """Stamp the run's heartbeat now; with ``before``, only if it is older than that (the
    sweep: one sweep, not two, restarts a silent run). True when stamped."""
    runs = MigrationRun.objects.filter(pk=run_id)
    if before is not None:
        runs = runs.filter(
            state__in=[MigrationRun.State.SCANNING, MigrationRun.State.PLANNING],
            heartbeat_at__lt=before,
        )
    return bool(runs.update(heartbeat_at=timezone.now()))


class Heartbeat:
    """Call it often (every file); it writes at most every ``EVERY`` seconds."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self._last: datetime | None = None
        self._due = 0.0

    def start(self) -> None:
        """Take the run: whoever held it stops at its next renewal."""
        self._last = timezone.now()
        MigrationRun.objects.filter(pk=self.run_id).update(heartbeat_at=self._last)
        self._due = time.monotonic() + EVERY

    @property
    def last(self) -> datetime | None:
        """The heartbeat this worker wrote last (None before ``start``)."""
        return self._last

    def __call__(self, *_args: object) -> None:
        if time.monotonic() < self._due:
            return
        now = timezone.now()
        renewed = MigrationRun.objects.filter(pk=self.run_id, heartbeat_at=self._last).update(
            heartbeat_at=now
        )
        if not renewed:
            raise Superseded(f"migration run {self.run_id} was started again elsewhere")
        self._last, self._due = now, time.monotonic() + EVERY
