"""The counters of a migration run, rendered as a terminal table and as JSON.

One ``Report`` per run. Phase 1 fills the scan counters with ``count_scan``; phase 2
(coordinator, chunk tasks) fills the rest, either by aggregating its progress rows into a
fresh ``Report`` or by ``merge``-ing per-chunk reports. ``to_dict``/``from_dict`` round-trip
exactly, so a run row can keep its report as JSON and ``--report FILE`` writes the same.

Counter meanings (what a reader of the table may rely on):

* ``files_scanned``: entries the scan yielded (a skipped folder counts once).
* ``images`` / ``junk_skipped`` / ``not_images`` / ``rejected``: the scan's classification;
  ``rejected`` maps each reason to the paths that had it.
* ``uploaded``: originals written to the primary bucket by this run.
* ``failed``: what the run could not finish, by reason: originals that could not be
  stored (changed since the scan, a different object at the key) by legacy path, and rows
  whose processing failed (damage only a full decode sees) by ``where``.
* ``already_present``: originals found in the bucket with the same content (checksum or
  MD5 ETag) and linked without an upload.
* ``duplicates_folded``: legacy paths whose content is stored once under another path's key.
* ``rows_relinked``: model rows rewritten to a new key.
* ``dangling``: row values that matched no image, with where they are and why.
* ``orphans_imported`` / ``orphans_skipped``: images no row referred to (``--orphans``).
* ``variants_generated``: renditions written by processing the rows this run queued.
* ``bytes_before``: bytes of every legacy image file (copies included).
* ``bytes_after``: every byte stored for them after the run: the unique originals (private
  bucket) plus every public output of every processed row pointing at them, that is its
  optimized original and all its variants. It is larger than ``bytes_before`` by design
  (one original becomes a dozen renditions), so it says nothing about compression:
* ``bytes_optimized_originals``: the optimized originals alone, and
  ``bytes_processed_originals``: the originals they were made from (one per processed row),
  so that the two compare like with like; ``bytes_variants``: the variants alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.bulk.scan import Kind, ScanEntry

__all__ = ["DanglingReference", "Report"]

_IDENTITY = ("run_id", "source", "dry_run", "duration")
"""Fields that describe the run rather than count it: ``merge`` leaves them alone."""


@dataclass(frozen=True, slots=True)
class DanglingReference:
    """An old row's value that matched no image; it is reported and left as it was."""

    where: str  # e.g. "shop.Product.image pk=42"
    value: str
    reason: str


