"""The admin in a real browser: logged in, clicking through the pages a user would.

Photos (``MediaAdminMixin``): status column and filter, previews that really load, the
change page (variants, last error, what was left out, the "Re-process" button) and the
re-process action's counts. Migration runs: the progress bar moving while a real run goes
on, then its report as tables. CDN: set-aside batches retried and discarded. A view-only
user: no actions, and posting them anyway changes nothing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image, ImageDraw
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from demo.models import Photo
from demo.sample_tree import build_sample_tree
from pipeline.bulk.chunks import migration_run_chunk
from pipeline.bulk.coordinator import migration_advance, migration_claim_chunk
from pipeline.bulk.options import Options
from pipeline.bulk.planning import migration_plan
from pipeline.bulk.reporting import migration_progress
from pipeline.bulk.runs import migration_create
from pipeline.bulk.scanning import migration_scan
from pipeline.fields import Status
from pipeline.models import CDNInvalidation, CDNPendingPath, MigrationRun
from tests.browser.conftest import (
    click_and_wait,
    find,
    image_loaded,
    login,
    messages,
    screenshot,
    send_from_page,
    wait,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PASSWORD = "browser-test-pw-4821"


# --- data ------------------------------------------------------------------------------


def jpeg(width: int, height: int, *, exif: bool = False) -> bytes:
    """A real photo-like JPEG (shapes on a gradient); with an EXIF Artist tag if asked."""
    im = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(im)
    draw.ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(230, 170, 40))
    draw.rectangle((width // 10, height // 10, width // 3, height // 3), fill=(40, 90, 170))
    buf = io.BytesIO()
    extra: dict[str, Any] = {}
    if exif:
        tags = Image.Exif()
        tags[0x013B] = "Browser Test"  # Artist
        extra["exif"] = tags.tobytes()
    im.save(buf, "JPEG", quality=88, **extra)
    return buf.getvalue()


def photo(title: str, data: bytes | None = None, name: str = "photo.jpg") -> Photo:
    """A saved photo; with ``data`` it is processed in-process before this returns."""
    row = Photo.objects.create(title=title)
    if data is not None:
        row.image.save(name, ContentFile(data), save=True)
    row.refresh_from_db()
    return row


def set_state(row: Photo, status: str, **values: Any) -> None:
    """Put a row in a state no request can reach on its own (work in flight), as the
    services would: a queryset update, no signal."""
    columns = {f"image_{k}": v for k, v in values.items()}
    Photo.objects.filter(pk=row.pk).update(image_status=status, **columns)


def superuser(browser: WebDriver, live_server: Any) -> User:
    user = User.objects.create_superuser("admin", "admin@example.test", PASSWORD)
    login(browser, live_server.url, "admin", PASSWORD)
    return user


def rows_by_title(browser: WebDriver) -> dict[str, Any]:
    """The change list's rows, by the title in their first column."""
    return {
        tr.find_element(By.CSS_SELECTOR, "th, td.field-title").text: tr
        for tr in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    }


# --- photos ----------------------------------------------------------------------------


def test_photo_list_shows_status_and_filter_and_previews_that_load(browser, live_server):
    big = photo("Big", jpeg(800, 600, exif=True))
    small = photo("Small", jpeg(200, 150), "small.jpg")  # narrower than every width
    broken = photo("Broken", b"this is not an image at all", "broken.jpg")
    photo("Empty")
    waiting = photo("Waiting", jpeg(400, 300), "waiting.jpg")
    set_state(waiting, Status.PENDING)
    assert (big.image_status, small.image_status) == (Status.READY, Status.READY)
    assert broken.image_status == Status.FAILED
    assert {v["width"] for v in small.image.variants} == {200}  # its own width only
    superuser(browser, live_server)

    browser.get(f"{live_server.url}{reverse('admin:demo_photo_changelist')}")
    rows = rows_by_title(browser)
    status = {
        title: tr.find_element(By.CSS_SELECTOR, "td.field-media_status").text
        for title, tr in rows.items()
    }
    assert status == {
        "Big": "ready",
        "Small": "ready",
        "Broken": "failed",
        "Empty": "no image",
        "Waiting": "pending",
    }
    failed_badge = rows["Broken"].find_element(By.CSS_SELECTOR, ".pipeline-status")
    assert failed_badge.get_attribute("title") == broken.image_error  # the reason on hover
    # Ready rows show an image that really loads: a variant (Small's at its own width);
    # the others none.
    for title in ("Big", "Small", "Waiting"):
        img = rows[title].find_element(By.CSS_SELECTOR, "td.field-media_thumbnail img")
        assert image_loaded(browser, img) > 0, f"{title}: preview did not load"
    big_src = rows["Big"].find_element(By.CSS_SELECTOR, "img").get_attribute("src")
    assert "/cdn/" in big_src and big_src.endswith(".webp")
    small_src = rows["Small"].find_element(By.CSS_SELECTOR, "img").get_attribute("src")
    assert "/cdn/" in small_src and small_src.endswith("w200.webp")
    assert not rows["Broken"].find_elements(By.CSS_SELECTOR, "td.field-media_thumbnail img")
    screenshot(browser, "photos-list")

    click_and_wait(browser, find(browser, '#changelist-filter a[href*="media_status=failed"]'))
    assert list(rows_by_title(browser)) == ["Broken"]
    screenshot(browser, "photos-list-failed-filter")


