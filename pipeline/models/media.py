"""The media library: images that belong to no other row (e.g. orphans of a migration)."""

from __future__ import annotations

from django.db import models

from pipeline.fields import MediaImageField

__all__ = ["MediaAsset"]


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
