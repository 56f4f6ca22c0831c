"""``manage.py cdn_status``: the invalidation backlog, set-aside and recent requests, and
this month's cost."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from pipeline.cdn.services import CDNStatus, cdn_status
from pipeline.models.cdn import CDNInvalidation


def _when(value: datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


class Command(BaseCommand):
    help = (
        "Show pending CDN invalidation paths, requests set aside after the CDN refused them, "
        "recent invalidations and their state, and the paths sent this month with the "
        "estimated cost beyond the free tier."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--recent", type=int, default=20, help="How many recent invalidations to list."
        )
        parser.add_argument(
            "--paths", type=int, default=0, help="Also list up to this many pending paths."
        )
        parser.add_argument("--json", action="store_true", help="Print JSON instead.")

    def handle(self, *args: Any, **options: Any) -> None:
        status = cdn_status(recent=options["recent"], sample=options["paths"])
        if options["json"]:
            self.stdout.write(json.dumps(_as_json(status), indent=2))
        else:
            self._print(status)

    def _print(self, s: CDNStatus) -> None:
        def out(line: str) -> None:
            self.stdout.write(line.rstrip())

        out(f"Backend: {s.backend} ({s.target})")
        age = ""
        if s.oldest_pending:
            age = f", oldest requested {_when(s.oldest_pending)}"
        out(f"Pending paths: {s.pending}{age}")
        for path in s.pending_sample:
            out(f"  {path}")
        if s.queued:
            out(
                self.style.WARNING(
                    f"Queued requests not yet accepted: {len(s.queued)} "
                    f"({s.claimed} requested paths claimed)"
                )
            )
            for q in s.queued:
                out(
                    f"  batch {q.pk}: {q.path_count} path(s), ref {q.caller_reference}, "
                    f"attempts {q.attempts}, next attempt {_when(q.next_attempt_at)}"
                    + (f", last error: {q.last_error}" if q.last_error else "")
                )
        if s.set_aside_count:
            out(
                self.style.ERROR(
                    f"Set aside (refused by the CDN, not retried): {s.set_aside_count} "
                    f"({s.set_aside_paths} requested paths); retry or discard them in the admin"
                )
            )
            for a in s.set_aside:
                out(
                    f"  batch {a.pk}: {a.path_count} path(s), ref {a.caller_reference}, "
                    f"refused {a.refusals} time(s), set aside {_when(a.set_aside_at)}, "
                    f"reason: {a.last_error}"
                )
            if s.set_aside_count > len(s.set_aside):
                out(f"  ... and {s.set_aside_count - len(s.set_aside)} more")
        out("")
        out(f"Recent invalidations ({len(s.recent)}):")
        if s.recent:
            out(
                f"  {'ID':<16} {'STATUS':<12} {'PATHS':>6} {'WILD':>5} {'COVERS':>7}  "
                f"{'SENT':<19}  {'COMPLETED':<19}"
            )
        for inv in s.recent:
            out(
                f"  {inv.invalidation_id or '-':<16} {inv.status:<12} {inv.path_count:>6} "
                f"{inv.wildcard_count:>5} {inv.covered_count:>7}  {_when(inv.sent_at):<19}  "
                f"{_when(inv.completed_at):<19}"
            )
        cost = s.month_cost
        out("")
        out(
            f"This month (since {s.month_start:%Y-%m-%d} UTC): {cost.paths} billable path(s) "
            f"in {s.month_requests} request(s)"
            + (f"; {s.month_unbilled_paths} to unbilled backends" if s.month_unbilled_paths else "")
        )
        out(
            f"Estimated cost: {cost.billable_paths} path(s) beyond the free {cost.free_paths} "
            f"x ${cost.price_per_path} = ${cost.cost:.2f}"
        )
        if s.billable or cost.paths:
            out(
                "  (the free paths are per AWS account: invalidations sent by anything else "
                "in the account count too)"
            )


def _invalidation_json(inv: CDNInvalidation) -> dict[str, Any]:
    return {
        "batch": inv.pk,
        "id": inv.invalidation_id,
        "status": inv.status,
        "target": inv.target,
        "caller_reference": inv.caller_reference,
        "paths": inv.path_count,
        "wildcards": inv.wildcard_count,
        "covered": inv.covered_count,
        "created_at": inv.created_at.isoformat(),
        "sent_at": inv.sent_at.isoformat() if inv.sent_at else None,
        "completed_at": inv.completed_at.isoformat() if inv.completed_at else None,
        "attempts": inv.attempts,
        "refusals": inv.refusals,
        "next_attempt_at": inv.next_attempt_at.isoformat() if inv.next_attempt_at else None,
        "set_aside_at": inv.set_aside_at.isoformat() if inv.set_aside_at else None,
        "last_error": inv.last_error,
    }


def _as_json(s: CDNStatus) -> dict[str, Any]:
    return {
        "backend": s.backend,
        "target": s.target,
        "billable": s.billable,
        "pending": s.pending,
        "oldest_pending": s.oldest_pending.isoformat() if s.oldest_pending else None,
        "pending_sample": s.pending_sample,
        "claimed": s.claimed,
        "queued": [_invalidation_json(q) for q in s.queued],
        "set_aside": {
            "count": s.set_aside_count,
            "paths": s.set_aside_paths,
            "batches": [_invalidation_json(a) for a in s.set_aside],
        },
        "recent": [_invalidation_json(r) for r in s.recent],
        "month": {
            "start": s.month_start.isoformat(),
            "requests": s.month_requests,
            "paths": s.month_cost.paths,
            "free_paths": s.month_cost.free_paths,
            "billable_paths": s.month_cost.billable_paths,
            "price_per_path": str(s.month_cost.price_per_path),
            "estimated_cost": str(s.month_cost.cost),
            "unbilled_paths": s.month_unbilled_paths,
        },
    }
