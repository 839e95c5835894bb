from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built CONCURRENTLY, as in 0006: jobs keep flowing while the index builds.
    atomic = False

    dependencies = [
        ("jobs", "0007_dashboard_filters"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                condition=models.Q(("lease_expires_at__isnull", False), ("state", "cancelled")),
                fields=["worker_id"],
                name="job_worker_held_cancelled",
            ),
        ),
    ]
