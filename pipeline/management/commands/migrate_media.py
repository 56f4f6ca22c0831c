"""Migrate a legacy media folder: upload, standardize, de-duplicate, re-link, process.

    python manage.py migrate_media /srv/old-site/media --model shop.Product.image
    python manage.py migrate_media /srv/old-site/media --model shop.Product.image --dry-run
    python manage.py migrate_media /srv/old-site/media --resume 12

The scan runs here; the chunks run in the Celery workers, which read the files from the
same path (mount the folder at the same place on every worker host, read-only is enough).
Without a broker (no REDIS_URL) everything runs in this process. Running the same command
again continues an unfinished run of the folder, or, after a finished one, checks that
nothing changed (quickly: unchanged files are not read again).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from pipeline.bulk.chunks import migration_run_chunk
from pipeline.bulk.coordinator import (
    is_eager,
    migration_advance,
    migration_claim_chunk,
    migration_top_up,
)
from pipeline.bulk.options import Options
from pipeline.bulk.planning import migration_plan
from pipeline.bulk.report import Report
from pipeline.bulk.reporting import migration_progress, migration_report
from pipeline.bulk.runs import (
    dry_run,
    migration_create,
    migration_detach,
    migration_find_resumable,
    migration_requeue,
)
from pipeline.bulk.scanning import migration_scan
from pipeline.management.cli import add_model_argument, progress_bar, select_targets, target_label
from pipeline.models import MigrationRun

POLL_MIN, POLL_MAX = 0.05, 0.5  # seconds between two looks at a run's progress


class _Poll:
    """When to look at a run again. Soon at first, so that a phase already over is noticed
    at once, then backing off to ``POLL_MAX``: each look costs queries, and on a small
    machine the command's polling competes with the workers for the same cores. But never
    later than the work's own pace says it will be over (from the progress seen so far),
    so the end of a phase is usually seen within ``POLL_MIN``, not up to ``POLL_MAX`` late."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.delay = POLL_MIN
        self.started = time.monotonic()
        self.first: int | None = None

    def wait(self, done: int = 0) -> None:
        time.sleep(max(POLL_MIN, min(self.delay, self._time_left(done))))
        self.delay = min(self.delay * 2, POLL_MAX)

    def _time_left(self, done: int) -> float:
        """Seconds until ``total`` at the pace seen since the first look (inf if unknown)."""
        if self.first is None:
            self.first, self.started = done, time.monotonic()
        moved = done - self.first
        if moved <= 0 or done >= self.total:
            return float("inf")
        pace = moved / (time.monotonic() - self.started)
        return (self.total - done) / pace


Run = MigrationRun.State


