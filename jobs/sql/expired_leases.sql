-- Lock up to %(limit)s processing jobs whose lease ran out (their worker stopped heartbeating).
-- The caller fails them, in the same transaction, through fail_jobs.sql as timed-out attempts.
-- Index: job_lease_processing (lease_expires_at) WHERE state = 'processing'.
-- Concurrency: SKIP LOCKED, so a job whose late result is being written right now is skipped,
-- and two dispatchers never expire the same job.
SELECT id, lease_token
FROM jobs_job
WHERE state = 'processing' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
