-- Insert many jobs in one statement (the engine's bulk submit).
-- Arrays, one element per job, are unnested into rows: one round trip for up to
-- TASKFORGE_MAX_BATCH_JOBS jobs. The initial state is decided here, by the database clock:
-- blocked while parents are unfinished, scheduled while run_at is in the future, else pending.
-- Concurrency: a concurrent insert of the same (project, idempotency_key) makes ON CONFLICT
-- skip the row; the caller sees fewer rows returned than sent and retries its transaction,
-- which then finds the winner's job (services.submit_jobs).
INSERT INTO jobs_job (
    id, organization_id, project_id, queue_id, job_type, payload, state, priority, run_at,
    attempts, max_attempts, timeout_seconds, idempotency_key, tags, last_error,
    pending_parents, batch_id, created_at
)
SELECT
    u.id, %(organization_id)s, %(project_id)s, u.queue_id, u.job_type, u.payload::jsonb,
    CASE
        WHEN u.forced_state IS NOT NULL THEN u.forced_state
        WHEN u.pending_parents > 0 THEN 'blocked'
        WHEN coalesce(u.run_at, now() + make_interval(secs => u.delay)) > now() THEN 'scheduled'
        ELSE 'pending'
    END,
    u.priority,
    coalesce(u.run_at, now() + make_interval(secs => u.delay)),
    0, u.max_attempts, u.timeout_seconds, u.idempotency_key,
    ARRAY(SELECT jsonb_array_elements_text(u.tags::jsonb)),
    u.last_error, u.pending_parents, %(batch_id)s, now()
FROM unnest(
    %(ids)s::uuid[], %(queue_ids)s::uuid[], %(job_types)s::text[], %(payloads)s::text[],
    %(priorities)s::int[], %(run_ats)s::timestamptz[], %(delays)s::float8[],
    %(max_attempts)s::int[], %(timeouts)s::int[], %(idempotency_keys)s::text[],
    %(tags)s::text[], %(pending_parents)s::int[], %(forced_states)s::text[],
    %(last_errors)s::text[]
) AS u(
    id, queue_id, job_type, payload, priority, run_at, delay, max_attempts, timeout_seconds,
    idempotency_key, tags, pending_parents, forced_state, last_error
)
ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, state
