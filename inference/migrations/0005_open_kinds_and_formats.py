from django.db import migrations, models

import inference.formats


class Migration(migrations.Migration):
    """Job.kind and ModelArtifact.format lose their closed choices: kinds come from the pipeline's
    registry (KINDS) and formats from inference.formats, so a new one needs no migration."""

    dependencies = [("inference", "0004_modelartifact_owner")]

    operations = [
        migrations.AlterField(model_name="job", name="kind", field=models.CharField(max_length=32)),
        migrations.AlterField(
            model_name="modelartifact",
            name="format",
            field=models.CharField(max_length=16, validators=[inference.formats.format_validate]),
        ),
    ]
