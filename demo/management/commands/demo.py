"""The main job on the embedded defaults: migrate a messy legacy media folder.

1. Generates the sample legacy MEDIA_ROOT into ``var/legacy-media`` (once) from the
   photos shipped in ``demo/photos``, at their own sizes: nested folders, odd names in
   both unicode forms, copies, litter, broken files, links.
2. Creates the old site's ``Photo`` rows (once), holding the legacy values in every
   spelling old rows used (relative, /media/..., absolute URLs, URL-encoded, other case
   or unicode form, dangling), with ``bulk_create`` as an old import would (no signals).
3. Runs ``migrate_media var/legacy-media --model demo.Photo.image``, which ends with the
   report. Running the demo again is a quick no-op run of the same migration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from demo.models import Photo
from demo.sample_tree import build_sample_tree

PHOTOS = Path(__file__).resolve().parents[2] / "photos"
"""The photos shipped with the demo (origins and licences in its README)."""
LEGACY_TITLE = "legacy"


class Command(BaseCommand):
    help = "Migrate a generated legacy media folder and its old Photo rows; print the report."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--photos",
            type=Path,
            default=PHOTOS,
            help="folder of photos to build the sample from (default: demo/photos)",
        )
        parser.add_argument("--dest", type=Path, default=Path(settings.VAR_DIR) / "legacy-media")

    def handle(self, *args: Any, photos: Path, dest: Path, **options: Any) -> None:
        values_file = dest.with_name(dest.name + "-values.json")
        if not dest.exists():
            manifest = build_sample_tree(dest, photos)
            values = [{"value": v.value, "style": v.style} for v in manifest.legacy_values]
            values_file.write_text(json.dumps(values, ensure_ascii=False, indent=1))
            self.stderr.write(f"Sample legacy folder written to {dest}")
        legacy_rows = Photo.objects.filter(title__startswith=f"{LEGACY_TITLE} ")
        if not legacy_rows.exists() and values_file.exists():
            values = json.loads(values_file.read_text())
            Photo.objects.bulk_create(
                Photo(title=f"{LEGACY_TITLE} {i:02d} ({v['style']})", image=v["value"])
                for i, v in enumerate(values, 1)
            )
            self.stderr.write(f"{len(values)} legacy Photo rows created")
        call_command(
            "migrate_media",
            str(dest),
            "--model",
            "demo.Photo.image",
            stdout=self.stdout,
            stderr=self.stderr,
        )
