"""The pipeline's orchestration; the only code that writes rows.

Rows are addressed by ``model_label`` ("demo.Photo"), ``pk`` and the managed field's
name, and every write is a conditional ``UPDATE`` on the row's revision: work started for
an older image can never overwrite the state of a newer one.

    signal -> task -> media_process -> imaging.render -> storage -> cdn -> row
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from pipeline import imaging, naming, storage
from pipeline.cdn import request_invalidation
from pipeline.conf import pipeline_settings
from pipeline.errors import PermanentError
from pipeline.fields import MediaImageField, Status, media_fields

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One managed field of one model: where the row state lives."""

    model: type[models.Model]
    field: MediaImageField

    @classmethod
    def of(cls, model_label: str, field_name: str) -> Target:
        model = apps.get_model(model_label)
        field = model._meta.get_field(field_name)
        if not isinstance(field, MediaImageField):
            raise TypeError(f"{model_label}.{field_name} is not a MediaImageField")
        return cls(model, field)

    @property
    def label(self) -> str:
        return self.model._meta.label

    def col(self, what: str) -> str:
        return self.field.companion(what)

    def rows(self, pk: Any = None) -> models.QuerySet:
        qs = self.model._default_manager.all()
        return qs if pk is None else qs.filter(pk=pk)

    def state(self, status: str, **values: Any) -> dict[str, Any]:
        """Keyword arguments for ``update()``: a status change plus companion values."""
        return {
            self.col("status"): status,
            self.col("status_changed"): timezone.now(),
            **{self.col(k): v for k, v in values.items()},
        }


# --- Reacting to the Django surface ---------------------------------------------------


def media_file_changed(*, instance: models.Model, field_name: str) -> None:
    """A save changed the managed file: mark the row pending and process after commit."""
    target = Target(type(instance), instance._meta.get_field(field_name))
    name = str(getattr(instance, field_name).name or "")
    if not name:
        _clear(target, instance)
        return
    revision = _mark_pending(target, [instance.pk])[instance.pk]
    setattr(instance, target.col("status"), Status.PENDING)
    setattr(instance, target.col("revision"), revision)
    _enqueue_after_commit(target, {instance.pk: revision})


def media_row_deleted(*, instance: models.Model, field_name: str) -> None:
    """A row is being deleted: remove its public objects once the delete commits."""
    target = Target(type(instance), instance._meta.get_field(field_name))
    keys = manifest_keys(getattr(instance, target.col("manifest")) or {})
    original = str(getattr(instance, field_name).name or "")
    if not pipeline_settings()["DELETE_ORIGINALS"]:
        original = ""
    if keys or original:
        from pipeline import tasks

        transaction.on_commit(lambda: tasks.delete_objects.delay(sorted(keys), original))


def media_reprocess(*, model_label: str, field_name: str, pks: Iterable[Any]) -> int:
    """Queue the given rows for processing again (admin action, command). Returns the count.

    One ``UPDATE`` marks the rows pending with a new revision, so any work still in flight
    for them is discarded; the tasks are published after the commit.
    """
    target = Target.of(model_label, field_name)
    revisions = _mark_pending(target, list(pks))
    _enqueue_after_commit(target, revisions)
    return len(revisions)


def media_attach(
    *, model_label: str, field_name: str, pks: Iterable[Any], name: str, process: bool = True
) -> int:
    """Point rows' managed field at an original already in the primary bucket (bulk
    migration), and queue them for processing unless ``process`` is False.

    Rows already pointing at ``name`` are left alone, so a second run changes nothing.
    Returns how many rows were re-linked.
    """
    target = Target.of(model_label, field_name)
    storage.check_key(name)
    with transaction.atomic():
        pks = list(
            target.rows()
            .filter(pk__in=list(pks))
            .exclude(**{field_name: name})
            .values_list("pk", flat=True)
        )
        if not pks:
            return 0
        # A queryset update: no save signals, the handler must not enqueue a second time.
        target.rows().filter(pk__in=pks).update(**{field_name: name})
        if process:
            _enqueue_after_commit(target, _mark_pending(target, pks))
        else:
            target.rows().filter(pk__in=pks).update(
                **target.state(Status.EMPTY, manifest={}, error="")
            )
    return len(pks)


