-- A worker's heartbeat: push back the lease of each job it says it is still running.
-- Only jobs processing under this worker change, so a heartbeat can never revive a job that
-- expired and went to another worker. Index: job_worker_processing.
UPDATE jobs_job
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE state = 'processing' AND worker_id = %(worker_id)s AND id = ANY(%(ids)s::uuid[])
