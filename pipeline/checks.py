"""System checks: configuration mistakes found by ``manage.py check`` at start-up, each
with a hint that says what to add, not by a traceback or a row stuck ``pending`` hours
later.

==============  ========================================================================
pipeline.E001   a ``MediaImageField`` names a profile ``PIPELINE["PROFILES"]`` lacks
pipeline.E002   a bucket's ``STORAGES`` alias is missing
pipeline.E003   a bucket's ``STORAGES`` alias cannot be created (backend, options)
pipeline.E004   the public bucket signs its URLs: the URLs stored in manifests expire
pipeline.W001   a bucket's storage renames a file saved under an existing name
pipeline.E005   no Celery app configured: the tasks are bound to Celery's default app
pipeline.W002   the Celery app is not configured from Django settings
pipeline.E006   no Celery broker, and tasks are not run eagerly: work would never run
pipeline.W003   the pipeline's periodic tasks are missing from the beat schedule
pipeline.W004   ``CELERY_BEAT_SCHEDULE``/``CELERY_TASK_ROUTES`` entries the app lost
==============  ========================================================================

Registered by ``PipelineConfig.ready()``. Nothing here runs at import time: the storages
and the Celery app are looked at only when the checks run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery, current_app
from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, Storage, storages

from pipeline.conf import pipeline_settings
from pipeline.fields import media_fields

GUIDE = 'See "Using it in your project" in the README.'

# What each bucket holds, and an example that works, for the messages.
_BUCKETS = {
    "PRIMARY_STORAGE": (
        "the private bucket of pristine originals",
        '{"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": '
        '"my-originals", "querystring_auth": True, "file_overwrite": True}}',
        '{"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": '
        '{"location": BASE_DIR / "buckets/primary", "allow_overwrite": True}}',
    ),
    "PUBLIC_STORAGE": (
        "the CDN-served bucket of optimized images and variants",
        '{"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": '
        '"my-media", "custom_domain": "d123.cloudfront.net", "querystring_auth": False, '
        '"file_overwrite": True}}',
        '{"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": '
        '{"location": BASE_DIR / "buckets/public", "base_url": "/cdn/", '
        '"allow_overwrite": True}}',
    ),
}


@checks.register(checks.Tags.models)
def check_field_profiles(
    app_configs: list[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Every ``MediaImageField`` names a profile that ``PIPELINE["PROFILES"]`` defines."""
    profiles = pipeline_settings().profiles
    models = (
        [m for config in app_configs for m in config.get_models()]
        if app_configs
        else apps.get_models()
    )
    errors: list[checks.CheckMessage] = []
    for model in models:
        for field in media_fields(model):
            if field.profile is not None and field.profile not in profiles:
                errors.append(
                    checks.Error(
                        f"{model._meta.label}.{field.name} uses the profile "
                        f"{field.profile!r}, which PIPELINE['PROFILES'] does not define.",
                        hint=(
                            f"Define it in settings.PIPELINE['PROFILES'], or use one of: "
                            f"{', '.join(sorted(profiles))}."
                        ),
                        obj=field,
                        id="pipeline.E001",
                    )
                )
    return errors


# --- the buckets ------------------------------------------------------------------------


