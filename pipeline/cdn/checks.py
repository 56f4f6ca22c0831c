"""System checks of the CDN settings: a wrong backend fails ``manage.py check`` at start-up,
not the first flush in a worker hours later.

pipeline.cdn.E001  the backend cannot be created (path, class, options)
pipeline.cdn.E002  CloudFrontBackend without a DISTRIBUTION_ID
pipeline.cdn.W001  FLUSH_THRESHOLD above BATCH_SIZE
pipeline.cdn.W002  WILDCARD_THRESHOLD with MAX_WILDCARDS = 0

Registered by ``PipelineConfig.ready()`` (``import pipeline.cdn.checks``).
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string


@checks.register("pipeline")
def check_cdn_settings(
    app_configs: list[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    from pipeline.cdn.backends import CloudFrontBackend, get_backend
    from pipeline.conf import pipeline_settings

    conf = pipeline_settings()["CDN"]
    try:
        backend_class = import_string(conf["BACKEND"])
    except ImportError:
        backend_class = None  # get_backend() below says so, with the path
    if (
        isinstance(backend_class, type)
        and issubclass(backend_class, CloudFrontBackend)
        and not conf["OPTIONS"].get("DISTRIBUTION_ID")
    ):
        return [
            checks.Error(
                "PIPELINE['CDN'] uses CloudFrontBackend without a distribution id: "
                "invalidations would never be sent and the CDN would serve stale images.",
                hint=(
                    'Set PIPELINE["CDN"]["OPTIONS"]["DISTRIBUTION_ID"] to your distribution '
                    '(e.g. "E2QWRUHEXAMPLE"), or use "pipeline.cdn.backends.NoopBackend" '
                    "when no CDN serves the public bucket."
                ),
                id="pipeline.cdn.E002",
            )
        ]
    try:
        get_backend()
    except ImproperlyConfigured as e:
        return [
            checks.Error(
                str(e),
                hint=(
                    'PIPELINE["CDN"]["BACKEND"] is one of pipeline.cdn.backends.'
                    "CloudFrontBackend, LocalRecorderBackend or NoopBackend (or your "
                    'subclass of InvalidationBackend), and "OPTIONS" holds its upper-case '
                    "options (pipeline/conf.py lists them)."
                ),
                id="pipeline.cdn.E001",
            )
        ]
    messages: list[checks.CheckMessage] = []
    if conf["FLUSH_THRESHOLD"] > conf["BATCH_SIZE"]:
        messages.append(
            checks.Warning(
                "PIPELINE CDN FLUSH_THRESHOLD is above BATCH_SIZE: full batches wait for the "
                "quiet period instead of going at once.",
                hint="Set FLUSH_THRESHOLD to BATCH_SIZE (the default) or below.",
                id="pipeline.cdn.W001",
            )
        )
    if conf["WILDCARD_THRESHOLD"] and not conf["MAX_WILDCARDS"]:
        messages.append(
            checks.Warning(
                "PIPELINE CDN WILDCARD_THRESHOLD has no effect with MAX_WILDCARDS = 0.",
                hint="Set MAX_WILDCARDS (CloudFront allows up to 15), or WILDCARD_THRESHOLD to 0.",
                id="pipeline.cdn.W002",
            )
        )
    return messages