def test_change_page_shows_variants_error_and_notes_and_reprocesses(browser, live_server):
    big = photo("Big", jpeg(800, 600, exif=True))
    broken = photo("Broken", b"GIF89a but not really", "broken.gif")
    superuser(browser, live_server)

    browser.get(f"{live_server.url}{reverse('admin:demo_photo_change', args=[big.pk])}")
    table = find(browser, "table.pipeline-variants")
    cells = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    shown = {(c[0], c[1], c[2]) for c in cells}
    assert ("original", "jpeg", "800x600") in shown
    for fmt in ("avif", "webp", "jpeg"):
        assert ("variant", fmt, "320x240") in shown and ("variant", fmt, "640x480") in shown
    assert len(cells) == 1 + len(big.image.variants)
    notes = find(browser, ".field-media_notes").text
    assert "metadata removed" in notes  # the EXIF the engine dropped on purpose
    assert "w1024" in notes and "w1600" in notes  # wider than the source: not rendered
    assert find(browser, ".field-media_error .readonly").text == "-"
    assert image_loaded(browser, find(browser, ".field-media_preview img")) > 0
    screenshot(browser, "photo-change-ready")

    before = big.image_revision
    click_and_wait(browser, find(browser, "form.pipeline-reprocess button[name=_reprocess]"))
    assert messages(browser) == ["Queued 1 image(s) for re-processing."]
    assert browser.current_url.endswith(reverse("admin:demo_photo_change", args=[big.pk]))
    big.refresh_from_db()
    assert (big.image_status, big.image_revision) == (Status.READY, before + 1)
    screenshot(browser, "photo-change-reprocessed")

    browser.get(f"{live_server.url}{reverse('admin:demo_photo_change', args=[broken.pk])}")
    error = find(browser, ".field-media_error .pipeline-error").text
    assert error == broken.image_error and error
    assert find(browser, ".field-media_status").text.endswith("failed")
    screenshot(browser, "photo-change-failed")


def test_reprocess_button_needs_post_and_a_csrf_token(browser, live_server):
    row = photo("Big", jpeg(640, 480))
    superuser(browser, live_server)
    url = reverse("admin:demo_photo_reprocess", args=[row.pk])
    browser.get(f"{live_server.url}{reverse('admin:demo_photo_change', args=[row.pk])}")
    assert send_from_page(browser, url, method="GET") == 405
    browser.delete_cookie("csrftoken")  # the POST below then carries no valid token
    assert send_from_page(browser, url) == 403
    row.refresh_from_db()
    assert row.image_revision == 1 and row.image_status == Status.READY


def test_reprocess_action_counts_queued_skipped_and_in_flight(browser, live_server):
    photo("Ready", jpeg(640, 480))
    failed = photo("Failed", jpeg(640, 480), "f.jpg")
    set_state(failed, Status.FAILED, error="retrying: S3 unreachable (given up)")
    photo("Empty")
    pending = photo("Pending", jpeg(640, 480), "p.jpg")
    set_state(pending, Status.PENDING)
    processing = photo("Processing", jpeg(640, 480), "q.jpg")
    set_state(processing, Status.PROCESSING, claimed_by="task-1", due_at=timezone.now())
    revisions = dict(Photo.objects.values_list("title", "image_revision"))
    superuser(browser, live_server)

    browser.get(f"{live_server.url}{reverse('admin:demo_photo_changelist')}")
    find(browser, "#action-toggle").click()  # every row
    Select(find(browser, "select[name=action]")).select_by_value("reprocess_selected_media")
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "button[name=index]"))

    assert messages(browser) == [
        "Queued 2 image(s) for re-processing. Skipped 1 with no image. Left 2 alone: "
        "already pending or processing for their current file."
    ]
    after = {p.title: p for p in Photo.objects.all()}
    # Ready and failed rows are queued (the user asked) and, in-process, done again.
    for title in ("Ready", "Failed"):
        assert after[title].image_revision == revisions[title] + 1, title
        assert after[title].image_status == Status.READY, title
    # Work in flight for the file the row holds is left to finish.
    assert after["Pending"].image_revision == revisions["Pending"]
    assert after["Pending"].image_status == Status.PENDING
    assert after["Processing"].image_revision == revisions["Processing"]
    assert after["Processing"].image_claimed_by == "task-1"
    assert after["Empty"].image_status == Status.EMPTY
    screenshot(browser, "photos-action-message")


