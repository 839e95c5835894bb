-- The dashboard's throughput of one project: succeeded, failed attempts and dead jobs per
-- bucket of %(bucket_seconds)s seconds, for the %(buckets)s buckets that end with the one now
-- is in (now: %(now)s, or now()), per queue (only %(queue_id)s when given). Buckets are
-- aligned to whole multiples of their length since 2000-01-01 UTC, as the rollup's hour
-- rows are, so a row of any folding state (a backend's shard, a folded minute, an hour:
-- fold_throughput.sql) falls into the one bucket that holds its minute.
-- Every bucket comes back at least once (queue_id NULL and zeros when nothing finished), so
-- the caller gets a series without gaps.
-- Tenancy: %(project_id)s scopes every row.
-- Index: jobthroughput_project (project_id, minute), one range: the window's rows only.
-- Concurrency: a plain read; a fold that commits meanwhile moves counts between rows of the
-- same bucket, and the statement's snapshot sees either side of it, never both.
WITH clock AS (
    SELECT date_bin(b.width, coalesce(%(now)s::timestamptz, now()),
            TIMESTAMPTZ '2000-01-01 00:00+00') AS last_start,
        b.width
    FROM (SELECT %(bucket_seconds)s::int * interval '1 second' AS width) AS b
),
buckets AS (
    SELECT generate_series(last_start - width * (%(buckets)s::int - 1), last_start, width)
        AS start
    FROM clock
),
sums AS (
    SELECT date_bin((SELECT width FROM clock), t.minute, TIMESTAMPTZ '2000-01-01 00:00+00')
            AS start,
        t.queue_id,
        sum(t.succeeded) AS succeeded,
        sum(t.failed) AS failed,
        sum(t.dead) AS dead
    FROM jobs_jobthroughput AS t
    WHERE t.project_id = %(project_id)s::uuid
        AND t.minute >= (SELECT min(start) FROM buckets)
        AND t.minute < (SELECT last_start + width FROM clock)
        AND (%(queue_id)s::uuid IS NULL OR t.queue_id = %(queue_id)s::uuid)
    GROUP BY 1, 2
)
SELECT b.start, s.queue_id, coalesce(s.succeeded, 0), coalesce(s.failed, 0),
    coalesce(s.dead, 0)
FROM buckets AS b
LEFT JOIN sums AS s ON s.start = b.start
ORDER BY b.start
