"""The media library (images that belong to no other row, e.g. orphans of a migration),
and the durable list of public objects waiting to be deleted."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from pipeline.fields import MediaImageField

__all__ = ["MediaAsset", "PendingDeletion"]


class MediaAsset(models.Model):
    title = models.CharField(max_length=200, blank=True)
    image = MediaImageField(upload_to="library/")
    # Where it came from (a legacy path), and its content: one row per content, so a
    # re-run of an import can never create a second row for the same file.
    source_path = models.CharField(max_length=1024, blank=True, default="")
    source_sha256 = models.CharField(max_length=64, null=True, blank=True, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = "media asset"

    def __str__(self) -> str:
        return self.title or self.image.name


class PendingDeletion(models.Model):
    """Public objects (and maybe an original) to delete, written in the transaction that
    made them garbage (a row deleted or cleared, a render superseded), so a delete
    survives a broker that is down at commit: the task takes the id, the sweep publishes
    again what is still here after ``STALE_AFTER``. Done deletions are removed."""

    keys = models.JSONField(default=list)
    original = models.TextField(blank=True, default="")
    # The row the objects came from, when it still exists: [model label, pk, field].
    owner = models.JSONField(null=True, blank=True)
    # When it was last published: the sweep publishes again those older than STALE_AFTER.
    published_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "pending deletion"

    def __str__(self) -> str:
        return f"{len(self.keys)} public object(s){' + original' if self.original else ''}"
