-- Submit one job without parents in one statement, so in one round trip and, outside a
-- transaction, in autocommit (no BEGIN and COMMIT): the latency path of POST /api/v1/jobs.
-- It resolves the queue by name (index queue_name_unique (project_id, name)), inserts the job
-- with the queue's defaults, decides its state from the statement's now() (scheduled when
-- run_at is ahead, else pending; the caller's spec holds no parents), and NOTIFYs
-- taskforge_jobs with the queue's id in hex when the job is pending (delivered at commit).
-- One row tells the caller what happened:
--   'created'  the job was inserted (columns the caller does not know: state, run_at,
--              max_attempts, timeout_seconds, created_at; the rest are NULL);
--   'existing' the idempotency key was used before in this project: that job, whole, with its
--              queue's name (it may sit in another queue), and nothing was written;
--   'no_queue' the project has no queue of that name (checked before the key, as before).
-- No row: the key's job was committed by a concurrent submit after this statement's snapshot
-- was taken. ON CONFLICT waited for that transaction and did nothing, so no duplicate was
-- made; the caller runs the statement again and finds it (jobs.services.submit).
-- Concurrency: the partial unique index job_idempotency_key_unique (project_id,
-- idempotency_key) WHERE idempotency_key IS NOT NULL is the arbiter, so two concurrent submits
-- of one key never make two jobs. Columns as in insert_jobs.sql (tests/jobs/test_job_row.py).
WITH queue AS (
    SELECT id, max_attempts, timeout_seconds
    FROM queues_queue
    WHERE project_id = %(project_id)s AND name = %(queue)s
),
new_job AS (
    INSERT INTO jobs_job (
        id, organization_id, project_id, queue_id, job_type, payload, state, priority,
        sub_priority, run_at, attempts, max_attempts, timeout_seconds, idempotency_key, tags,
        result, last_error, worker_id, lease_token, lease_expires_at, delivered_at,
        pending_parents, batch_id, created_at, started_at, finished_at
    )
    SELECT
        %(id)s, %(organization_id)s, %(project_id)s, queue.id, %(job_type)s,
        %(payload)s::jsonb, CASE WHEN due.run_at > now() THEN 'scheduled' ELSE 'pending' END,
        %(priority)s::smallint, %(sub_priority)s::smallint, due.run_at, 0,
        coalesce(%(max_attempts)s::integer, queue.max_attempts),
        coalesce(%(timeout_seconds)s::integer, queue.timeout_seconds),
        %(idempotency_key)s::text, %(tags)s::text[], NULL, '', NULL, NULL, NULL, NULL, 0, NULL,
        now(), NULL, NULL
    FROM queue,
        LATERAL (
            SELECT coalesce(
                %(run_at)s::timestamptz,
                now() + coalesce(%(delay_seconds)s::float8, 0) * interval '1 second'
            ) AS run_at
        ) AS due
    ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, queue_id, state, run_at, max_attempts, timeout_seconds, created_at
),
notified AS (
    SELECT pg_notify('taskforge_jobs', replace(queue_id::text, '-', ''))
    FROM new_job
    WHERE state = 'pending'
)
SELECT
    'created' AS outcome, id, NULL::text AS queue_name, NULL::text AS job_type,
    NULL::text AS payload, state, NULL::smallint AS priority, NULL::smallint AS sub_priority,
    run_at, 0 AS attempts,
    max_attempts, timeout_seconds, NULL::text AS idempotency_key, NULL::text[] AS tags,
    NULL::text AS result, NULL::text AS last_error, NULL::uuid AS worker_id, created_at,
    NULL::timestamptz AS started_at, NULL::timestamptz AS finished_at, NULL::uuid AS batch_id,
    (SELECT count(*) FROM notified) AS notified
FROM new_job
UNION ALL
SELECT
    'existing', job.id, job_queue.name, job.job_type, job.payload::text, job.state,
    job.priority, job.sub_priority, job.run_at, job.attempts, job.max_attempts,
    job.timeout_seconds, job.idempotency_key, job.tags::text[], job.result::text, job.last_error, job.worker_id,
    job.created_at, job.started_at, job.finished_at, job.batch_id, 0
FROM jobs_job AS job
JOIN queues_queue AS job_queue ON job_queue.id = job.queue_id
WHERE job.project_id = %(project_id)s
    AND job.idempotency_key = %(idempotency_key)s::text
    -- The unique index's predicate, so that a generic (prepared) plan can use the index.
    AND job.idempotency_key IS NOT NULL
    AND NOT EXISTS (SELECT FROM new_job)
    AND EXISTS (SELECT FROM queue)
UNION ALL
SELECT
    'no_queue', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0
WHERE NOT EXISTS (SELECT FROM queue)
