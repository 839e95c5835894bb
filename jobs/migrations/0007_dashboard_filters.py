import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built CONCURRENTLY, as in 0006: jobs keep flowing while the indexes build.
    atomic = False

    dependencies = [
        ("accounts", "0001_initial"),
        ("jobs", "0006_dashboard"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                fields=["project", "job_type", "-created_at", "-id"], name="job_project_type"
            ),
        ),
        AddIndexConcurrently(
            model_name="job",
            index=django.contrib.postgres.indexes.GinIndex(fields=["tags"], name="job_tags"),
        ),
        # Every tenant query filters organization and project together, and a queue filter
        # adds queue_id: PostgreSQL takes the three as independent and underestimates the rows
        # 10-100 times, then picks a bitmap scan and a sort of the whole project (250-600 ms at
        # a million jobs) over an index range (10 ms). Functional-dependency statistics tell
        # it that queue determines project and project determines organization. They cost
        # inserts nothing; ANALYZE (the dispatcher's maintenance) fills them.
        migrations.RunSQL(
            "CREATE STATISTICS IF NOT EXISTS jobs_job_tenant_dependencies (dependencies) "
            "ON organization_id, project_id, queue_id FROM jobs_job",
            "DROP STATISTICS IF EXISTS jobs_job_tenant_dependencies",
        ),
    ]
