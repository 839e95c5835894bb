"""The table of the database cache (taskforge/lib/dbcache.py), where the rate limits are
counted when REDIS_URL is unset: the shape `manage.py createcachetable` gives it, created here
so that every `migrate` has it, whatever CACHES says at the time."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = []

    operations = [
        migrations.RunSQL(
            sql=[
                "CREATE TABLE taskforge_cache ("
                " cache_key varchar(255) NOT NULL PRIMARY KEY,"
                " value text NOT NULL,"
                " expires timestamp with time zone NOT NULL)",
                "CREATE INDEX taskforge_cache_expires ON taskforge_cache (expires)",
            ],
            reverse_sql=["DROP TABLE taskforge_cache"],
        ),
    ]
