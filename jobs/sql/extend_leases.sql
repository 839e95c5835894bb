-- A worker's heartbeat: push back the lease of each job it says it is still running.
-- Only jobs processing under this worker change, so a heartbeat can never revive a job that
-- expired and went to another worker. Naming a delivered job is also what acknowledges its
-- delivery: until then its lease is only TASKFORGE_ACK_TIMEOUT_SECONDS (workers/sql/claim_for_worker.sql).
-- Index: job_worker_processing.
-- Row locks: SKIP LOCKED, so a row another transaction holds does not hold up the heartbeat
-- (and with it every other lease of the worker); lease expiry skips locked rows as well, so
-- the skipped job's lease is pushed back by the next heartbeat after the lock is gone.
WITH locked AS MATERIALIZED (
    SELECT id FROM jobs_job
    WHERE state = 'processing' AND worker_id = %(worker_id)s AND id = ANY(%(ids)s::uuid[])
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE jobs_job AS job
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM locked
WHERE job.id = locked.id AND job.state = 'processing' AND job.worker_id = %(worker_id)s
