"""sub_priority orders jobs within a priority; the claim index takes it as its next key.

The new claim index is built CONCURRENTLY under a temporary name before the old one goes, so
claims always have an index in claim order; then it takes the old name back.
"""

from django.contrib.postgres.operations import (
    AddConstraintNotValid,
    AddIndexConcurrently,
    RemoveIndexConcurrently,
    ValidateConstraint,
)
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("jobs", "0008_held_cancelled_jobs"),
    ]

    operations = [
        # A constant default: PostgreSQL adds the column without rewriting the table. Kept
        # in the database (db_default) for the statements that insert rows in SQL.
        migrations.AddField(
            model_name="job",
            name="sub_priority",
            field=models.SmallIntegerField(default=0, db_default=0),
        ),
        # NOT VALID, then validated: adding a checked constraint would hold an exclusive lock
        # on jobs_job while it scans every row; validating takes a lock that lets jobs flow.
        AddConstraintNotValid(
            model_name="job",
            constraint=models.CheckConstraint(
                condition=models.Q(("sub_priority__gte", -100), ("sub_priority__lte", 100)),
                name="job_sub_priority_range",
            ),
        ),
        ValidateConstraint(model_name="job", name="job_sub_priority_range"),
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                condition=models.Q(("state", "pending")),
                fields=["queue", "-priority", "-sub_priority", "run_at", "id"],
                name="job_claim_pending_new",
            ),
        ),
        RemoveIndexConcurrently(model_name="job", name="job_claim_pending"),
        migrations.RenameIndex(
            model_name="job", new_name="job_claim_pending", old_name="job_claim_pending_new"
        ),
        migrations.AddField(
            model_name="jobexecution",
            name="traceback",
            field=models.TextField(blank=True, default="", db_default=""),
        ),
    ]
