import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def snapshots_owned(apps, schema_editor):
    """Chat snapshots made before this field (a fine-tune on sessions or compare picks) become
    their user's, found by the username the snapshot recorded."""
    artifact_model = apps.get_model("inference", "ModelArtifact")
    user_model = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    for artifact in artifact_model.objects.filter(format="dataset", owner__isnull=True).iterator():
        details = artifact.details if isinstance(artifact.details, dict) else {}
        if details.get("source") not in ("sessions", "preferences") or not details.get("user"):
            continue
        # Historical models keep no USERNAME_FIELD: the default user model's is username.
        field = getattr(user_model, "USERNAME_FIELD", "username")
        owner = user_model.objects.filter(**{field: details["user"]}).first()
        if owner is not None:
            artifact.owner = owner
            artifact.save(update_fields=["owner"])


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0003_job_chain_metrics"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="modelartifact",
            name="owner",
            field=models.ForeignKey(
                blank=True,
                help_text="Only this user sees and uses it (a snapshot of their chats); empty: shared.",
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="private_artifacts",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(snapshots_owned, migrations.RunPython.noop),
    ]
