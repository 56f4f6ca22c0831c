"""CDN invalidation state: the durable backlog of stale paths, and the requests sent.

A path requested for invalidation is a :class:`CDNPendingPath` row until a batch claims it;
the batch (:class:`CDNInvalidation`) is written *before* its request is sent, with the
``CallerReference`` it will always be sent with, so a retry after a timeout, a crash or a
redelivered task repeats the same request instead of creating a second invalidation.
A batch the CDN refuses for good is *set aside* (a dead letter) with its claimed paths,
so later batches go on, until a person retries or discards it.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

__all__ = ["CDNInvalidation", "CDNPendingPath"]


class CDNInvalidation(models.Model):
    """One invalidation request: its paths, its ``CallerReference`` and its state."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued (not yet accepted)"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        SET_ASIDE = "set_aside", "Set aside (refused by the CDN)"

    target = models.CharField(
        max_length=255,
        help_text="Where the request goes, e.g. 'cloudfront:E2QWRUHAPOMQZL' or 'local:...'.",
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    billable = models.BooleanField(
        default=False, help_text="Sent to a CDN that bills per path (counted in the estimate)."
    )
    caller_reference = models.CharField(
        max_length=128,
        unique=True,
        null=True,
        blank=True,
        help_text="Derived from this batch's id, creation time and paths; never changes.",
    )
    invalidation_id = models.CharField(
        "invalidation id", max_length=64, blank=True, help_text="Assigned by the CDN."
    )
    paths = models.JSONField(
        default=list, blank=True, help_text="The request's paths, wildcards first."
    )
    path_count = models.PositiveIntegerField(default=0, help_text="Paths billed.")
    wildcard_count = models.PositiveIntegerField(default=0)
    covered_count = models.PositiveIntegerField(
        default=0, help_text="Requested paths this request invalidates."
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="When the CDN accepted the request."
    )
    completed_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time the status was polled."
    )
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A queued request is not (re)sent before this time (lease or backoff).",
    )
    attempts = models.PositiveIntegerField(default=0)
    refusals = models.PositiveIntegerField(
        default=0,
        help_text="Times the CDN refused the request for good (not throttling or outages); "
        "set aside at PIPELINE CDN MAX_REFUSALS.",
    )
    set_aside_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When it was set aside; it is not sent again until retried from the admin.",
    )
    last_error = models.TextField(blank=True)

    class Meta:
        verbose_name = "CDN invalidation"
        verbose_name_plural = "CDN invalidations"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["target", "status"], name="pipeline_cdninv_target_status"),
        ]

    def __str__(self) -> str:
        return self.invalidation_id or f"batch {self.pk} ({self.get_status_display()})"


class CDNPendingPath(models.Model):
    """A CloudFront path waiting to be invalidated.

    Unclaimed rows (``batch`` is null) are unique per path, so a path requested many times
    before the next flush is sent once. A claimed row belongs to the batch that will send
    it; the same path requested again meanwhile gets a new unclaimed row, because that
    overwrite may have happened after the batch's request was accepted.
    """

    path = models.TextField(help_text="CloudFront path, percent-encoded: /media/a%20b.jpg")
    digest = models.CharField(max_length=64, help_text="sha256 of the path.")
    requested_at = models.DateTimeField(default=timezone.now, db_index=True)
    batch = models.ForeignKey(
        CDNInvalidation,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="claimed_paths",
    )

    class Meta:
        verbose_name = "pending CDN path"
        verbose_name_plural = "pending CDN paths"
        constraints = [
            models.UniqueConstraint(
                fields=["digest"],
                condition=Q(batch__isnull=True),
                name="pipeline_cdnpath_unique_unclaimed",
            ),
        ]

    def __str__(self) -> str:
        return self.path
