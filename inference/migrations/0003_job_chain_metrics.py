import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0002_job_runner"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="after",
            field=models.ForeignKey(
                blank=True,
                help_text="The job whose result this one was started on (a ``then`` chain).",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="chained",
                to="inference.job",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="metrics",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="What the job reports as it runs: step, loss, loss history, counts.",
            ),
        ),
    ]
