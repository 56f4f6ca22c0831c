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
from collections.abc import Callable, Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from pipeline import audit
from pipeline.management.cli import add_model_argument, progress_bar, select_targets, status


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
        add_model_argument(parser, what="audit only this model's or field's media")

    def handle(self, *args: Any, **options: Any) -> None:
        targets = select_targets(options["model"])
        # With --json, stdout carries only the JSON: status lines go to stderr (uncoloured:
        # they are not errors).
        stream = self.stderr if options["json"] else self.stdout
        progress = _progress(lambda line: status(stream, line))
        report = audit.media_audit(targets=targets, progress=progress)
        if options["fix"]:
            audit.media_audit_fix(report=report, progress=progress)
        if options["json"]:
            self.stdout.write(json.dumps(report.to_json(), indent=2, default=str))
        else:
            self.stdout.write(report.render_table())


def _progress(say: Callable[[str], None]) -> audit.Progress:
    @contextlib.contextmanager
    def phase(
        desc: str, *, unit: str, total: int | None = None
    ) -> Iterator[Callable[[int], object]]:
        say(f"{desc[0].upper()}{desc[1:]}...")
        with progress_bar(desc=desc, unit=unit, total=total) as bar:
            yield bar.update

    return phase
