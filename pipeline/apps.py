from django.apps import AppConfig


class PipelineConfig(AppConfig):
    """The model pipeline: jobs (convert, quantize, export, fine-tune, synthesize, evaluate,
    benchmark), their steps, API, pages and socket. Its tables (Job, ModelArtifact, Evaluation)
    are still the ``inference`` app's; the code sits above ``sessions_app`` and imports what it
    needs directly."""

    name = "pipeline"
    verbose_name = "Model pipeline"
    default_auto_field = "django.db.models.BigAutoField"