@dataclass
class Report:
    """Counters of one run. Mutable on purpose: it is filled while the run progresses."""

    run_id: str | None = None
    source: str = ""
    dry_run: bool = False
    files_scanned: int = 0
    images: int = 0
    junk_skipped: int = 0
    not_images: int = 0
    rejected: dict[str, list[str]] = field(default_factory=dict)
    uploaded: int = 0
    already_present: int = 0
    failed: dict[str, list[str]] = field(default_factory=dict)
    duplicates_folded: int = 0
    rows_relinked: int = 0
    dangling: list[DanglingReference] = field(default_factory=list)
    orphans_imported: int = 0
    orphans_skipped: int = 0
    variants_generated: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    bytes_optimized_originals: int = 0
    bytes_processed_originals: int = 0
    bytes_variants: int = 0
    duration: float = 0.0  # seconds, wall clock

    # -- filling -----------------------------------------------------------------------

    def count_scan(self, entry: ScanEntry) -> None:
        """Count one scanned entry under its kind."""
        self.files_scanned += 1
        if entry.kind is Kind.IMAGE:
            self.images += 1
            self.bytes_before += entry.size
        elif entry.kind is Kind.JUNK:
            self.junk_skipped += 1
        elif entry.kind is Kind.NOT_IMAGE:
            self.not_images += 1
        else:
            self.add_rejected(entry.path, entry.reason or "rejected")

    def add_rejected(self, path: str, reason: str) -> None:
        self.rejected.setdefault(reason, []).append(path)

    def add_failed(self, where: str, reason: str) -> None:
        self.failed.setdefault(reason, []).append(where)

    def add_dangling(self, where: str, value: str, reason: str) -> None:
        self.dangling.append(DanglingReference(where, value, reason))

    def merge(self, other: Report) -> None:
        """Add ``other``'s counters to this one (per-chunk reports into the run's)."""
        for f in fields(self):
            if f.name in _IDENTITY:
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name in ("rejected", "failed"):
                for reason, paths in theirs.items():
                    mine.setdefault(reason, []).extend(paths)
            elif f.name == "dangling":
                mine.extend(theirs)
            else:
                setattr(self, f.name, mine + theirs)

    # -- derived -----------------------------------------------------------------------

    @property
    def rejected_count(self) -> int:
        return sum(len(paths) for paths in self.rejected.values())

    @property
    def failed_count(self) -> int:
        return sum(len(paths) for paths in self.failed.values())

    @property
    def files_per_second(self) -> float:
        return self.files_scanned / self.duration if self.duration > 0 else 0.0

    @property
    def bytes_per_second(self) -> float:
        return self.bytes_before / self.duration if self.duration > 0 else 0.0

    @property
    def bytes_stored_originals(self) -> int:
        """The unique originals in the private bucket: ``bytes_after`` less the outputs."""
        return self.bytes_after - self.bytes_optimized_originals - self.bytes_variants

    @property
    def optimized_ratio(self) -> float | None:
        """Optimized originals over the originals they were made from (None: none made)."""
        if not self.bytes_processed_originals:
            return None
        return self.bytes_optimized_originals / self.bytes_processed_originals

    # -- output ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: every counter, rejections and dangling values in full."""
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("rejected", "failed"):
                value = {
                    reason: {"count": len(paths), "paths": sorted(paths)}
                    for reason, paths in sorted(value.items())
                }
            elif f.name == "dangling":
                value = [{"where": d.where, "value": d.value, "reason": d.reason} for d in value]
            data[f.name] = value
        data["rejected_count"] = self.rejected_count
        data["failed_count"] = self.failed_count
        data["dangling_count"] = len(self.dangling)
        data["files_per_second"] = round(self.files_per_second, 2)
        data["bytes_per_second"] = round(self.bytes_per_second, 2)
        data["bytes_stored_originals"] = self.bytes_stored_originals
        ratio = self.optimized_ratio
        data["optimized_ratio"] = None if ratio is None else round(ratio, 4)
        return data

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """The inverse of ``to_dict`` (derived keys are ignored)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for name in ("rejected", "failed"):
            kwargs[name] = {
                reason: list(item["paths"]) for reason, item in data.get(name, {}).items()
            }
        kwargs["dangling"] = [DanglingReference(**d) for d in data.get("dangling", [])]
        return cls(**kwargs)

    def render_table(self, *, max_paths: int = 5) -> str:
        """A plain-text table for the terminal, with up to ``max_paths`` examples per list."""
        title = "Media migration" + (" (dry run: nothing written)" if self.dry_run else "")
        if self.run_id:
            title += f"  run {self.run_id}"
        rows: list[tuple[str, str]] = [
            ("source", self.source or "-"),
            ("files scanned", _int(self.files_scanned)),
            ("images", _int(self.images)),
            ("skipped junk", _int(self.junk_skipped)),
            ("not images", _int(self.not_images)),
            ("rejected", _int(self.rejected_count)),
            ("uploaded", _int(self.uploaded)),
            ("already present, linked", _int(self.already_present)),
            ("failed", _int(self.failed_count)),
            ("duplicates folded", _int(self.duplicates_folded)),
            ("rows re-linked", _int(self.rows_relinked)),
            ("dangling references", _int(len(self.dangling))),
            ("orphans imported", _int(self.orphans_imported)),
            ("orphans skipped", _int(self.orphans_skipped)),
            ("variants generated", _int(self.variants_generated)),
            ("bytes before (legacy image files)", _bytes(self.bytes_before)),
            ("bytes after (originals + all outputs)", _bytes(self.bytes_after)),
            ("  originals, private bucket", _bytes(self.bytes_stored_originals)),
            ("  optimized originals, public", _bytes(self.bytes_optimized_originals)),
            ("  variants, public", _bytes(self.bytes_variants)),
            ("optimized originals vs their originals", self._optimized_vs_originals()),
            ("duration", f"{self.duration:.1f} s"),
            (
                "throughput",
                f"{self.files_per_second:,.1f} files/s, {_bytes(self.bytes_per_second)}/s",
            ),
        ]
        width = max(len(label) for label, _ in rows)
        value_width = max(len(value) for _, value in rows)
        rule = "-" * (width + 3 + value_width)
        lines = [title, rule]
        lines += [f"{label:<{width}}   {value:>{value_width}}" for label, value in rows]
        lines.append(rule)
        if self.rejected:
            lines.append("Rejected, by reason:")
            for reason, paths in sorted(self.rejected.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                lines.append(f"  {reason} ({len(paths)})")
                lines += _examples(sorted(paths), max_paths)
        if self.failed:
            lines.append("Failed, by reason:")
            for reason, paths in sorted(self.failed.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                lines.append(f"  {reason} ({len(paths)})")
                lines += _examples(sorted(paths), max_paths)
        if self.dangling:
            lines.append("Dangling references (left unchanged):")
            shown = self.dangling[:max_paths]
            lines += [f"    {d.where}: {d.value!r} ({d.reason})" for d in shown]
            if len(self.dangling) > len(shown):
                lines.append(f"    ... and {len(self.dangling) - len(shown)} more")
        return "\n".join(lines)

    def _optimized_vs_originals(self) -> str:
        ratio = self.optimized_ratio
        if ratio is None:
            return "-"
        return (
            f"{_bytes(self.bytes_optimized_originals)} vs "
            f"{_bytes(self.bytes_processed_originals)} ({ratio - 1:+.0%})"
        )


def _examples(paths: list[str], limit: int) -> list[str]:
    out = [f"    {p}" for p in paths[:limit]]
    if len(paths) > limit:
        out.append(f"    ... and {len(paths) - limit} more")
    return out


def _int(n: int) -> str:
    return f"{n:,}"


def _bytes(n: float) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    i = 0
    while abs(n) >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:,.0f} B" if i == 0 else f"{n:,.1f} {units[i]}"
