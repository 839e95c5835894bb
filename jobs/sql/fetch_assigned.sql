-- Hand a worker the jobs the dispatcher assigned to it and it has not fetched yet.
-- Index: job_worker_processing (worker_id) WHERE state = 'processing'.
-- Concurrency: SKIP LOCKED, so two concurrent long-polls of one worker split the jobs
-- instead of both returning them.
WITH picked AS MATERIALIZED (
    SELECT id FROM jobs_job
    WHERE state = 'processing' AND worker_id = %(worker_id)s AND delivered_at IS NULL
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs_job AS job
SET delivered_at = now()
FROM picked
WHERE job.id = picked.id
RETURNING job.id, job.job_type, job.payload, job.attempts, job.lease_token,
    job.lease_expires_at, job.timeout_seconds
