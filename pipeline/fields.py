"""``MediaImageField``: a drop-in ``ImageField`` whose images the pipeline manages.

The field adds its companion state to the same row as plain columns named
``<field>_<what>`` (status, revision, checksum, dimensions, manifest, ...), so that
swapping it in for an ``ImageField`` keeps the column and its data and ``makemigrations``
only adds the companions. Reading variants needs no storage call: everything comes from
the manifest column.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.files.base import File
from django.db import models
from django.db.models.fields.files import ImageFieldFile

from pipeline import naming, storage


class Status(models.TextChoices):
    EMPTY = "empty", "no image"
    PENDING = "pending", "pending"
    PROCESSING = "processing", "processing"
    READY = "ready", "ready"
    FAILED = "failed", "failed"


def companion_fields() -> dict[str, models.Field]:
    """The state stored beside each managed image, keyed by column suffix."""
    return {
        "status": models.CharField(
            max_length=10,
            choices=Status.choices,
            default=Status.EMPTY,
            db_index=True,
            editable=False,
        ),
        # Bumped on every change of the image; work for an older revision is discarded.
        "revision": models.PositiveIntegerField(default=0, editable=False),
        "status_changed": models.DateTimeField(null=True, blank=True, editable=False),
        "checksum": models.CharField(max_length=64, blank=True, default="", editable=False),
        "width": models.PositiveIntegerField(null=True, blank=True, editable=False),
        "height": models.PositiveIntegerField(null=True, blank=True, editable=False),
        "format": models.CharField(max_length=10, blank=True, default="", editable=False),
        "manifest": models.JSONField(default=dict, blank=True, editable=False),
        "placeholder": models.JSONField(default=dict, blank=True, editable=False),
        "error": models.TextField(blank=True, default="", editable=False),
        "attempts": models.PositiveSmallIntegerField(default=0, editable=False),
        "processed_at": models.DateTimeField(null=True, blank=True, editable=False),
        "duration_ms": models.PositiveIntegerField(null=True, blank=True, editable=False),
    }


class MediaFieldFile(ImageFieldFile):
    """The value of a ``MediaImageField``: the original, plus read-only access to its
    variants through the row's manifest."""

    field: MediaImageField

    def _state(self, what: str) -> Any:
        return getattr(self.instance, self.field.companion(what))

    @property
    def status(self) -> str:
        return self._state("status")

    @property
    def is_ready(self) -> bool:
        return self.status == Status.READY

    @property
    def error(self) -> str:
        return self._state("error")

    @property
    def placeholder(self) -> dict[str, str]:
        return self._state("placeholder") or {}

    @property
    def manifest(self) -> dict[str, Any]:
        return self._state("manifest") or {}

    @property
    def original_dimensions(self) -> tuple[int | None, int | None]:
        return self._state("width"), self._state("height")

    @property
    def variants(self) -> list[dict[str, Any]]:
        """Every rendered output: key, url, format, width, height, bytes (no storage call)."""
        return list(self.manifest.get("variants", ()))

    @property
    def optimized(self) -> dict[str, Any] | None:
        """The optimized original in the public bucket, if rendered."""
        return self.manifest.get("original")

    def formats(self) -> list[str]:
        """Formats present in the manifest, modern first, in profile order."""
        return list(dict.fromkeys(v["format"] for v in self.variants))

    def srcset(self, fmt: str) -> str:
        """``srcset`` attribute value for one format, narrowest first."""
        items = sorted((v for v in self.variants if v["format"] == fmt), key=lambda v: v["width"])
        return ", ".join(f"{v['url']} {v['width']}w" for v in items)

    def url_for(self, width: int, fmt: str) -> str | None:
        """URL of the narrowest variant of ``fmt`` at least ``width`` wide (else the widest)."""
        items = sorted((v for v in self.variants if v["format"] == fmt), key=lambda v: v["width"])
        for v in items:
            if v["width"] >= width:
                return v["url"]
        return items[-1]["url"] if items else None

    def save(self, name: str, content: File, save: bool = True) -> None:
        # Name the original by its content so two uploads never share a key and a retry
        # or re-upload of the same bytes is the same object, never a renamed copy.
        digest = hashlib.sha256()
        for chunk in content.chunks():
            digest.update(chunk)
        content.seek(0)
        super().save(naming.original_name("", name, digest.hexdigest()), content, save)

    save.alters_data = True  # type: ignore[attr-defined]


class MediaImageField(models.ImageField):
    """An ``ImageField`` stored in the primary bucket and processed by the pipeline.

    ``profile`` names a profile in ``settings.PIPELINE["PROFILES"]`` (default: the
    ``DEFAULT_PROFILE``). The profile is looked up at processing time, so changing it and
    re-processing brings existing rows up to date.
    """

    attr_class = MediaFieldFile

    def __init__(self, *args: Any, profile: str | None = None, **kwargs: Any) -> None:
        self.profile = profile
        kwargs.setdefault("storage", storage.primary)
        super().__init__(*args, **kwargs)

    def companion(self, what: str) -> str:
        """Attribute (and column) name of one piece of companion state."""
        return f"{self.name}_{what}"

    def contribute_to_class(self, cls: type[models.Model], name: str, **kwargs: Any) -> None:
        super().contribute_to_class(cls, name, **kwargs)
        # Models rendered from migration state already hold the companions as fields of
        # their own (they were added by an AddField); adding them again would clash.
        if cls._meta.abstract or cls.__module__ == "__fake__":
            return
        existing = {f.name for f in cls._meta.local_fields}
        for suffix, field in companion_fields().items():
            column = f"{name}_{suffix}"
            if column not in existing:
                cls.add_to_class(column, field)
        from pipeline import signals

        signals.connect(cls, name)

    def deconstruct(self) -> tuple[str, str, list[Any], dict[str, Any]]:
        name, _path, args, kwargs = super().deconstruct()
        if self.profile is not None:
            kwargs["profile"] = self.profile
        if kwargs.get("storage") is storage.primary:
            del kwargs["storage"]
        return name, "pipeline.fields.MediaImageField", args, kwargs


def media_fields(model: type[models.Model]) -> list[MediaImageField]:
    """The managed image fields of a model."""
    return [f for f in model._meta.get_fields() if isinstance(f, MediaImageField)]