# --- migration runs ----------------------------------------------------------------------


def caption(browser: WebDriver) -> str:
    # The text as written: the admin's CSS shows captions in capitals.
    return find(browser, "#migration-report-counts caption").get_attribute("textContent")


def test_migration_run_page_shows_live_progress_then_the_report_table(
    browser, live_server, tmp_path: Path
):
    sample = build_sample_tree(tmp_path / "legacy" / "media")  # drawn pictures, ~1 MB
    Photo.objects.bulk_create(
        Photo(title=f"legacy {i}", image=v.value) for i, v in enumerate(sample.legacy_values)
    )
    options = Options.build(targets=["demo.Photo.image"], chunk_size=4, orphans="skip")
    run = migration_create(source=str(sample.root), options=options)
    migration_scan(run_id=run.pk)
    migration_plan(run_id=run.pk)
    run.refresh_from_db()
    assert run.state == MigrationRun.State.RUNNING and run.chunks.count() > 2
    superuser(browser, live_server)

    browser.get(f"{live_server.url}{reverse('admin:pipeline_migrationrun_change', args=[run.pk])}")
    box = find(browser, "#migration-progress")
    assert box.get_attribute("data-finished") == "0"
    assert "uploading and linking" in box.text
    bar = box.find_element(By.CSS_SELECTOR, "progress[data-bar=objects]")
    text = box.find_element(By.CSS_SELECTOR, "[data-text=objects]")
    total = sum(c.size for c in run.chunks.all())
    assert float(bar.get_attribute("value")) == 0 and text.text == f"0 / {total}"
    rows_text = box.find_element(By.CSS_SELECTOR, "[data-text=rows]").text
    assert rows_text == "starts after the uploads"
    # The report so far: counts, rejected files by reason, dangling references.
    assert "(so far)" in caption(browser)
    rejected = find(browser, "#migration-report-rejected").text
    assert "truncated JPEG" in rejected and "broken/truncated.jpg" in rejected
    dangling = find(browser, "#migration-report-dangling")
    assert "escapes the media root" in dangling.text and "../etc/passwd" in dangling.text
    row_link = dangling.find_element(By.CSS_SELECTOR, "tbody a")
    assert "/admin/demo/photo/" in row_link.get_attribute("href")
    browser.execute_script("window.samePage = true")  # gone if the page reloads
    screenshot(browser, "migration-run-started")

    # A worker finishes one chunk: the bar moves without a reload.
    chunk_id = migration_claim_chunk(run_id=run.pk)
    migration_run_chunk(chunk_id=chunk_id)
    wait(browser).until(lambda b: float(bar.get_attribute("value") or 0) > 0)
    done = migration_progress(run_id=run.pk).objects_done
    assert 0 < done < total and text.text == f"{done} / {total}"
    assert float(bar.get_attribute("value")) == pytest.approx(done / total)
    assert browser.execute_script("return window.samePage") is True
    screenshot(browser, "migration-run-progress")

    # The rest of the chunks, then the run ends: the page reloads itself once, final.
    while (chunk_id := migration_claim_chunk(run_id=run.pk)) is not None:
        migration_run_chunk(chunk_id=chunk_id)
    assert migration_advance(run_id=run.pk) == MigrationRun.State.DONE
    wait(browser).until(lambda b: b.execute_script("return window.samePage") is None)
    box = find(browser, "#migration-progress")
    assert box.get_attribute("data-finished") == "1" and "done" in box.text
    counts = {
        tr.find_element(By.TAG_NAME, "th").text: tr.find_element(By.TAG_NAME, "td").text
        for tr in find(browser, "#migration-report-counts").find_elements(
            By.CSS_SELECTOR, "tbody tr"
        )
    }
    report = MigrationRun.objects.get(pk=run.pk).report
    assert counts["uploaded"] == f"{report['uploaded']:,}" and report["uploaded"] > 0
    assert counts["rows re-linked"] == f"{report['rows_relinked']:,}"
    assert counts["variants generated"] == f"{report['variants_generated']:,}"
    assert counts["dangling references"] == str(report["dangling_count"])
    assert "(so far)" not in caption(browser)
    screenshot(browser, "migration-run-done")


# --- CDN -------------------------------------------------------------------------------


def set_aside(number: int, paths: list[str]) -> CDNInvalidation:
    now = timezone.now()
    batch = CDNInvalidation.objects.create(
        target="cloudfront:EWRONGDIST",
        status=CDNInvalidation.Status.SET_ASIDE,
        billable=True,
        caller_reference=f"browser-test-{number}",
        paths=paths,
        path_count=len(paths),
        covered_count=len(paths),
        attempts=5,
        refusals=5,
        set_aside_at=now,
        last_error="NoSuchDistribution: The specified distribution does not exist.",
    )
    CDNPendingPath.objects.bulk_create(
        CDNPendingPath(path=p, digest=f"{number:02d}{i:062d}", batch=batch)
        for i, p in enumerate(paths)
    )
    return batch


