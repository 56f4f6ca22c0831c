"""The system checks (issue 11): each mistake a project can make adopting the app is an
Error or Warning with an id and a hint that says what to add, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.core.files.storage import FileSystemStorage
from django.db import models
from django.test.utils import isolate_apps, override_settings

import pipeline
from pipeline import storage
from pipeline.checks import celery_messages, check_celery, check_storages
from pipeline.fields import MediaImageField

S3 = "storages.backends.s3.S3Storage"
FOLDER = "django.core.files.storage.FileSystemStorage"


def folder(path: Path, **options: Any) -> dict[str, Any]:
    return {"BACKEND": FOLDER, "OPTIONS": {"location": path, **options}}


def s3(**options: Any) -> dict[str, Any]:
    return {"BACKEND": S3, "OPTIONS": {"bucket_name": "b", "region_name": "us-east-1", **options}}


def storages_check(**aliases: dict[str, Any] | None) -> list[Any]:
    """``check_storages`` with STORAGES holding exactly ``aliases`` (None: left out)."""
    given = {name: conf for name, conf in aliases.items() if conf is not None}
    with override_settings(STORAGES=given):
        return check_storages()


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


# --- the buckets ------------------------------------------------------------------------


def test_the_project_settings_pass_every_check():
    assert check_storages() == []
    assert check_celery() == []


def test_missing_aliases_are_errors_saying_what_to_add():
    errors = storages_check(primary=None, public=None)
    assert ids(errors) == ["pipeline.E002", "pipeline.E002"]
    primary, public = errors
    assert "no 'primary' alias" in primary.msg and "originals" in primary.msg
    assert "no 'public' alias" in public.msg
    for error in errors:
        assert "storages.backends.s3.S3Storage" in error.hint
        assert '"allow_overwrite": True' in error.hint and '"file_overwrite": True' in error.hint
    assert '"querystring_auth": False' in public.hint and "custom_domain" in public.hint


def test_aliases_named_in_the_pipeline_settings_are_the_ones_checked(settings, tmp_path):
    settings.PIPELINE = {**settings.PIPELINE, "PRIMARY_STORAGE": "originals"}
    errors = storages_check(
        primary=folder(tmp_path, allow_overwrite=True),
        public=folder(tmp_path, allow_overwrite=True),
    )
    assert ids(errors) == ["pipeline.E002"]
    assert "'originals'" in errors[0].msg and "PRIMARY_STORAGE" in errors[0].msg


@pytest.mark.parametrize(
    "conf",
    [
        {"BACKEND": "storages.backends.nope.Storage"},  # not importable
        {"BACKEND": FOLDER, "OPTIONS": {"locaton": "/tmp"}},  # a typo in OPTIONS
    ],
)
def test_an_alias_that_cannot_be_created_is_an_error_not_a_traceback(conf, tmp_path):
    errors = storages_check(primary=conf, public=folder(tmp_path, allow_overwrite=True))
    assert ids(errors) == ["pipeline.E003"]
    assert "STORAGES['primary'] cannot be created" in errors[0].msg
    assert "BACKEND or OPTIONS" in errors[0].hint


def test_storages_that_rename_on_collision_are_warned_about(tmp_path):
    warnings = storages_check(
        primary=folder(tmp_path), public=s3(file_overwrite=False, custom_domain="cdn.example.com")
    )
    assert ids(warnings) == ["pipeline.W001", "pipeline.W001"]
    primary, public = warnings
    assert "STORAGES['primary']" in primary.msg and "allow_overwrite" in primary.msg
    assert primary.hint == 'Set "allow_overwrite": True in its OPTIONS.'
    assert "STORAGES['public']" in public.msg
    assert public.hint == 'Set "file_overwrite": True in its OPTIONS.'
    # What the README configures: no message.
    fine = storages_check(
        primary=s3(querystring_auth=True),
        public=folder(tmp_path, allow_overwrite=True),
    )
    assert fine == []


def test_a_public_bucket_with_signed_urls_is_an_error(tmp_path):
    primary = folder(tmp_path, allow_overwrite=True)
    # django-storages signs URLs unless told otherwise: a manifest's URLs would expire.
    (error,) = storages_check(primary=primary, public=s3(querystring_expire=600))
    assert error.id == "pipeline.E004"
    assert "600 seconds" in error.msg and '"querystring_auth": False' in error.hint
    assert storages_check(primary=primary, public=s3(querystring_auth=False)) == []
    # Behind a CDN domain django-storages does not sign: fine too.
    assert storages_check(primary=primary, public=s3(custom_domain="cdn.example.com")) == []
    # The private bucket is meant to sign.
    assert storages_check(primary=s3(), public=s3(querystring_auth=False)) == []


def test_models_with_the_field_load_without_the_storages_and_follow_them(tmp_path):
    """Nothing resolves the primary alias when a model class is created: without it,
    importing models (and so ``manage.py check``) died with InvalidStorageError."""
    with override_settings(STORAGES={}), isolate_apps("demo"):

        class Item(models.Model):  # noqa: DJ008
            image = MediaImageField(upload_to="items/")

            class Meta:
                app_label = "demo"

        field = Item._meta.get_field("image")
        assert field.storage is storage.PRIMARY
        assert "storage" not in field.deconstruct()[3]  # migrations unchanged
        with override_settings(STORAGES={"primary": folder(tmp_path, allow_overwrite=True)}):
            assert isinstance(field.storage.resolve(), FileSystemStorage)
            assert field.storage.location == str(tmp_path)
            assert field.storage.generate_filename("a b.jpg") == "a_b.jpg"


# --- Celery -----------------------------------------------------------------------------


def django_app_messages(**settings: Any) -> list[Any]:
    """The Celery checks of an app set up as the README says, over ``settings`` (the app
    reads Django's settings when asked, so the checks run inside the override)."""
    with override_settings(**settings):
        app = Celery("mysite", set_as_current=False, fixups=[])
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.conf.update(pipeline.celery_config())
        return celery_messages(app)


@pytest.fixture(autouse=True)
def _no_broker_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Celery reads CELERY_BROKER_URL from the environment before its settings.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)


