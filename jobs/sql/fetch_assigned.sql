-- Hand a worker the jobs the dispatcher assigned to it and it has not fetched yet.
-- Delivery is not acknowledgement: the answer may be written to a process that died with its
-- long-poll open. So a delivered job's lease is cut to %(ack_seconds)s (the acknowledgement
-- timeout) until a heartbeat names it (extend_leases.sql); a job nobody acknowledges expires
-- like any lease then, and is retried, instead of waiting out a whole lease.
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
SET delivered_at = now(),
    lease_expires_at = least(job.lease_expires_at, now() + make_interval(secs => %(ack_seconds)s))
FROM picked
WHERE job.id = picked.id
RETURNING job.id, job.job_type, job.payload, job.attempts, job.lease_token,
    job.lease_expires_at, job.timeout_seconds