def media_sweep_stale() -> int:
    """Re-enqueue rows left pending or processing for longer than ``STALE_AFTER``.

    ``transaction.on_commit`` publishing is at-most-once, and a worker can die: this is
    what guarantees that no row stays stuck. Re-running a row is safe (idempotent keys).
    """
    cutoff = timezone.now() - timedelta(seconds=pipeline_settings()["STALE_AFTER"])
    swept = 0
    for target in managed_targets():
        stuck = target.rows().filter(
            Q(**{f"{target.col('status')}__in": [Status.PENDING, Status.PROCESSING]}),
            Q(**{f"{target.col('status_changed')}__lt": cutoff})
            | Q(**{f"{target.col('status_changed')}__isnull": True}),
        )
        revisions = dict(stuck.values_list("pk", target.col("revision"))[:1000])
        if not revisions:
            continue
        with transaction.atomic():
            target.rows().filter(pk__in=revisions).update(
                **{target.col("status_changed"): timezone.now()}
            )
            _enqueue_after_commit(target, revisions)
        logger.warning("sweep: re-enqueued %d stuck %s rows", len(revisions), target.label)
        swept += len(revisions)
    return swept


def managed_targets() -> list[Target]:
    """Every (concrete model, managed field) pair in the project."""
    return [
        Target(model, field)
        for model in apps.get_models()
        if not model._meta.abstract
        for field in media_fields(model)
    ]


# --- Processing -----------------------------------------------------------------------


def media_process(*, model_label: str, pk: Any, field_name: str, revision: int) -> str:
    """Render one row's image into the public bucket and record the outcome on the row.

    Returns "ready", "failed" or "stale" (the row moved on to a newer revision, or is
    gone). Raises ``TransientError`` for the task to retry; everything it writes uses
    deterministic keys, so a retry overwrites instead of leaving orphans.
    """
    target = Target.of(model_label, field_name)
    claimed = (
        target.rows(pk)
        .filter(
            **{
                target.col("revision"): revision,
                f"{target.col('status')}__in": [Status.PENDING, Status.PROCESSING],
            }
        )
        .update(
            **target.state(Status.PROCESSING),
            **{target.col("attempts"): F(target.col("attempts")) + 1},
        )
    )
    if not claimed:
        logger.info("%s %s rev %s: stale or already done, skipped", model_label, pk, revision)
        return "stale"

    started = time.monotonic()
    row = target.rows(pk).values(field_name, target.col("manifest")).get()
    source_name: str = row[field_name]
    old_manifest: dict[str, Any] = row[target.col("manifest")] or {}
    profile = pipeline_settings().profile(target.field.profile)
    try:
        data = storage.read(storage.primary(), source_name)
        rendering = imaging.render(data, profile)
    except PermanentError as e:
        _finish_failed(target, pk, revision, e.reason, started)
        return "failed"

    manifest = _publish(target, pk, source_name, rendering)
    new_keys = manifest_keys(manifest)
    old_keys = manifest_keys(old_manifest)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    with transaction.atomic():
        done = (
            target.rows(pk)
            .filter(**{target.col("revision"): revision})
            .update(
                **target.state(
                    Status.READY,
                    checksum=rendering.source.sha256,
                    width=rendering.source.width,
                    height=rendering.source.height,
                    format=rendering.source.format,
                    manifest=manifest,
                    placeholder={
                        "color": rendering.placeholder.color,
                        "preview": rendering.placeholder.preview,
                    },
                    error="",
                    processed_at=timezone.now(),
                    duration_ms=elapsed_ms,
                )
            )
        )
        if done:
            # Overwritten paths are stale in the CDN now; recorded in the same transaction.
            request_invalidation(sorted(new_keys & old_keys))
    if not done:
        _discard_stale_outputs(target, pk, source_name, new_keys)
        return "stale"
    removed = old_keys - new_keys
    if removed:
        from pipeline import tasks

        tasks.delete_objects.delay(sorted(removed), "")
    logger.info(
        "%s %s rev %s: ready in %d ms (%d outputs, %d bytes from %d)",
        model_label,
        pk,
        revision,
        elapsed_ms,
        len(rendering.outputs),
        sum(o.size for o in rendering.outputs),
        rendering.source.size,
    )
    return "ready"


def media_give_up(
    *, model_label: str, pk: Any, field_name: str, revision: int, reason: str
) -> None:
    """Transient errors outlasted every retry: record it (the sweep does not resurrect it)."""
    target = Target.of(model_label, field_name)
    _finish_failed(target, pk, revision, f"gave up after retries: {reason}", None)


def media_delete_objects(*, keys: list[str], original: str = "") -> None:
    """Delete public objects (and optionally an original) and invalidate them."""
    public = storage.public()
    for key in keys:
        storage.delete(public, key)
    if original:
        storage.delete(storage.primary(), original)
    request_invalidation(keys)


