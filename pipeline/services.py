"""The pipeline's orchestration: what happens to a managed image, step by step.

Rows are addressed by ``model_label`` ("demo.Photo"), ``pk`` and the managed field's
name. Their state changes only through ``pipeline.state`` (conditional ``UPDATE``s on
the revision); work is handed to the workers only through ``pipeline.dispatch``.

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

from django.db import models, transaction
from django.utils import timezone

from pipeline import dispatch, imaging, naming, state, storage
from pipeline.cdn import request_invalidation
from pipeline.conf import pipeline_settings
from pipeline.errors import PermanentError, TransientError
from pipeline.models import PendingDeletion
from pipeline.state import Target, managed_targets

__all__ = ["Original", "Target", "managed_targets"]

logger = logging.getLogger(__name__)


# --- Reacting to the Django surface ---------------------------------------------------


def media_saved(*, model: type[models.Model], pk: Any, field_name: str, name: str) -> bool:
    """A row was saved holding ``name`` in a managed field. If the row's state describes
    another file, process this one after commit (or, for a cleared field, delete what was
    published for the old one). Returns whether the state changed."""
    target = Target.of(model._meta.label, field_name)
    change = state.file_saved(target, pk, name)
    if change is None:
        return False
    if change.revision is not None:
        dispatch.send_on_commit(
            dispatch.PROCESS_MEDIA, target.label, pk, field_name, change.revision
        )
    else:
        _delete_on_commit(sorted(manifest_keys(change.orphaned)), owner=target.owner(pk))
    return True


def media_row_deleting(*, model: type[models.Model], pk: Any, field_name: str) -> None:
    """A row is being deleted: once the delete commits, remove everything it published
    (read from the database, not from the instance being deleted) and, with
    ``DELETE_ORIGINALS``, its original unless another row still refers to it."""
    target = Target.of(model._meta.label, field_name)
    found = state.row_deleting(target, pk)
    if found is None:
        return
    manifest, original = found
    if not pipeline_settings()["DELETE_ORIGINALS"]:
        original = ""
    _delete_on_commit(sorted(manifest_keys(manifest)), original)


def media_reprocess(*, model_label: str, field_name: str, pks: Iterable[Any]) -> int:
    """Queue the given rows for processing again (admin action, command). Returns the count.

    One ``UPDATE`` marks the rows pending with a new revision, so any work still in flight
    for them is discarded; the tasks are published after the commit.
    """
    target = Target.of(model_label, field_name)
    revisions = state.mark_pending(target, pks)
    _process_on_commit(target, revisions)
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
    return len(_attach(target, pks, name, process=process, queue=True))


def media_attach_here(
    *, model_label: str, field_name: str, pks: Iterable[Any], name: str
) -> dict[Any, int]:
    """``media_attach`` with processing, but publishing nothing: the caller processes the
    rows itself (``media_process_here``) right after the commit. They are pending with the
    deadline of any pending row, so the sweep publishes their task should the caller never
    get to them. Returns each re-linked row's new revision."""
    return _attach(Target.of(model_label, field_name), pks, name, process=True, queue=False)


def _attach(
    target: Target, pks: Iterable[Any], name: str, *, process: bool, queue: bool
) -> dict[Any, int]:
    storage.check_key(name)
    field_name = target.field.name
    with transaction.atomic():
        pks = list(
            target.rows()
            .filter(pk__in=list(pks))
            .exclude(**{field_name: name})
            .values_list("pk", flat=True)
        )
        if not pks:
            return {}
        # A queryset update: no save signals, the handler must not enqueue a second time.
        target.rows().filter(pk__in=pks).update(**{field_name: name})
        if not process:
            for pk, dropped in state.mark_unprocessed(target, pks).items():
                _delete_on_commit(sorted(manifest_keys(dropped)), owner=target.owner(pk))
            return dict.fromkeys(pks, 0)
        revisions = state.mark_pending(target, pks)
        if queue:
            _process_on_commit(target, revisions)
        return revisions


