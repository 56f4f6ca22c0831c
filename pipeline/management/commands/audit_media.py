"""Compare the buckets with the rows, and optionally repair what the pipeline can.

    python manage.py audit_media                      # report: a table on stdout
    python manage.py audit_media --json > audit.json  # the full report as JSON
    python manage.py audit_media --model demo.Photo --fix

Orphans (public objects no manifest lists) are deleted and invalidated by ``--fix``; rows
with missing outputs are re-queued. Unreferenced originals are only reported.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from tqdm import tqdm

from pipeline import audit, services


class Command(BaseCommand):
    help = (
        "Compare the buckets with the rows: public objects no manifest lists (orphans), "
        "outputs missing from the public bucket, originals no row refers to."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--fix",
            action="store_true",
            help="delete orphans (and invalidate them on the CDN) and re-process rows with "
            "missing outputs; originals are never deleted",
        )
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument(
            "--model",
            action="append",
            default=[],
            metavar="APP.MODEL[.FIELD]",
            help="audit only this model's (or field's) media (repeatable)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            targets = audit.select_targets(options["model"], services.managed_targets())
        except ValueError as e:
            raise CommandError(str(e)) from e
        # With --json, stdout carries only the JSON: status lines go to stderr.
        status = self.stderr if options["json"] else self.stdout
        progress = _progress(status)
        report = audit.media_audit(targets=targets, progress=progress)
        if options["fix"]:
            audit.media_audit_fix(report=report, progress=progress)
        if options["json"]:
            self.stdout.write(json.dumps(report.to_json(), indent=2, default=str))
        else:
            self.stdout.write(report.render_table())


def _progress(status: OutputWrapper) -> audit.Progress:
    @contextlib.contextmanager
    def phase(
        desc: str, *, unit: str, total: int | None = None
    ) -> Iterator[Callable[[int], object]]:
        status.write(f"{desc[0].upper()}{desc[1:]}...")
        # On stderr, and only on a terminal, like the other commands.
        with tqdm(desc=desc, unit=unit, total=total, file=sys.stderr, disable=None) as bar:
            yield bar.update

    return phase
