from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    label = "sessions_app"
    verbose_name = "Chat sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from inference.jobs import benchmark, events
        from sessions_app import (
            broadcast,
            schema,  # noqa: F401  # registers the token scheme with drf-spectacular
            tokens,
            training,
        )

        # Job progress goes out through the same broadcaster as replies (never raises; in the
        # embedded default it hands the send to daphne's loop).
        events.sender_install(broadcast.group_send)
        # The fine-tune job may train on a user's picked sessions and compare picks.
        training.sources_install()
        # A benchmark job reaches the platform's doors as its owner, with a token revoked afterwards.
        benchmark.token_maker_install(tokens.token_for_job)