def media_reprocess_here(
    *, model_label: str, field_name: str, pks: Iterable[Any]
) -> dict[Any, int]:
    """``media_reprocess``, but publishing nothing: the caller processes the rows itself
    (``media_process_here``) right after the commit; the sweep publishes their task
    should it never get to them. Returns each row's new revision."""
    return state.mark_pending(Target.of(model_label, field_name), pks)


def media_sweep(*, limit: int = 1000) -> int:
    """Publish again every row whose deadline passed (beat, every minute): its message was
    lost (a broker down at commit, or emptied), its worker died (the lease ran out), or
    it failed for a transient reason and is due for another try. Returns the count.

    Re-running a row is safe: keys are deterministic, and a duplicate message finds the
    row leased to the first one and does nothing.
    """
    swept = _publish_lost_deletions(limit)
    for target in managed_targets():
        drifted = state.drifted(target, limit)
        if drifted:
            logger.warning(
                "sweep: %d %s rows hold a file their state does not describe",
                len(drifted),
                target.label,
            )
            _process_on_commit(target, state.mark_pending(target, drifted))
            swept += len(drifted)
        revisions = state.due_rows(target, limit)
        if revisions:
            logger.warning("sweep: %d %s rows due, published again", len(revisions), target.label)
            _process_on_commit(target, revisions)
            swept += len(revisions)
    return swept


def _publish_lost_deletions(limit: int) -> int:
    """Deletions still recorded ``STALE_AFTER`` after they were last published: their
    message was lost (a broker down at commit, or emptied). Published again."""
    stale_after = timedelta(seconds=pipeline_settings()["STALE_AFTER"])
    with transaction.atomic():
        ids = list(
            PendingDeletion.objects.select_for_update(skip_locked=True)
            .filter(published_at__lt=timezone.now() - stale_after)
            .order_by("published_at")
            .values_list("pk", flat=True)[:limit]
        )
        PendingDeletion.objects.filter(pk__in=ids).update(published_at=timezone.now())
        dispatch.send_many_on_commit(dispatch.DELETE_OBJECTS, [(pk,) for pk in ids])
    if ids:
        logger.warning("sweep: %d deletions published again", len(ids))
    return len(ids)


# --- Processing -----------------------------------------------------------------------


@dataclass(frozen=True)
class Original:
    """An original's bytes already in hand, read from elsewhere than the primary bucket
    (a migration chunk has the file on disk, checked against its sha256): rendered
    instead of reading ``key`` back, for a row that still holds ``key``."""

    key: str
    data: bytes


def media_process(
    *,
    model_label: str,
    pk: Any,
    field_name: str,
    revision: int,
    task_id: str,
    original: Original | None = None,
) -> str:
    """Render one row's image into the public bucket and record the outcome on the row.

    Returns "ready", "failed" or "stale" (the row moved on to a newer revision, is gone,
    or is leased to another task). Raises ``TransientError`` (and anything unexpected)
    for the task to hand to ``media_attempt_failed``; everything written uses
    deterministic keys, so a retry overwrites instead of leaving orphans.

    ``original``: the bytes of the row's file, when the caller has them (no GET); used
    only if the claimed row still holds that very key, else the bucket is read.
    """
    target = Target.of(model_label, field_name)
    claim = state.claim(target, pk, revision, task_id)
    if claim is None:
        logger.info("%s %s rev %s: stale, leased or done; skipped", model_label, pk, revision)
        return "stale"
    return _process_claimed(target, pk, revision, task_id, claim, original)


