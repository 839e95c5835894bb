-- Bulk submit: stream new jobs into jobs_job with COPY (River's InsertManyFast, Graphile's
-- add_jobs). COPY skips per-row SQL parsing and psycopg writes rows in C, about twice as fast
-- here as INSERT … SELECT FROM unnest(arrays).
-- Columns are every concrete field of jobs.models.Job, in model order (JobRow in
-- jobs/queries.py; tests/jobs/test_job_row.py keeps the model, JobRow and both insert
-- statements in step). State and run_at are decided by the caller from the transaction's
-- now() (read with the queues), so times still come from the database clock.
-- Concurrency: COPY has no ON CONFLICT. A concurrent submit that committed the same
-- (project, idempotency_key) first makes this COPY fail with a unique violation; the caller
-- rolls back and retries, and the retry finds the winner's job (services.submit_jobs).
COPY jobs_job (
    id, organization_id, project_id, queue_id, job_type, payload, state, priority, sub_priority,
    run_at, attempts, max_attempts, timeout_seconds, idempotency_key, tags, result, last_error,
    worker_id, lease_token, lease_expires_at, delivered_at, pending_parents, batch_id,
    created_at, started_at, finished_at
) FROM STDIN
