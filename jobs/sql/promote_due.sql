-- Move scheduled jobs whose run_at has come to pending, oldest first, at most %(limit)s, and
-- wake the long-polls of the workers serving their queues (one NOTIFY per queue, delivered at
-- commit; jobs/sql/notify_ready.sql says how the payload is read). Returns one row per queue
-- with the count moved there.
-- Index: job_due_scheduled (run_at) WHERE state = 'scheduled'.
-- Concurrency: SKIP LOCKED lets several dispatchers promote disjoint rows; a row one of them
-- holds is simply left for the next tick.
WITH due AS MATERIALIZED (
    SELECT id FROM jobs_job
    WHERE state = 'scheduled' AND run_at <= now()
    ORDER BY run_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
promoted AS (
    UPDATE jobs_job AS job
    SET state = 'pending'
    FROM due
    WHERE job.id = due.id
    RETURNING job.queue_id
)
SELECT queue_id, count(*), pg_notify('taskforge_jobs', replace(queue_id::text, '-', ''))
FROM promoted
GROUP BY queue_id
