"""System checks of the pipeline's models: mistakes found by ``manage.py check`` at
start-up, not by a failed row in a worker hours later.

Registered by ``PipelineConfig.ready()``.
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.core import checks

from pipeline.conf import pipeline_settings
from pipeline.fields import media_fields


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