@checks.register("pipeline")
def check_storages(
    app_configs: list[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Both bucket aliases exist, can be created, keep the names they are given, and the
    public one serves URLs that do not expire."""
    messages: list[checks.CheckMessage] = []
    for setting, (holds, s3_example, folder_example) in _BUCKETS.items():
        alias = pipeline_settings()[setting]
        where = f"settings.STORAGES[{alias!r}]"
        if alias not in storages.backends:
            messages.append(
                checks.Error(
                    f"settings.STORAGES has no {alias!r} alias: the pipeline keeps "
                    f"{holds} there (PIPELINE['{setting}']).",
                    hint=(
                        f"Add {where} = {s3_example} (django-storages), or for development "
                        f"{folder_example}. {GUIDE}"
                    ),
                    id="pipeline.E002",
                )
            )
            continue
        try:
            storage = storages[alias]
        # What a wrong BACKEND or OPTIONS raises: a bad path, an unknown or missing option.
        except (ImproperlyConfigured, ImportError, TypeError, ValueError, AttributeError) as e:
            messages.append(
                checks.Error(
                    f"{where} cannot be created: {type(e).__name__}: {e}",
                    hint=f"Fix its BACKEND or OPTIONS, e.g. {s3_example}. {GUIDE}",
                    id="pipeline.E003",
                )
            )
            continue
        messages += _storage_messages(storage, where, setting)
    return messages


def _storage_messages(storage: Storage, where: str, setting: str) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    renames = _renames_on_collision(storage)
    if renames:
        messages.append(
            checks.Warning(
                f"{where} renames a file saved under a name that exists ({renames[0]}): the "
                "pipeline's keys are deterministic, so saving the same image again would "
                "store a renamed copy instead of replacing the object.",
                hint=f'Set "{renames[1]}": True in its OPTIONS.',
                id="pipeline.W001",
            )
        )
    if (
        setting == "PUBLIC_STORAGE"
        and _is_s3(storage)
        and getattr(storage, "querystring_auth", False)
        and not getattr(storage, "custom_domain", None)
    ):
        messages.append(
            checks.Error(
                f"{where} signs its URLs (querystring_auth, django-storages' default): the "
                "URLs written into each row's manifest would stop working after "
                f"{getattr(storage, 'querystring_expire', 3600)} seconds.",
                hint=(
                    f'Set "querystring_auth": False in its OPTIONS (the bucket or the CDN '
                    f'grants public read), and "custom_domain" to the CDN host. {GUIDE}'
                ),
                id="pipeline.E004",
            )
        )
    return messages


def _is_s3(storage: Storage) -> bool:
    from pipeline.storage import is_s3

    return is_s3(storage)


def _renames_on_collision(storage: Storage) -> tuple[str, str] | None:
    """(what says so, the option to set) when ``storage`` renames instead of overwriting;
    None when it overwrites, or when it is a backend we cannot tell about."""
    if isinstance(storage, FileSystemStorage):
        # Django keeps the allow_overwrite option only under this name.
        if not getattr(storage, "_allow_overwrite", False):
            return "FileSystemStorage without allow_overwrite", "allow_overwrite"
    elif _is_s3(storage) and not getattr(storage, "file_overwrite", True):
        return "file_overwrite is False", "file_overwrite"
    return None


# --- Celery -----------------------------------------------------------------------------


@checks.register("pipeline")
def check_celery(
    app_configs: list[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """The Celery app the pipeline's tasks are bound to can run them."""
    return celery_messages(current_app._get_current_object())


def celery_messages(app: Celery) -> list[checks.CheckMessage]:
    """The checks of ``app`` (the current app at run time; any app in tests)."""
    from pipeline.celery import PERIODIC_TASKS

    source = getattr(app, "_config_source", None)  # set by config_from_object
    if source is None and app.main == "default":
        # Celery's own fallback: no Celery app was created, so nothing reads the
        # CELERY_ settings, and publishing goes to amqp://guest@localhost//.
        return [
            checks.Error(
                "No Celery app is configured: the pipeline's tasks are bound to Celery's "
                "default app, which ignores the CELERY_ settings and publishes to "
                "amqp://guest@localhost//, so saved images would stay pending.",
                hint=(
                    "Add <project>/celery.py: app = Celery('<project>'); "
                    "app.config_from_object('django.conf:settings', namespace='CELERY'); "
                    "app.conf.update(pipeline.celery_config()); app.autodiscover_tasks(); "
                    "and import it in <project>/__init__.py (from .celery import app as "
                    f"celery_app). Then set CELERY_BROKER_URL, or CELERY_TASK_ALWAYS_EAGER "
                    f"= True for development. {GUIDE}"
                ),
                id="pipeline.E005",
            )
        ]
    messages: list[checks.CheckMessage] = []
    if not _from_django_settings(source):
        messages.append(
            checks.Warning(
                f"The Celery app {app.main!r} is not configured from Django settings: "
                "CELERY_ settings (broker, eager mode) do not apply to it.",
                hint=(
                    "In its module, call app.config_from_object('django.conf:settings', "
                    "namespace='CELERY') before app.conf.update(pipeline.celery_config())."
                ),
                id="pipeline.W002",
            )
        )
    conf = app.conf
    if not conf.task_always_eager and not conf.broker_write_url:
        messages.append(
            checks.Error(
                f"The Celery app {app.main!r} has no broker and does not run tasks eagerly: "
                "every save would try amqp://guest@localhost// and its image would stay "
                "pending.",
                hint=(
                    "Set CELERY_BROKER_URL (e.g. 'redis://localhost:6379/0') and start "
                    "workers, or CELERY_TASK_ALWAYS_EAGER = True to run the tasks in-process "
                    "(development)."
                ),
                id="pipeline.E006",
            )
        )
    schedule = conf.beat_schedule or {}
    scheduled = {entry.get("task") for entry in schedule.values()}
    missing = [task for task in PERIODIC_TASKS if task not in scheduled]
    if missing:
        messages.append(
            checks.Warning(
                f"The beat schedule of the Celery app {app.main!r} lacks the pipeline's "
                f"periodic tasks: {', '.join(missing)}. Without them lost work is never "
                "re-published and CDN invalidations are never sent.",
                hint=(
                    "app.conf.update(pipeline.celery_config()) adds them; run one "
                    "`celery beat`. With a database scheduler (django-celery-beat), add them "
                    "there and silence pipeline.W003."
                ),
                id="pipeline.W003",
            )
        )
    messages += _lost_settings(app)
    return messages


def _from_django_settings(source: object) -> bool:
    return source == "django.conf:settings" or source is settings


def _lost_settings(app: Celery) -> list[checks.CheckMessage]:
    """Entries of CELERY_BEAT_SCHEDULE / CELERY_TASK_ROUTES that the app does not have:
    ``app.conf.update(pipeline.celery_config())`` replaced them."""
    if not _from_django_settings(getattr(app, "_config_source", None)):
        return []
    prefix = f"{app.namespace}_" if app.namespace else ""
    messages: list[checks.CheckMessage] = []
    for key in ("beat_schedule", "task_routes"):
        name = f"{prefix}{key.upper()}"
        given = getattr(settings, name, None)
        have = app.conf.get(key)
        if not isinstance(given, Mapping) or not isinstance(have, Mapping):
            continue
        lost = [entry for entry in given if entry not in have]
        if lost:
            messages.append(
                checks.Warning(
                    f"settings.{name} entries are not in the Celery app's {key}: "
                    f"{', '.join(map(str, lost))} (app.conf.update() replaced them).",
                    hint=(
                        f"Add them to the dict before updating: config = "
                        f'pipeline.celery_config(); config["{key}"].update(...); '
                        f"app.conf.update(config). {GUIDE}"
                    ),
                    id="pipeline.W004",
                )
            )
    return messages