def manifest_keys(manifest: dict[str, Any]) -> set[str]:
    """Every public key a manifest references."""
    entries = list(manifest.get("variants", ()))
    if manifest.get("original"):
        entries.append(manifest["original"])
    return {e["key"] for e in entries}


def _publish(
    target: Target, pk: Any, source_name: str, rendering: imaging.Rendering
) -> dict[str, Any]:
    """Write every output to the public bucket; return the manifest that describes them."""
    conf = pipeline_settings()
    public = storage.public()
    folder = naming.public_folder(
        prefix=conf["KEY_PREFIX"], model_label=target.label, pk=pk, source_name=source_name
    )
    keys = [naming.output_key(folder, out.name, out.extension) for out in rendering.outputs]
    storage.write_many(
        public,
        [
            storage.Put(key, out.data, out.content_type, conf["CACHE_CONTROL"])
            for key, out in zip(keys, rendering.outputs, strict=True)
        ],
    )
    entries = [
        {
            "name": out.name,
            "key": key,
            "url": storage.url(public, key),
            "format": out.format,
            "width": out.width,
            "height": out.height,
            "bytes": out.size,
            "sha256": out.sha256,
        }
        for key, out in zip(keys, rendering.outputs, strict=True)
    ]
    original = next(e for e in entries if e["name"] == "original")
    return {
        "profile": rendering.profile,
        "source": source_name,
        "original": original,
        "variants": [e for e in entries if e["name"] != "original"],
        "skipped": [
            {"name": s.name, "width": s.width, "reason": s.reason} for s in rendering.skipped
        ],
    }


def _discard_stale_outputs(target: Target, pk: Any, source_name: str, keys: set[str]) -> None:
    """A newer revision took the row while we rendered. Our outputs live under a folder
    named after our source file; unless the row still points at that same file (then the
    newer revision writes the very same keys), they are orphans: delete them."""
    current = target.rows(pk).values_list(target.field.name, flat=True).first()
    if current != source_name and keys:
        public = storage.public()
        for key in sorted(keys):
            storage.delete(public, key)
    logger.info("%s %s: superseded while processing, outputs discarded", target.label, pk)


def _finish_failed(
    target: Target, pk: Any, revision: int, reason: str, started: float | None
) -> None:
    values: dict[str, Any] = {"error": reason[:2000]}
    if started is not None:
        values["duration_ms"] = int((time.monotonic() - started) * 1000)
    target.rows(pk).filter(**{target.col("revision"): revision}).update(
        **target.state(Status.FAILED, **values)
    )
    logger.warning("%s %s rev %s: failed: %s", target.label, pk, revision, reason)


def _mark_pending(target: Target, pks: list[Any]) -> dict[Any, int]:
    """Bump the revision and mark pending; returns each row's new revision."""
    with transaction.atomic():
        rows = target.rows().filter(pk__in=pks).exclude(**{target.field.name: ""})
        rows.update(
            **target.state(Status.PENDING, error=""),
            **{target.col("revision"): F(target.col("revision")) + 1},
        )
        # Read back inside the transaction: the UPDATE holds the row locks until commit.
        return dict(target.rows().filter(pk__in=pks).values_list("pk", target.col("revision")))


def _clear(target: Target, instance: models.Model) -> None:
    """The file was removed from the row: forget its outputs and delete them after commit."""
    keys = manifest_keys(getattr(instance, target.col("manifest")) or {})
    target.rows(instance.pk).update(
        **target.state(
            Status.EMPTY,
            manifest={},
            placeholder={},
            checksum="",
            width=None,
            height=None,
            format="",
            error="",
        ),
        **{target.col("revision"): F(target.col("revision")) + 1},
    )
    setattr(instance, target.col("status"), Status.EMPTY)
    setattr(instance, target.col("manifest"), {})
    if keys:
        from pipeline import tasks

        transaction.on_commit(lambda: tasks.delete_objects.delay(sorted(keys), ""))


def _enqueue_after_commit(target: Target, revisions: dict[Any, int]) -> None:
    from pipeline import tasks

    label, field_name = target.label, target.field.name

    def publish() -> None:
        for pk, revision in revisions.items():
            tasks.process_media.delay(label, pk, field_name, revision)

    transaction.on_commit(publish)


def storage_check(*, key: str) -> dict[str, object]:
    """Round-trip a small object through the public bucket: proves a worker can reach it."""
    body = f"pipeline storage check {key}\n".encode()
    bucket = storage.public()
    storage.write(bucket, key, body, content_type="text/plain", cache_control="no-store")
    ok = storage.read(bucket, key) == body
    return {"key": key, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "ok": ok}
