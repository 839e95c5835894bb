-- Move scheduled jobs whose run_at has come to pending, oldest first, at most %(limit)s.
-- Index: job_due_scheduled (run_at) WHERE state = 'scheduled'.
-- Concurrency: SKIP LOCKED lets several dispatchers promote disjoint rows; a row one of them
-- holds is simply left for the next tick.
WITH due AS MATERIALIZED (
    SELECT id FROM jobs_job
    WHERE state = 'scheduled' AND run_at <= now()
    ORDER BY run_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs_job AS job
SET state = 'pending'
FROM due
WHERE job.id = due.id
