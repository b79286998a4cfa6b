import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('sessions_app', '0004_pick'),
    ]

    operations = [
        migrations.CreateModel(
            name='LeaderboardTable',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('version', models.PositiveBigIntegerField(default=0, help_text='Bumped by every pick made or changed.')),
                ('computed_version', models.PositiveBigIntegerField(default=0)),
                ('picks', models.PositiveIntegerField(default=0, help_text='How many picks the table was computed from.')),
                ('rows', models.JSONField(blank=True, default=list, help_text='Per agent id: rating, interval, wins, losses.')),
                ('computed_at', models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name='TurnChoice',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('turn', models.PositiveSmallIntegerField(help_text='The turn whose speaker it picks, from 1.')),
                ('status', models.CharField(choices=[('queued', 'Queued'), ('choosing', 'Choosing'), ('done', 'Done'), ('failed', 'Failed'), ('cancelled', 'Cancelled'), ('interrupted', 'Interrupted')], default='queued', max_length=16)),
                ('worker', models.CharField(blank=True, default='', max_length=200)),
                ('heartbeat_at', models.DateTimeField(blank=True, null=True)),
                ('answer', models.CharField(blank=True, default='', help_text='What the supervisor said.', max_length=200)),
                ('error', models.TextField(blank=True, default='')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('user_message', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='choices', to='sessions_app.message')),
            ],
            options={
                'ordering': ['pk'],
                'indexes': [models.Index(fields=['status', 'heartbeat_at'], name='sessions_ap_status_1bcaae_idx')],
            },
        ),
    ]