def _process_claimed(
    target: Target,
    pk: Any,
    revision: int,
    task_id: str,
    claim: state.Claim,
    original: Original | None,
) -> str:
    """``media_process`` once the row is claimed."""
    model_label = target.label
    conf = pipeline_settings()
    if claim.attempts > conf["MAX_ATTEMPTS"]:
        last = claim.last_error.removeprefix("retrying: ") or state.WORKER_LOST
        reason = f"gave up after {conf['MAX_ATTEMPTS']} attempts: {last}"
        state.finish_failed(target, pk, revision, task_id, reason)
        logger.error("%s %s rev %s: %s", model_label, pk, revision, reason)
        return "failed"

    started = time.monotonic()
    profile = conf.profile(target.field.profile)
    try:
        if original is not None and original.key == claim.source:
            data = original.data  # the lease was just taken: no renewal before rendering
        else:
            data = storage.read(storage.primary(), claim.source)
            state.renew(target, pk, revision, task_id)
        rendering = imaging.render(data, profile)
    except PermanentError as e:
        state.finish_failed(target, pk, revision, task_id, e.reason, duration_ms=_ms_since(started))
        logger.warning("%s %s rev %s: failed: %s", model_label, pk, revision, e.reason)
        return "failed"
    if time.monotonic() - claim.taken > conf["LEASE"] / 4:  # else the lease holds long enough
        state.renew(target, pk, revision, task_id)

    manifest = _publish(target, pk, claim.source, rendering)
    new_keys, old_keys = manifest_keys(manifest), manifest_keys(claim.manifest)
    with transaction.atomic():
        done = state.finish_ready(
            target,
            pk,
            revision,
            manifest=manifest,
            checksum=rendering.source.sha256,
            width=rendering.source.width,
            height=rendering.source.height,
            format=rendering.source.format,
            placeholder={
                "color": rendering.placeholder.color,
                "preview": rendering.placeholder.preview,
            },
            duration_ms=_ms_since(started),
        )
        if done:
            # Overwritten with other bytes: stale in the CDN now (recorded in the same
            # transaction). The same bytes written again are not an overwrite.
            request_invalidation(sorted(_changed_keys(claim.manifest, manifest)))
    if not done:
        _discard_superseded(target, pk, new_keys)
        return "stale"
    _delete_on_commit(sorted(old_keys - new_keys), owner=target.owner(pk))
    logger.info(
        "%s %s rev %s: ready in %d ms (%d outputs, %d bytes from %d)",
        model_label,
        pk,
        revision,
        _ms_since(started),
        len(rendering.outputs),
        sum(o.size for o in rendering.outputs),
        rendering.source.size,
    )
    return "ready"


CLAIM_BATCH = 10
"""Rows ``media_process_here`` claims at once (one ``UPDATE``): their leases all run from
then, so a batch must be done well within ``LEASE``."""


def media_process_here(
    *,
    model_label: str,
    field_name: str,
    revisions: dict[Any, int],
    original: Original,
    task_id: str,
) -> dict[Any, str]:
    """Process rows made pending without a task (``media_attach_here``,
    ``media_reprocess_here``) here and now, from their original's bytes in hand: the same
    claim, render, outputs, manifest and outcome as their task would record, without a
    message per row or the GET of the original. Rows are claimed ``CLAIM_BATCH`` at a
    time (one ``UPDATE``).

    ``task_id`` names this attempt in the rows' lease (unique to the caller's run). The
    first row whose attempt raises is handed back as the task would hand it to its retry
    (``media_attempt_failed``); the rows claimed and not processed yet are released
    (pending, attempt given back); all of them get their task published, with the usual
    retries. Returns each row's outcome ("ready", "failed", "stale", or "queued" for those
    handed to tasks)."""
    target = Target.of(model_label, field_name)
    outcomes: dict[Any, str] = {}
    left = list(revisions.items())
    claims: dict[Any, state.Claim] = {}
    while left:
        if not claims:
            claims = state.claim_many(target, dict(left[:CLAIM_BATCH]), task_id)
            for pk, revision in left[:CLAIM_BATCH]:
                if pk not in claims:
                    logger.info(
                        "%s %s rev %s: stale, leased or done; skipped", model_label, pk, revision
                    )
                    outcomes[pk] = "stale"
            left = [(pk, r) for pk, r in left if pk not in outcomes]
            if not left:
                break
        pk, revision = left.pop(0)
        claim = claims.pop(pk)
        row = {
            "model_label": model_label,
            "pk": pk,
            "field_name": field_name,
            "revision": revision,
            "task_id": task_id,
        }
        try:
            outcomes[pk] = _process_claimed(target, pk, revision, task_id, claim, original)
        except Exception as e:  # as the task boundary does; the task takes the row over
            transient = isinstance(e, TransientError)
            if not transient:
                logger.exception("%s %s rev %s: unexpected error", model_label, pk, revision)
            reason = str(e) if transient else f"unexpected error: {type(e).__name__}: {e}"
            media_attempt_failed(**row, reason=reason, transient=transient, retry_in=0.0)
            state.release(target, {p: r for p, r in left if p in claims}, task_id)
            handed = [(pk, revision), *left]
            dispatch.send_many(
                dispatch.PROCESS_MEDIA, [(model_label, p, field_name, r) for p, r in handed]
            )
            outcomes.update(dict.fromkeys([p for p, _r in handed], "queued"))
            break
    return outcomes


