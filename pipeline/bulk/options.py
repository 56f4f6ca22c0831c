"""What a run was asked to do, and the names every step of a run shares.

``Options`` is stored as JSON on the run (``MigrationRun.options``), so a resumed run does
what its first attempt was asked to. ``target_of`` turns an ``app_label.Model.field``
label into the model field it names; ``library`` is the media library (``MediaAsset``),
where contents no migrated row refers to (orphans) are imported.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.db import models

from pipeline import services as media_services
from pipeline.conf import pipeline_settings
from pipeline.models import MediaAsset, MigrationRun

__all__ = ["ASSET_FIELD", "ASSET_LABEL", "BATCH", "Options", "library", "target_of"]

BATCH = 1000
"""Rows per bulk insert, and legacy rows resolved per batch of queries."""

# The media library's field, where orphans are imported.
ASSET_LABEL = "pipeline.MediaAsset"
ASSET_FIELD = "image"


@dataclass(frozen=True)
class Options:
    """What a run was asked to do; stored as JSON on the run, so a resume does the same."""

    targets: tuple[str, ...] = ()  # "app_label.Model.field", MediaImageFields
    orphans: str = "import"  # or "skip"
    process: bool = True
    media_url: str = "/media/"  # the old site's MEDIA_URL, as rows spelled it
    media_roots: tuple[str, ...] = ()  # old absolute MEDIA_ROOTs rows may hold
    prefix: str = "legacy"
    chunk_size: int = 200  # files per chunk, at most
    chunk_bytes: int = 32 * 1024 * 1024  # bytes per chunk, at most (but one file always)
    # A re-run of an unchanged tree trusts the run history for what is stored, unless
    # asked to list the bucket too (``--verify``). Ordinary runs always list.
    verify: bool = False

    def __post_init__(self) -> None:
        if self.orphans not in ("import", "skip"):
            raise ValueError(f"orphans must be 'import' or 'skip', not {self.orphans!r}")
        if self.chunk_size < 1 or self.chunk_bytes < 1:
            raise ValueError("chunk_size and chunk_bytes must be at least 1")
        for target in self.targets:
            target_of(target)  # unknown models and fields fail before anything is written

    @classmethod
    def build(cls, **given: Any) -> Options:
        conf = pipeline_settings()["MIGRATION"]
        given = {k: v for k, v in given.items() if v is not None}
        given.setdefault("prefix", conf["KEY_PREFIX"])
        given.setdefault("chunk_size", conf["CHUNK_SIZE"])
        given.setdefault("chunk_bytes", conf["CHUNK_BYTES"])
        given.setdefault("media_url", settings.MEDIA_URL or "/media/")
        given["targets"] = tuple(dict.fromkeys(given.get("targets", ())))
        given["media_roots"] = tuple(given.get("media_roots", ()))
        return cls(**given)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["targets"], data["media_roots"] = list(self.targets), list(self.media_roots)
        return data

    @classmethod
    def of(cls, run: MigrationRun) -> Options:
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in run.options.items() if k in known}
        data["targets"] = tuple(data.get("targets", ()))
        data["media_roots"] = tuple(data.get("media_roots", ()))
        return cls(**data)

    def key_limit(self) -> int:
        """The longest key every column that will hold one can store."""
        limits = [target_of(t).field.max_length or 100 for t in self.targets]
        if self.orphans == "import":
            limits.append(MediaAsset._meta.get_field(ASSET_FIELD).max_length or 100)
        return min(limits, default=1024)


@functools.cache
def target_of(label: str) -> media_services.Target:
    """The model field an ``app_label.Model.field`` label names (``ValueError`` if none)."""
    model_label, dot, field_name = label.rpartition(".")
    if not dot or "." not in model_label:
        raise ValueError(f"expected app_label.Model.field, got {label!r}")
    try:
        return media_services.Target.of(model_label, field_name)
    except (LookupError, TypeError, FieldDoesNotExist) as e:
        raise ValueError(f"{label}: {e}") from e


def library(sha256: Any = None, **where: Any) -> models.QuerySet:
    """Media library rows (of this content, when given)."""
    rows = MediaAsset.objects.filter(**where)
    return rows.filter(source_sha256=sha256) if sha256 is not None else rows
