"""The management commands (issue 11): a user's mistake is a ``CommandError`` that names
the fix (Django prints it without a traceback), ``--model`` is written the same way
everywhere, status lines go to stdout and errors to stderr, and log lines do not break a
progress bar."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from demo.models import Photo
from pipeline.fields import Status
from pipeline.management.cli import progress_bar, select_targets, target_label
from pipeline.management.commands.audit_media import Command as AuditMedia


def run(name: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def jpeg(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 120, 40)).save(path, "JPEG")
    return path


# --- one --model syntax -------------------------------------------------------------------


def test_model_and_field_forms_name_the_same_targets():
    assert [target_label(t) for t in select_targets(["demo.Photo"])] == ["demo.Photo.image"]
    assert select_targets(["demo.photo.image"]) == select_targets(["DEMO.Photo"])


@pytest.mark.parametrize("command", ["reprocess_media", "audit_media", "migrate_media"])
@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("demo", "write app_label.Model or app_label.Model.field"),
        ("demo.Nope", "managed: demo.Photo.image"),
        ("demo.Photo.title", "use demo.Photo.image"),
    ],
)
def test_every_command_refuses_a_wrong_model_the_same_way(command, spec, hint, tmp_path):
    args = [str(tmp_path)] if command == "migrate_media" else []
    with pytest.raises(CommandError, match=spec.replace(".", r"\.")) as caught:
        run(command, *args, "--model", spec)
    assert hint in str(caught.value)


# --- reprocess_media ----------------------------------------------------------------------


def test_reprocess_an_unknown_profile_names_the_known_ones():
    with pytest.raises(CommandError) as caught:
        run("reprocess_media", "--profile", "bogus")
    assert "--profile bogus: no such profile" in str(caught.value)
    assert "default, product" in str(caught.value)


@pytest.mark.django_db
def test_reprocess_prints_status_on_stdout_and_nothing_on_stderr(folder_buckets):
    Photo.objects.create(title="a", image="photos/a-111111111111.jpg")
    Photo.objects.create(title="b", image="photos/b-222222222222.jpg")
    Photo.objects.filter(title="b").update(image_status=Status.FAILED)

    out, err = run("reprocess_media", "--model", "demo.Photo.image", "--status", "failed")
    assert "demo.Photo.image: 1 row(s)" in out and "Queued 1 image(s)" in out
    assert err == ""
    out, err = run("reprocess_media", "--model", "demo.Photo")
    assert "Queued 2 image(s)" in out and err == ""


# --- render_image -------------------------------------------------------------------------


def test_render_into_a_file_is_refused_before_anything_is_rendered(tmp_path):
    source = jpeg(tmp_path / "in.jpg")
    not_a_folder = tmp_path / "out.txt"
    not_a_folder.write_text("keep me")
    with pytest.raises(CommandError, match="is a file: give a folder"):
        run("render_image", str(source), "--out", str(not_a_folder))
    assert not_a_folder.read_text() == "keep me"


def test_render_with_an_unknown_profile_names_the_known_ones(tmp_path):
    with pytest.raises(CommandError, match=r"no such profile\. Use one of: default, product"):
        run(
            "render_image", str(jpeg(tmp_path / "in.jpg")), "--out", str(tmp_path), "--profile", "x"
        )


def test_render_where_the_output_folder_cannot_be_made(tmp_path):
    (tmp_path / "taken").write_text("a file where a parent folder should be")
    with pytest.raises(CommandError, match="cannot create the folder"):
        run("render_image", str(jpeg(tmp_path / "in.jpg")), "--out", str(tmp_path / "taken/out"))


# --- migrate_media ------------------------------------------------------------------------


def test_migrate_refuses_a_report_it_could_not_write_before_starting(tmp_path):
    with pytest.raises(CommandError, match=r"--report .*existing folder"):
        run("migrate_media", str(tmp_path), "--report", str(tmp_path / "no/such/r.json"))
    with pytest.raises(CommandError, match="not a folder"):
        run("migrate_media", str(tmp_path / "missing"))


@pytest.mark.django_db
def test_migrate_takes_a_model_for_all_its_fields(folder_buckets, tmp_path):
    legacy = tmp_path / "legacy"
    jpeg(legacy / "photos" / "a.jpg")
    Photo.objects.create(title="old", image="photos/a.jpg")
    report = tmp_path / "report.json"

    out, err = run(
        "migrate_media", str(legacy), "--model", "demo.Photo", "--dry-run", "--report", str(report)
    )
    assert json.loads(report.read_text())["rows_relinked"] == 1
    assert "dry run: nothing written" in out and f"Report written to {report}" in out
    assert err == ""


# --- status lines and progress bars -------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.django_db
def test_audit_status_lines_beside_json_are_not_coloured_as_errors(folder_buckets):
    out, terminal = io.StringIO(), Terminal()
    # As in a terminal: Django colours everything written to stderr as an error.
    command = AuditMedia(stdout=out, stderr=terminal, force_color=True)
    call_command(command, "--json")
    json.loads(out.getvalue())  # stdout: the JSON alone
    assert "Listing" in terminal.getvalue()
    assert "\x1b[" not in terminal.getvalue()


def test_log_lines_are_printed_above_a_shown_bar(capsys):
    logger = logging.getLogger("tests.bar")
    handler = logging.StreamHandler(sys.stderr)  # the captured stderr, as a console
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with progress_bar(total=3, desc="work", disable=False) as bar:
            bar.update(1)
            logger.warning("a log line")
            logger.info("below the handler's level")
            bar.update(2)
        assert logger.handlers == [handler]  # given back afterwards
        logger.warning("after")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    err = capsys.readouterr().err
    # tqdm clears the bar (ending in "\r") before the line, then draws it again below.
    before, line, after = err.partition("a log line\n")
    assert line and before.endswith("\r") and "work" in after
    assert "below the handler's level" not in err
    assert err.endswith("after\n")
