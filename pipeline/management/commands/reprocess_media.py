"""Queue managed images for processing again, e.g. after a profile changed.

python manage.py reprocess_media --profile product          # rows whose field uses it
python manage.py reprocess_media --model demo.Photo --status failed
python manage.py reprocess_media --model demo.Photo.image
python manage.py reprocess_media --all
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from pipeline import services
from pipeline.conf import pipeline_settings
from pipeline.fields import Status
from pipeline.management.cli import (
    add_model_argument,
    profile_named,
    progress_bar,
    select_targets,
    target_label,
)

BATCH = 500


class Command(BaseCommand):
    help = "Re-process managed images (all rows, or filtered by model, status or profile)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_model_argument(parser, what="only this model's or field's rows")
        parser.add_argument(
            "--status",
            action="append",
            default=[],
            choices=[s.value for s in Status],
            help="only rows in this status (repeatable)",
        )
        parser.add_argument("--profile", help="only fields that use this profile")
        parser.add_argument("--all", action="store_true", help="every row of every managed field")

    def handle(self, *args: Any, **options: Any) -> None:
        if not (options["all"] or options["model"] or options["status"] or options["profile"]):
            raise CommandError("say what to re-process: --model, --status, --profile or --all")
        targets = select_targets(options["model"])
        if options["profile"]:
            name = profile_named(options["profile"]).name
            default = pipeline_settings()["DEFAULT_PROFILE"]
            targets = [t for t in targets if (t.field.profile or default) == name]

        total = 0
        for target in targets:
            rows = target.rows().exclude(**{target.field.name: ""})
            if options["status"]:
                rows = rows.filter(**{f"{target.col('status')}__in": options["status"]})
            pks = list(rows.order_by("pk").values_list("pk", flat=True))
            label = target_label(target)
            hide = True if not pks else None  # None: shown on a terminal only
            with progress_bar(total=len(pks), desc=label, unit="row", disable=hide) as bar:
                for start in range(0, len(pks), BATCH):
                    chunk = pks[start : start + BATCH]
                    with transaction.atomic():
                        total += services.media_reprocess(
                            model_label=target.label, field_name=target.field.name, pks=chunk
                        )
                    bar.update(len(chunk))
            self.stdout.write(f"{label}: {len(pks)} row(s)")
        self.stdout.write(self.style.SUCCESS(f"Queued {total} image(s) for re-processing."))