def media_attempt_failed(
    *,
    model_label: str,
    pk: Any,
    field_name: str,
    revision: int,
    task_id: str,
    reason: str,
    transient: bool,
    retry_in: float | None,
) -> None:
    """An attempt ended in an error a retry may cure. ``retry_in``: seconds until the
    task's retry, or None when there is none (the transient error outlasted
    ``RETRY_WINDOW``, or the task runs in-process where a retry would loop in the caller).

    Transient trouble (S3 or the network away, a time limit) is bounded by the window;
    anything unexpected is counted, and the row fails once ``MAX_ATTEMPTS`` are used up.
    A row failed for a transient reason is tried again by the sweep after another window.
    """
    target = Target.of(model_label, field_name)
    conf = pipeline_settings()
    if retry_in is not None:
        state.back_to_pending(
            target,
            pk,
            revision,
            task_id,
            f"retrying: {reason}",
            due_in=retry_in + conf["STALE_AFTER"],
            counted=not transient,
        )
        logger.warning(
            "%s %s rev %s: retry in %.0f s: %s", model_label, pk, revision, retry_in, reason
        )
        return
    retry_after = conf["RETRY_WINDOW"] if transient else None
    state.finish_failed(target, pk, revision, task_id, reason, retry_after=retry_after)
    logger.error("%s %s rev %s: failed: %s", model_label, pk, revision, reason)


def media_run_deletion(*, deletion_id: int) -> None:
    """Carry out a recorded deletion (the task's body); gone when done, so a redelivered
    or re-published message finds nothing left to do."""
    deletion = PendingDeletion.objects.filter(pk=deletion_id).first()
    if deletion is None:
        return
    media_delete_objects(keys=deletion.keys, original=deletion.original, owner=deletion.owner)
    PendingDeletion.objects.filter(pk=deletion_id).delete()


def media_delete_objects(
    *, keys: list[str], original: str = "", owner: list[Any] | None = None
) -> None:
    """Delete public objects, invalidate them, and delete ``original`` from the primary
    bucket unless a row still refers to it (originals are shared by content: two rows
    can hold the same one, and the migration shares them on purpose).

    ``owner`` (model label, pk, field) is the row the objects came from, when it still
    exists: a delete can run late (a backlog, retries), by when the row may hold the
    same file again and a newer render may have written these very keys; those the row
    uses now are kept."""
    if owner:
        keys = sorted(set(keys) - _in_use(*owner, keys=keys))
    public = storage.public()
    for key in keys:
        storage.delete(public, key)
    request_invalidation(keys)
    if original and not _original_in_use(original):
        storage.delete(storage.primary(), original)


