-- Lock the processing jobs a worker holds, except the ids in %(keep)s, and return their
-- (id, lease_token): a worker re-registering under its name says what its new process runs,
-- and the caller fails the rest (fail_jobs.sql, in the same transaction) as attempts lost with
-- the old process, so that they are retried and the worker's slots are free again at once.
-- Tenancy: %(project_id)s, the worker's project.
-- Index: job_worker_processing (worker_id) WHERE state = 'processing'.
-- Concurrency: SKIP LOCKED: a row another transaction holds (the old process's late result
-- being written, say) is left to that transaction, or to lease expiry.
SELECT id, lease_token
FROM jobs_job
WHERE state = 'processing'
    AND worker_id = %(worker_id)s
    AND project_id = %(project_id)s
    AND NOT (id = ANY(%(keep)s::uuid[]))
ORDER BY id
FOR NO KEY UPDATE SKIP LOCKED