class Command(BaseCommand):
    help = "Migrate a legacy MEDIA_ROOT to the primary bucket and re-link the database rows."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="the legacy media folder (workers must see it too)")
        add_model_argument(
            parser, what="the image fields whose rows hold legacy paths", dest="targets"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="write nothing anywhere; print the report"
        )
        parser.add_argument(
            "--orphans",
            choices=["import", "skip"],
            default="import",
            help="images no row refers to: import them into the media library (default)",
        )
        parser.add_argument(
            "--no-process", action="store_true", help="upload and re-link only; render nothing"
        )
        parser.add_argument("--resume", type=int, metavar="RUN_ID", help="continue this run")
        parser.add_argument(
            "--detach", action="store_true", help="start the run in the workers and return"
        )
        parser.add_argument("--report", type=Path, metavar="FILE", help="write the report as JSON")
        parser.add_argument(
            "--media-url",
            help="the old site's MEDIA_URL, as rows spell it (default: settings.MEDIA_URL)",
        )
        parser.add_argument(
            "--old-media-root",
            action="append",
            default=[],
            dest="media_roots",
            metavar="PATH",
            help="an absolute MEDIA_ROOT that rows may hold in full (repeatable)",
        )
        parser.add_argument(
            "--chunk-size", type=int, help="at most N files per chunk task (default: CHUNK_SIZE)"
        )
        parser.add_argument(
            "--verify",
            action="store_true",
            help="when nothing changed since the last run, still list the bucket and store "
            "again any original missing from it (other runs always do)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source = Path(options["source"]).expanduser()
        if not source.is_dir():
            raise CommandError(f"{source} is not a folder: give the legacy MEDIA_ROOT folder")
        report_file: Path | None = options["report"]
        if report_file is not None and (report_file.is_dir() or not report_file.parent.is_dir()):
            # Found now, not after a migration of hours.
            raise CommandError(
                f"--report {report_file}: give a file name in an existing folder "
                "(the report is written there as JSON)"
            )
        # "app.Model" means all its managed image fields; stored on the run field by field.
        targets = (
            [target_label(t) for t in select_targets(options["targets"])]
            if options["targets"]
            else []
        )
        try:
            opts = Options.build(
                targets=targets,
                orphans=options["orphans"],
                process=not options["no_process"],
                media_url=options["media_url"],
                media_roots=options["media_roots"],
                chunk_size=options["chunk_size"],
                verify=options["verify"],
            )
        except ValueError as e:
            raise CommandError(str(e)) from e
        eager = is_eager()
        if eager:
            self.stdout.write(
                self.style.WARNING(
                    "Celery runs tasks eagerly (no broker): the migration runs in this process."
                )
            )
            if options["detach"]:
                self.stdout.write(self.style.WARNING("--detach needs workers: running here."))
        if options["dry_run"]:
            report = self._dry_run(str(source), opts)
        else:
            run = self._run_for(str(source), opts, options["resume"])
            if options["detach"] and not eager:
                self._detach(run)
                return
            report = self._follow(run)
        self.stdout.write(report.render_table())
        if report_file is not None:
            try:
                report_file.write_text(report.to_json() + "\n", encoding="utf-8")
            except OSError as e:
                raise CommandError(
                    f"--report {report_file}: cannot write it ({e.strerror or e}); the run "
                    "itself is done (its report is above)"
                ) from e
            self.stdout.write(f"Report written to {report_file}")

    # -- runs ------------------------------------------------------------------------------

    def _run_for(self, source: str, opts: Options, resume: int | None) -> MigrationRun:
        if resume is not None:
            run = MigrationRun.objects.filter(pk=resume).first()
            if run is None:
                raise CommandError(f"no migration run {resume}")
            if Path(run.source) != Path(source).resolve():
                raise CommandError(f"run {resume} migrated {run.source}, not {source}")
        else:
            run = migration_find_resumable(source=source)
        if run is None:
            run = migration_create(source=source, options=opts)
            self.stdout.write(f"Migration run {run.pk} of {run.source}")
            return run
        if run.options != opts.to_json() and resume is None:
            self.stdout.write(
                self.style.WARNING(f"Run {run.pk} has other options; it continues with its own.")
            )
        if run.state != Run.DONE:
            self.stdout.write(f"Resuming migration run {run.pk} ({run.get_state_display()})")
            migration_requeue(run_id=run.pk)
        return run

    def _detach(self, run: MigrationRun) -> None:
        migration_detach(run_id=run.pk)
        self.stdout.write(
            f"Migration run {run.pk} continues in the workers. Follow it in the admin, or "
            f"with: python manage.py migrate_media {run.source} --resume {run.pk}"
        )

    def _follow(self, run: MigrationRun) -> Report:
        run_id = run.pk
        started = time.monotonic()
        try:
            if _state(run_id) == Run.SCANNING:
                with self._step("scanned"), _bar("scan", "file") as bar:
                    migration_scan(run_id=run_id, progress=_counter(bar))
            if _state(run_id) == Run.PLANNING:
                with self._step("planned"):
                    migration_plan(run_id=run_id)
            if _state(run_id) == Run.RUNNING:
                with self._step("uploaded and linked"):
                    self._upload(run_id)
            if _state(run_id) == Run.PROCESSING:
                with self._step("processed"):
                    self._process(run_id)
        except KeyboardInterrupt:
            raise CommandError(
                f"Interrupted. Run {run_id} is kept: run the same command again to continue."
            ) from None
        report = migration_report(run_id=run_id)
        if _state(run_id) != Run.DONE:  # pragma: no cover - a worker failed the run
            raise CommandError(f"run {run_id} did not finish: {_state(run_id)}")
        self.stdout.write(f"Finished in {time.monotonic() - started:.1f} s")
        return report

    @contextlib.contextmanager
    def _step(self, done: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.stdout.write(f"  {done} in {time.monotonic() - started:.1f} s")

    def _upload(self, run_id: int) -> None:
        progress = migration_progress(run_id=run_id)
        with _bar("upload", "object", total=progress.objects_total) as bar:
            if is_eager():
                while (chunk := migration_claim_chunk(run_id=run_id)) is not None:
                    migration_run_chunk(chunk_id=chunk)
                    _show(bar, migration_progress(run_id=run_id).objects_done)
                migration_advance(run_id=run_id)
                return
            migration_top_up(run_id=run_id)
            poll = _Poll(progress.objects_total)
            done = progress.objects_done
            while _state(run_id) == Run.RUNNING:
                poll.wait(done)
                # Watching also drives: stale chunks are published again, a run whose last
                # chunk finished moves on (if its own trigger was lost).
                migration_top_up(run_id=run_id)
                done = migration_progress(run_id=run_id).objects_done
                _show(bar, done)

    def _process(self, run_id: int) -> None:
        progress = migration_progress(run_id=run_id)
        with _bar("process", "row", total=progress.rows_total) as bar:
            poll = _Poll(progress.rows_total)
            while migration_advance(run_id=run_id) == Run.PROCESSING:
                settled = migration_progress(run_id=run_id).rows_settled
                _show(bar, settled)
                poll.wait(settled)
            _show(bar, bar.total)

    def _dry_run(self, source: str, opts: Options) -> Report:
        with _bar("scan", "file") as bar:
            return dry_run(source=source, options=opts, progress=_counter(bar))


def _state(run_id: int) -> str:
    return MigrationRun.objects.values_list("state", flat=True).get(pk=run_id)


def _bar(desc: str, unit: str, total: int | None = None) -> contextlib.AbstractContextManager[tqdm]:
    return progress_bar(desc=desc, unit=unit, total=total, leave=True)


def _counter(bar: tqdm) -> Any:
    return lambda n: _show(bar, n)


def _show(bar: tqdm, n: int | None) -> None:
    if n is not None and n != bar.n:
        bar.update(n - bar.n)