def test_no_celery_app_is_an_error_with_the_celery_py_to_add():
    # What shared tasks are bound to when the project made no Celery app.
    fallback = Celery("default", fixups=[], set_as_current=False)
    (error,) = celery_messages(fallback)
    assert error.id == "pipeline.E005" and "default app" in error.msg
    for needed in (
        "config_from_object('django.conf:settings', namespace='CELERY')",
        "app.conf.update(pipeline.celery_config())",
        "__init__.py",
        "CELERY_TASK_ALWAYS_EAGER",
    ):
        assert needed in error.hint


def test_an_app_not_configured_from_django_settings_is_warned_about():
    app = Celery("elsewhere", set_as_current=False, fixups=[])
    app.conf.update(broker_url="redis://localhost:6379/0", **pipeline.celery_config())
    (warning,) = celery_messages(app)
    assert warning.id == "pipeline.W002" and "'elsewhere'" in warning.msg
    assert "config_from_object('django.conf:settings'" in warning.hint


def test_no_broker_while_tasks_are_not_eager_is_an_error():
    (error,) = django_app_messages(CELERY_BROKER_URL=None, CELERY_TASK_ALWAYS_EAGER=False)
    assert error.id == "pipeline.E006" and "no broker" in error.msg
    assert "CELERY_BROKER_URL" in error.hint and "CELERY_TASK_ALWAYS_EAGER = True" in error.hint
    # Either fix silences it.
    assert django_app_messages(CELERY_BROKER_URL=None, CELERY_TASK_ALWAYS_EAGER=True) == []
    redis = "redis://localhost:1/0"
    assert django_app_messages(CELERY_BROKER_URL=redis, CELERY_TASK_ALWAYS_EAGER=False) == []


def test_missing_periodic_tasks_are_listed():
    app = Celery("mysite", set_as_current=False, fixups=[])
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(
        beat_schedule={"sweep": {"task": "pipeline.tasks.sweep_stale_media", "schedule": 60}}
    )
    (warning,) = celery_messages(app)
    assert warning.id == "pipeline.W003"
    assert "pipeline.tasks.sweep_stale_media" not in warning.msg
    for task in (
        "pipeline.migration.tasks.sweep_runs",
        "pipeline.cdn.tasks.flush_invalidations",
        "pipeline.cdn.tasks.poll_invalidations",
    ):
        assert task in warning.msg
    assert "pipeline.celery_config()" in warning.hint


def test_beat_entries_and_routes_lost_to_the_update_are_warned_about():
    nightly = {"nightly": {"task": "shop.tasks.report", "schedule": 86400}}
    routes = {"shop.tasks.*": {"queue": "shop"}}
    lost = django_app_messages(CELERY_BEAT_SCHEDULE=nightly, CELERY_TASK_ROUTES=routes)
    assert ids(lost) == ["pipeline.W004", "pipeline.W004"]
    assert "CELERY_BEAT_SCHEDULE" in lost[0].msg and "nightly" in lost[0].msg
    assert "CELERY_TASK_ROUTES" in lost[1].msg and "shop.tasks.*" in lost[1].msg
    assert 'config["beat_schedule"].update(' in lost[0].hint

    # Merged as the README says: nothing lost.
    with override_settings(CELERY_BEAT_SCHEDULE=nightly, CELERY_TASK_ROUTES=routes):
        merged = Celery("mysite", set_as_current=False, fixups=[])
        merged.config_from_object("django.conf:settings", namespace="CELERY")
        config = pipeline.celery_config()
        config["beat_schedule"].update(nightly)
        config["task_routes"].update(routes)
        merged.conf.update(config)
        assert celery_messages(merged) == []
