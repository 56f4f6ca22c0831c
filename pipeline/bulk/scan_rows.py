"""A scan as rows: an entry as its ``MigrationItem`` row, and an earlier run's rows as the
walk's ``reuse`` (the files it need not read again).

Shared by ``scanning``, which stores a run's scan, and ``rerun``, which compares a walk
with an earlier run's scan and stores nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from pipeline.bulk import plan as rules
from pipeline.bulk.references import lookup_key
from pipeline.bulk.scan import Kind, ScanEntry
from pipeline.models import MigrationItem

__all__ = ["MAX_PATH", "PreviousScan", "item", "probe_image"]

MAX_PATH = 1000
"""Longer legacy paths are stored shortened (and rejected): they fit no column anyway."""

Item = MigrationItem.State


def probe_image(data: bytes, *, profile: Any) -> Any:
    """The scan's ``probe``: what the imaging engine makes of a file's first bytes."""
    from pipeline import imaging

    return imaging.probe(data, profile)


class PreviousScan:
    """``scan.Reuse`` backed by an earlier run's rows, merge-joined with the walk.

    Both sequences are in the scan's order (a pre-order walk of sorted names, which is the
    order of paths compared segment by segment; rows were inserted in it), so a cursor
    that only moves forward answers every question: memory is one page of rows. A path
    met out of order is simply read again; it is never matched wrongly (exact path).
    """

    PAGE = 2000
    _FIELDS = (
        "pk", "path", "size", "mtime_ns", "sha256", "md5", "kind", "format", "width",
        "height", "reason", "natural_key",
    )  # fmt: skip

    def __init__(self, run_id: int) -> None:
        self._rows = self._stream(run_id)
        self._head: tuple[tuple[str, ...], dict[str, Any]] | None = None
        self._last: dict[str, Any] | None = None
        self._advance()

    def _stream(self, run_id: int) -> Iterator[dict[str, Any]]:
        last = 0
        while True:
            page = list(
                MigrationItem.objects.filter(run_id=run_id, pk__gt=last)
                .exclude(sha256="")
                .order_by("pk")
                .values(*self._FIELDS)[: self.PAGE]
            )
            yield from page
            if len(page) < self.PAGE:
                return
            last = page[-1]["pk"]

    def _advance(self) -> None:
        row = next(self._rows, None)
        self._head = None if row is None else (_order(row["path"]), row)

    def __call__(self, path: str, size: int, mtime_ns: int) -> ScanEntry | None:
        wanted = _order(path)
        while self._head is not None and self._head[0] < wanted:
            self._advance()
        if self._head is None or self._head[0] != wanted:
            return None
        row = self._head[1]
        if row["size"] != size or row["mtime_ns"] != mtime_ns:
            return None
        self._last = row
        return ScanEntry(
            path=path,
            size=size,
            sha256=row["sha256"],
            md5=row["md5"] or None,
            kind=Kind(row["kind"]),
            format=row["format"] or None,
            width=row["width"],
            height=row["height"],
            reason=row["reason"] or None,
        )

    def natural_key(self, path: str, prefix: str) -> str | None:
        """The stored natural key of the entry just reused for ``path`` (same prefix)."""
        row = self._last
        if row is None or row["path"] != path or not row["natural_key"].startswith(prefix + "/"):
            return None
        return row["natural_key"]


def _order(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


def item(run_id: int, e: ScanEntry, prefix: str, natural: str | None) -> dict[str, Any]:
    """The ``MigrationItem`` row of a scan entry, as column values (``natural``: its stored
    natural key, when reused from an earlier scan)."""
    path, kind, reason = e.path, e.kind, e.reason or ""
    if len(path) > MAX_PATH:  # fits no column, and no key: reported, under a unique stand-in
        digest = hashlib.sha256(path.encode("utf-8", "backslashreplace")).hexdigest()
        path = f"{path[: MAX_PATH - 16]}...{digest[:12]}"
        kind, reason = Kind.REJECTED, "path too long"
    is_image = kind is Kind.IMAGE
    if is_image and natural is None:
        natural = rules.standard_key(path, e.format or "", prefix=prefix)
    return {
        "run_id": run_id,
        "path": path,
        "lookup_key": lookup_key(path),
        "size": e.size,
        "mtime_ns": e.mtime_ns,
        "sha256": e.sha256 or "",
        "md5": e.md5 or "",
        "kind": str(kind),
        "format": e.format or "",
        "width": e.width,
        "height": e.height,
        "reason": reason[:500],
        "via_link": e.via_link,
        "natural_key": natural if is_image else "",
        "state": Item.PENDING if is_image else Item.SKIPPED,
    }
