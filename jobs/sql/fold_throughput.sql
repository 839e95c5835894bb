-- Fold the dashboard's rollup (jobs_jobthroughput) into fewer rows, without changing any sum
-- a reader computes: the rows of a minute that is over move from the backends' shards
-- (shard = a pid, >= 2) into the minute's shard 0, and every minute row older than a day
-- (shard 0 or a pid) into its hour's row, shard 1. Returns how many rows were folded away.
-- Time is %(now)s (tests) or now(); a day ago is rounded down to the hour, so an hour row
-- only ever holds whole hours that are all past the cut, and never an hour of the 24-hour
-- chart (jobs/services/stats.py reads every shard, whatever has been folded).
-- Concurrency: run by one dispatcher at a time (a transaction advisory lock taken by
-- jobs/services/stats.py). SKIP LOCKED leaves a row that a completion is still counting into
-- (a transaction that began in that minute) for the next run: this statement never waits for
-- a completion, while a completion may wait the few milliseconds this one holds its row.
-- Nothing else writes shards 0 and 1, so the upsert never waits either.
-- Index: jobthroughput_fold (shard, minute), one range per arm of the OR (a BitmapOr): the
-- backends' rows (few: the minutes since the last run), the folded minutes past the day;
-- the primary key for the delete; jobthroughput_bucket_unique for the upsert.
WITH clock AS (
    SELECT date_trunc('minute', n) AS this_minute,
        date_bin('1 hour', n - interval '24 hours', TIMESTAMPTZ '2000-01-01 00:00+00')
            AS day_ago
    FROM (SELECT coalesce(%(now)s::timestamptz, now()) AS n) AS t
),
moving AS MATERIALIZED (
    SELECT t.id
    FROM jobs_jobthroughput AS t
    WHERE (t.shard >= 2 AND t.minute < (SELECT this_minute FROM clock))
        OR (t.shard = 0 AND t.minute < (SELECT day_ago FROM clock))
    FOR UPDATE OF t SKIP LOCKED
),
moved AS (
    -- By primary key: as a join, the planner would hash the whole table to find a few rows.
    DELETE FROM jobs_jobthroughput AS t
    WHERE t.id = ANY(ARRAY(SELECT id FROM moving))
    RETURNING t.organization_id, t.project_id, t.queue_id, t.minute, t.succeeded, t.failed,
        t.dead
),
target AS (
    SELECT m.*, m.minute < c.day_ago AS coarsen
    FROM moved AS m, clock AS c
),
merged AS (
    INSERT INTO jobs_jobthroughput AS t
        (organization_id, project_id, queue_id, minute, shard, succeeded, failed, dead)
    SELECT organization_id, project_id, queue_id,
        CASE WHEN coarsen THEN date_bin('1 hour', minute, TIMESTAMPTZ '2000-01-01 00:00+00')
            ELSE minute END,
        CASE WHEN coarsen THEN 1 ELSE 0 END,
        sum(succeeded), sum(failed), sum(dead)
    FROM target
    GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (queue_id, minute, shard) DO UPDATE
        SET succeeded = t.succeeded + excluded.succeeded,
            failed = t.failed + excluded.failed,
            dead = t.dead + excluded.dead
)
SELECT count(*) FROM moved
