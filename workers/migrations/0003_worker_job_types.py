import django.contrib.postgres.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("workers", "0002_web_process"),
    ]

    operations = [
        migrations.AddField(
            model_name="worker",
            name="job_types",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(max_length=200), blank=True, null=True, size=None
            ),
        ),
    ]
