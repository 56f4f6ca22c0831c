from django.apps import AppConfig


class PipelineConfig(AppConfig):
    name = "pipeline"
    verbose_name = "Media pipeline"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import pipeline.cdn.checks
        import pipeline.checks  # noqa: F401  (registers the model checks)
        import pipeline.tasks  # noqa: F401  (registers the tasks that dispatch sends by name)
        from pipeline import signals
        from pipeline.conf import pipeline_settings

        # Validate settings.PIPELINE (profiles included) at start-up: a bad profile is an
        # ImproperlyConfigured now, not a failed row at the first upload.
        pipeline_settings()
        signals.connect()