def manifest_keys(manifest: dict[str, Any]) -> set[str]:
    """Every public key a manifest references."""
    return {e["key"] for e in _entries(manifest)}


def _entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    entries = list(manifest.get("variants", ()))
    if manifest.get("original"):
        entries.append(manifest["original"])
    return entries


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    """Keys in both manifests whose bytes differ (or are not known to be equal)."""
    before = {e["key"]: e.get("sha256") for e in _entries(old)}
    return {
        e["key"]
        for e in _entries(new)
        if e["key"] in before and (before[e["key"]] is None or before[e["key"]] != e.get("sha256"))
    }


def _in_use(model_label: str, pk: Any, field_name: str, *, keys: list[str]) -> set[str]:
    """Which of ``keys`` the row uses now: its manifest's, and any in the folder of the
    file it holds (a render in flight writes there before its manifest lands)."""
    target = Target.of(model_label, field_name)
    row = target.rows(pk).values(field_name, target.col("manifest")).first()
    if row is None:
        return set()
    used = manifest_keys(row[target.col("manifest")] or {})
    if row[field_name]:
        folder = naming.public_folder(
            prefix=pipeline_settings()["KEY_PREFIX"],
            model_label=target.label,
            pk=pk,
            source_name=row[field_name],
        )
        used |= {k for k in keys if k.startswith(f"{folder}/")}
    return used & set(keys)


def _original_in_use(name: str) -> bool:
    return any(t.rows().filter(**{t.field.name: name}).exists() for t in managed_targets())


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


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
            "url": url,
            "format": out.format,
            "width": out.width,
            "height": out.height,
            "bytes": out.size,
            "sha256": out.sha256,
            # The encoder quality used (None: lossless or the source's own file) and, with
            # auto-quality, the SSIMULACRA2 score it reached.
            "quality": out.quality,
            **({"score": out.score} if out.score is not None else {}),
        }
        for key, url, out in zip(keys, storage.urls(public, keys), rendering.outputs, strict=True)
    ]
    original = next(e for e in entries if e["name"] == "original")
    return {
        "profile": rendering.profile,
        "source": source_name,
        "content": rendering.content,
        "original": original,
        "variants": [e for e in entries if e["name"] != "original"],
        "skipped": [
            {"name": s.name, "width": s.width, "reason": s.reason} for s in rendering.skipped
        ],
        "notes": list(rendering.notes),
    }


def _discard_superseded(target: Target, pk: Any, keys: set[str]) -> None:
    """A newer revision took the row while we rendered, or the row was deleted. Our
    outputs live in a folder unique to our source file: unless the row holds that same
    file again (then the newer revision writes these very keys, and the deletion keeps
    them), they are orphans."""
    _delete_on_commit(sorted(keys), owner=target.owner(pk))
    logger.info("%s %s: superseded while processing, outputs discarded", target.label, pk)


def _process_on_commit(target: Target, revisions: dict[Any, int]) -> None:
    dispatch.send_many_on_commit(
        dispatch.PROCESS_MEDIA,
        [(target.label, pk, target.field.name, rev) for pk, rev in revisions.items()],
    )


def _delete_on_commit(
    keys: list[str], original: str = "", *, owner: list[Any] | None = None
) -> None:
    """Record the deletion in the current transaction; publish it once that commits."""
    if keys or original:
        deletion = PendingDeletion.objects.create(keys=keys, original=original, owner=owner)
        dispatch.send_on_commit(dispatch.DELETE_OBJECTS, deletion.pk)


def storage_check(*, key: str) -> dict[str, object]:
    """Round-trip a small object through the public bucket: proves a worker can reach it."""
    body = f"pipeline storage check {key}\n".encode()
    bucket = storage.public()
    storage.write(bucket, key, body, content_type="text/plain", cache_control="no-store")
    ok = storage.read(bucket, key) == body
    return {"key": key, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "ok": ok}
