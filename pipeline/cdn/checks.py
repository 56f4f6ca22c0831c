"""System checks of the CDN settings: a wrong backend fails ``manage.py check`` at start-up,
not the first flush in a worker hours later.

Registered by ``PipelineConfig.ready()`` (``import pipeline.cdn.checks``).
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register("pipeline")
def check_cdn_settings(
    app_configs: list[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    from pipeline.cdn.backends import get_backend
    from pipeline.conf import pipeline_settings

    try:
        get_backend()
        conf = pipeline_settings()["CDN"]
    except ImproperlyConfigured as e:
        return [checks.Error(str(e), id="pipeline.cdn.E001")]
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
                id="pipeline.cdn.W002",
            )
        )
    return messages