def run_action(browser: WebDriver, pk: int, action: str) -> None:
    find(browser, f'input[name=_selected_action][value="{pk}"]').click()
    Select(find(browser, "select[name=action]")).select_by_value(action)
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "button[name=index]"))


def test_cdn_page_shows_set_aside_batches_and_retries_and_discards_them(
    browser, live_server, tmp_path: Path
):
    retry = set_aside(1, ["/media/a/w320.webp", "/media/a/w640.webp"])
    discard = set_aside(2, ["/media/b/w320.webp"])
    CDNInvalidation.objects.create(
        target="cloudfront:EWRONGDIST",
        status=CDNInvalidation.Status.COMPLETED,
        caller_reference="browser-test-done",
        invalidation_id="IDONE",
        paths=["/media/c/w320.webp"],
        path_count=1,
    )
    superuser(browser, live_server)

    browser.get(f"{live_server.url}{reverse('admin:pipeline_cdninvalidation_changelist')}")
    click_and_wait(browser, find(browser, '#changelist-filter a[href*="status__exact=set_aside"]'))
    listed = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(listed) == 2 and all("Set aside" in tr.text for tr in listed)
    assert "NoSuchDistribution" in listed[0].text
    actions = [
        o.get_attribute("value") for o in Select(find(browser, "select[name=action]")).options
    ]
    assert {"retry_batches", "discard_batches"} <= set(actions)
    screenshot(browser, "cdn-set-aside")

    run_action(browser, retry.pk, "retry_batches")
    assert messages(browser) == ["1 set-aside batch(es) queued again, unchanged."]
    retry.refresh_from_db()
    # Sent at once (in-process) to the backend configured now, with the same reference.
    assert retry.status == CDNInvalidation.Status.COMPLETED
    assert retry.caller_reference == "browser-test-1"
    sent = [
        json.loads(line) for line in (tmp_path / "cdn-invalidations.jsonl").read_text().splitlines()
    ]
    assert [(s["caller_reference"], s["paths"]) for s in sent] == [
        ("browser-test-1", ["/media/a/w320.webp", "/media/a/w640.webp"])
    ]

    run_action(browser, discard.pk, "discard_batches")
    assert messages(browser) == [
        "1 set-aside batch(es) discarded with their paths (not invalidated)."
    ]
    assert not CDNInvalidation.objects.filter(pk=discard.pk).exists()
    assert not CDNPendingPath.objects.filter(path="/media/b/w320.webp").exists()
    screenshot(browser, "cdn-after-discard")


# --- a user who may only look ------------------------------------------------------------


def test_a_view_only_user_sees_no_actions_and_posting_them_changes_nothing(browser, live_server):
    row = photo("Ready", jpeg(640, 480))
    batch = set_aside(1, ["/media/a/w320.webp"])
    viewer = User.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_photo", "view_cdninvalidation"])
    )
    login(browser, live_server.url, "viewer", PASSWORD)

    changelist = reverse("admin:demo_photo_changelist")
    browser.get(f"{live_server.url}{changelist}")
    find(browser, "#result_list")
    assert not browser.find_elements(By.CSS_SELECTOR, "select[name=action]")
    browser.get(f"{live_server.url}{reverse('admin:demo_photo_change', args=[row.pk])}")
    find(browser, ".field-media_variants")
    assert not browser.find_elements(By.CSS_SELECTOR, "form.pipeline-reprocess")
    screenshot(browser, "viewer-photo-change")
    cdn = reverse("admin:pipeline_cdninvalidation_changelist")
    browser.get(f"{live_server.url}{cdn}")
    find(browser, "#result_list")
    assert not browser.find_elements(By.CSS_SELECTOR, "select[name=action]")

    # Posted anyway, with a valid session and CSRF token: nothing changes.
    action = {"action": "reprocess_selected_media", "_selected_action": [str(row.pk)]}
    assert send_from_page(browser, changelist, action) in (200, 302)
    reprocess = reverse("admin:demo_photo_reprocess", args=[row.pk])
    assert send_from_page(browser, reprocess, {}) == 403
    for name in ("retry_batches", "discard_batches"):
        send_from_page(browser, cdn, {"action": name, "_selected_action": [str(batch.pk)]})
    row.refresh_from_db()
    assert (row.image_status, row.image_revision) == (Status.READY, 1)
    batch.refresh_from_db()
    assert batch.status == CDNInvalidation.Status.SET_ASIDE and batch.claimed_paths.count() == 1
