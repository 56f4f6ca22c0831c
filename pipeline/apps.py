from django.apps import AppConfig


class PipelineConfig(AppConfig):
    name = "pipeline"
    verbose_name = "Media pipeline"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported for what importing does: registering the system checks, and the
        # tasks that pipeline.dispatch sends by name.
        import pipeline.cdn.checks
        import pipeline.checks
        import pipeline.tasks  # noqa: F401
        from pipeline import signals
        from pipeline.conf import pipeline_settings

        # Validate settings.PIPELINE (profiles included) at start-up: a bad profile is an
        # ImproperlyConfigured now, not a failed row at the first upload.
        pipeline_settings()
        signals.connect()
