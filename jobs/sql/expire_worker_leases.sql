-- A worker went offline or deregistered: end its leases now, so the next lease-expiry step
-- retries its jobs at once instead of waiting out TASKFORGE_LEASE_SECONDS.
-- Index: job_worker_processing.
UPDATE jobs_job
SET lease_expires_at = now()
WHERE state = 'processing' AND worker_id = ANY(%(worker_ids)s::uuid[])
