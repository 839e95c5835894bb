"""The retry backoff as one SQL function, shared by fail_jobs.sql and lease expiry.

delay = min(max, base * multiplier^(attempt-1)), then jitter: full = random(0, delay),
equal = delay/2 + random(0, delay/2), none = delay. The comparison runs in log space so a
large attempt count cannot overflow double precision.
"""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION taskforge_retry_delay(
    attempt integer, base double precision, multiplier double precision,
    max_delay double precision, jitter text
) RETURNS double precision
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT CASE jitter
        WHEN 'full' THEN random() * d
        WHEN 'equal' THEN d / 2 + random() * d / 2
        ELSE d
    END
    FROM (
        SELECT CASE
            WHEN base <= 0 OR max_delay <= 0 THEN 0
            WHEN multiplier <= 1 THEN least(base, max_delay)
            WHEN ln(base) + greatest(attempt - 1, 0) * ln(multiplier) >= ln(max_delay) THEN max_delay
            ELSE base * power(multiplier, greatest(attempt - 1, 0))
        END AS d
    ) AS backoff
$$;
"""

DROP = "DROP FUNCTION IF EXISTS taskforge_retry_delay(integer, double precision, double precision, double precision, text);"


class Migration(migrations.Migration):
    dependencies = [("jobs", "0001_initial")]

    operations = [migrations.RunSQL(CREATE, DROP)]
