"""Progress of bulk migrations of a legacy media folder, kept in the database.

A :class:`MigrationRun` is one ``migrate_media`` invocation (or its resumption). Its
:class:`MigrationItem` rows are the stored scan, one per path of the legacy tree, carrying
what the scan found and what the run did with it; the planned object key of a content
lives on every image path that holds it, and exactly one of them (``canonical``) is the
path the original is uploaded from. :class:`MigrationLink` rows are the references held by
the model rows being migrated, each resolved to a key or reported. :class:`MigrationChunk`
rows are the units of work the coordinator fans out, a bounded number at a time.

Rows here are written only by the services of ``pipeline.bulk``; every state change is a
conditional ``UPDATE`` so that a chunk task run twice (redelivered after a crash) changes
nothing the second time.
"""

from __future__ import annotations

from django.db import models

__all__ = ["MigrationChunk", "MigrationItem", "MigrationLink", "MigrationRun"]


class MigrationRun(models.Model):
    class State(models.TextChoices):
        SCANNING = "scanning", "scanning"
        PLANNING = "planning", "planning"
        RUNNING = "running", "uploading and linking"
        PROCESSING = "processing", "processing"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    source = models.CharField(max_length=1024, help_text="Absolute path of the legacy folder.")
    options = models.JSONField(default=dict, blank=True)
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.SCANNING, db_index=True
    )
    error = models.TextField(blank=True, default="")
    report = models.JSONField(
        default=dict, blank=True, help_text="The final report (Report.to_dict())."
    )
    bucket_was_empty = models.BooleanField(
        default=False,
        help_text="No object under the key prefix when planned: chunks need not look.",
    )
    created = models.DateTimeField(auto_now_add=True)
    scanned_at = models.DateTimeField(null=True, blank=True)
    planned_at = models.DateTimeField(null=True, blank=True)
    uploaded_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Renewed by the worker scanning and planning a detached run (heartbeat).",
    )

    class Meta:
        ordering = ["-id"]
        verbose_name = "migration run"
        indexes = [models.Index(fields=["source", "state"], name="pipeline_mrun_source")]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.source}"

    @property
    def finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)


class MigrationChunk(models.Model):
    """A slice of the run's objects, handled by one chunk task."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        QUEUED = "queued", "queued"
        DONE = "done", "done"

    run = models.ForeignKey(MigrationRun, on_delete=models.CASCADE, related_name="chunks")
    number = models.PositiveIntegerField()
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    size = models.PositiveIntegerField(default=0, help_text="Objects in the chunk.")
    attempts = models.PositiveSmallIntegerField(default=0)
    queued_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="pipeline_mchunk_unique")
        ]
        indexes = [models.Index(fields=["run", "state"], name="pipeline_mchunk_state")]

    def __str__(self) -> str:
        return f"chunk {self.number} of run {self.run_id}"


class MigrationItem(models.Model):
    """One scanned path of the legacy tree, and what the run did with it."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        UPLOADED = "uploaded", "uploaded"
        PRESENT = "present", "already present"
        FAILED = "failed", "failed"
        SKIPPED = "skipped", "skipped"  # not an image, or a copy of another path's content

    run = models.ForeignKey(MigrationRun, on_delete=models.CASCADE, related_name="items")
    # The scan (pipeline.bulk.scan.ScanEntry), path exactly as on disk.
    path = models.CharField(max_length=1024)
    lookup_key = models.CharField(max_length=1024, help_text="NFC + casefold of the path.")
    size = models.BigIntegerField(default=0)
    mtime_ns = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    md5 = models.CharField(max_length=32, blank=True, default="")
    kind = models.CharField(max_length=10)
    format = models.CharField(max_length=10, blank=True, default="")
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True, default="")
    via_link = models.BooleanField(default=False)
    # The plan.
    natural_key = models.CharField(max_length=1024, blank=True, default="")
    key = models.CharField(max_length=1024, blank=True, default="")
    canonical = models.BooleanField(
        default=False, help_text="The one path of its content that is uploaded."
    )
    orphan = models.BooleanField(default=False, help_text="No migrated row refers to it.")
    # What happened.
    chunk = models.ForeignKey(
        MigrationChunk, null=True, blank=True, on_delete=models.SET_NULL, related_name="items"
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    imported = models.BooleanField(default=False, help_text="A media library row was created.")
    requeued = models.BooleanField(
        default=False, help_text="Its media library row, never processed, was queued for it."
    )
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "path"], name="pipeline_mitem_path"),
        ]
        indexes = [
            models.Index(fields=["run", "lookup_key"], name="pipeline_mitem_lookup"),
            models.Index(fields=["run", "natural_key"], name="pipeline_mitem_natural"),
            models.Index(fields=["run", "key"], name="pipeline_mitem_key"),
            # Across runs: a content or a key stored by any earlier run (sticky keys).
            models.Index(fields=["sha256", "run"], name="pipeline_mitem_sha256"),
            models.Index(fields=["key", "run"], name="pipeline_mitem_key_run"),
        ]

    def __str__(self) -> str:
        return self.path


class MigrationLink(models.Model):
    """A migrated row's legacy value, resolved to an object key (or reported)."""

    class State(models.TextChoices):
        PENDING = "pending", "to link"
        LINKED = "linked", "re-linked"
        CURRENT = "current", "already linked, queued for processing"
        DANGLING = "dangling", "dangling"

    run = models.ForeignKey(MigrationRun, on_delete=models.CASCADE, related_name="links")
    target = models.CharField(max_length=200, help_text="app_label.Model.field")
    row_pk = models.CharField(max_length=64)
    value = models.TextField()
    key = models.CharField(max_length=1024, blank=True, default="", help_text="'': not linked")
    reason = models.CharField(max_length=500, blank=True, default="")
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "target", "row_pk"], name="pipeline_mlink_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["run", "key"], name="pipeline_mlink_key"),
            models.Index(fields=["run", "state"], name="pipeline_mlink_state"),
        ]

    def __str__(self) -> str:
        return f"{self.target} pk={self.row_pk}"
