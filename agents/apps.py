from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Jobs (synthesize, ...) may name an agent; inference must not import agents, so the
        # agents layer tells it how a slug becomes a model artifact the user may use.
        from agents.selectors import agent_for_job
        from inference.jobs import services

        services.agent_resolver_install(agent_for_job)
