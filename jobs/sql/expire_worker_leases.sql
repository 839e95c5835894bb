-- A worker went offline or deregistered: end its leases now, so the next lease-expiry step
-- retries its jobs at once instead of waiting out TASKFORGE_LEASE_SECONDS; and release the
-- jobs cancelled while they ran there that it still held (lease_expires_at NULL: their slots
-- no longer count busy; jobs/services/actions.py), since it runs nothing now.
-- Index: job_worker_processing and job_worker_held_cancelled (both on worker_id, partial);
-- the OR of their two conditions is a BitmapOr of the two.
-- Row locks: a plain UPDATE, which waits for a row another transaction holds; it changes only
-- the rows of the workers given (the dispatcher's sweep of silent workers, a deregistration).
UPDATE jobs_job
SET lease_expires_at = CASE WHEN state = 'processing' THEN now() END
WHERE worker_id = ANY(%(worker_ids)s::uuid[])
    AND (state = 'processing' OR (state = 'cancelled' AND lease_expires_at IS NOT NULL))
