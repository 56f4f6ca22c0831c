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


class PipelineOwned:
    """A companion column that only the pipeline writes.

    On ``UPDATE`` (a user's ``save()``), ``pre_save`` returns ``F(column)``: the statement
    writes the column back to itself, so a stale instance can never overwrite the state
    the workers wrote since it was loaded. On ``INSERT`` it returns the default, so a row
    copied with ``pk = None`` never inherits another row's manifest (whose objects the new
    row's first render would then delete). Raw saves (fixtures) keep their values, and
    the services write with queryset ``update()``, which never calls ``pre_save``.

    ``deconstruct`` names the plain Django field: the protection changes no schema, so
    migrations stay what ``makemigrations`` wrote before it existed.
    """

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        if not add:
            return models.F(self.attname)  # type: ignore[attr-defined]
        value = self.get_default()  # type: ignore[attr-defined]
        setattr(model_instance, self.attname, value)  # type: ignore[attr-defined]
        return value

    def deconstruct(self) -> tuple[str, str, list[Any], dict[str, Any]]:
        name, _path, args, kwargs = super().deconstruct()  # type: ignore[misc]
        base = next(c for c in type(self).__mro__ if c.__module__.startswith("django."))
        return name, f"django.db.models.{base.__name__}", args, kwargs


def _owned(field_class: type[models.Field]) -> type[models.Field]:
    return type(f"Owned{field_class.__name__}", (PipelineOwned, field_class), {})


OwnedCharField = _owned(models.CharField)
OwnedTextField = _owned(models.TextField)
OwnedPositiveIntegerField = _owned(models.PositiveIntegerField)
OwnedPositiveSmallIntegerField = _owned(models.PositiveSmallIntegerField)
OwnedDateTimeField = _owned(models.DateTimeField)
OwnedJSONField = _owned(models.JSONField)


def companion_fields() -> dict[str, models.Field]:
    """The state stored beside each managed image, keyed by column suffix."""
    return {
        "status": OwnedCharField(
            max_length=10,
            choices=Status.choices,
            default=Status.EMPTY,
            db_index=True,
            editable=False,
        ),
        # Bumped on every change of the image; work for an older revision is discarded.
        "revision": OwnedPositiveIntegerField(default=0, editable=False),
        # The file this state describes. A save whose file differs from it (however stale
        # the saving instance) starts a new revision: the state follows the file the row
        # holds, decided by the database, not by what an instance remembers.
        "source": OwnedTextField(blank=True, default="", editable=False),
        "status_changed": OwnedDateTimeField(null=True, blank=True, editable=False),
        # When the sweep looks at the row again if nothing else happened: a lost message
        # (pending), a lost worker (processing: the lease), a transient failure to retry
        # later (failed). Null when the row needs nothing (ready, empty, failed for good).
        "due_at": OwnedDateTimeField(null=True, blank=True, db_index=True, editable=False),
        # The task (message id) holding the lease: its redelivery may claim at once.
        "claimed_by": OwnedCharField(max_length=64, blank=True, default="", editable=False),
        "checksum": OwnedCharField(max_length=64, blank=True, default="", editable=False),
        "width": OwnedPositiveIntegerField(null=True, blank=True, editable=False),
        "height": OwnedPositiveIntegerField(null=True, blank=True, editable=False),
        "format": OwnedCharField(max_length=10, blank=True, default="", editable=False),
        "manifest": OwnedJSONField(default=dict, blank=True, editable=False),
        "placeholder": OwnedJSONField(default=dict, blank=True, editable=False),
        "error": OwnedTextField(blank=True, default="", editable=False),
        "attempts": OwnedPositiveSmallIntegerField(default=0, editable=False),
        "processed_at": OwnedDateTimeField(null=True, blank=True, editable=False),
        "duration_ms": OwnedPositiveIntegerField(null=True, blank=True, editable=False),
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
        kwargs.setdefault("storage", storage.PRIMARY)
        super().__init__(*args, **kwargs)

    def companion(self, what: str) -> str:
        """Attribute (and column) name of one piece of companion state."""
        return f"{self.name}_{what}"

    def companions(self) -> list[models.Field]:
        """The companion fields of this field on its model."""
        return [self.model._meta.get_field(self.companion(s)) for s in companion_fields()]

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

    def deconstruct(self) -> tuple[str, str, list[Any], dict[str, Any]]:
        name, _path, args, kwargs = super().deconstruct()
        if self.profile is not None:
            kwargs["profile"] = self.profile
        if kwargs.get("storage") in (storage.PRIMARY, storage.primary):
            del kwargs["storage"]
        return name, "pipeline.fields.MediaImageField", args, kwargs


def media_fields(model: type[models.Model]) -> list[MediaImageField]:
    """The managed image fields of a model."""
    return [f for f in model._meta.get_fields() if isinstance(f, MediaImageField)]
