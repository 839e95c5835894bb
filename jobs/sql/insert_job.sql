-- Insert one job (the general submit path: a job with parents, an engine producer): the
-- INSERT and, when the job is ready to run, the NOTIFY on taskforge_jobs with its queue's id in
-- hex (as notify_ready.sql sends it), in one statement: one round trip, where COPY
-- (insert_jobs.sql) takes two and a separate NOTIFY a third. A single POST /api/v1/jobs without
-- parents takes submit_job.sql instead.
-- Columns and concurrency as in insert_jobs.sql: a concurrent submit that committed the same
-- (project, idempotency_key) first makes this fail with a unique violation, and the caller
-- retries (services.submit_jobs).
WITH inserted AS (
    INSERT INTO jobs_job (
        id, organization_id, project_id, queue_id, job_type, payload, state, priority,
        sub_priority, run_at, attempts, max_attempts, timeout_seconds, idempotency_key, tags,
        result, last_error, worker_id, lease_token, lease_expires_at, delivered_at,
        pending_parents, batch_id, created_at, started_at, finished_at
    ) VALUES (
        %(id)s, %(organization_id)s, %(project_id)s, %(queue_id)s, %(job_type)s,
        %(payload)s::jsonb, %(state)s, %(priority)s, %(sub_priority)s, %(run_at)s, %(attempts)s,
        %(max_attempts)s, %(timeout_seconds)s, %(idempotency_key)s, %(tags)s::text[],
        %(result)s::jsonb, %(last_error)s, %(worker_id)s, %(lease_token)s,
        %(lease_expires_at)s, %(delivered_at)s, %(pending_parents)s, %(batch_id)s,
        %(created_at)s, %(started_at)s, %(finished_at)s
    )
    RETURNING queue_id, state
)
SELECT pg_notify('taskforge_jobs', replace(queue_id::text, '-', ''))
FROM inserted
WHERE state = 'pending'
