-- What a submission reads before it writes, in one round trip:
-- * kind 'queue': the queues it names, with the defaults its jobs inherit, and the
--   transaction's now() (constant for the whole transaction) from which run_at and the
--   initial state are decided. Index: queue_name_unique (project_id, name).
-- * kind 'job': the project's jobs that already use one of its idempotency keys, with their
--   state. One probe of job_idempotency_key_unique (project_id, idempotency_key) per key: the
--   LATERAL ... LIMIT 1 keeps the planner from scanning the whole project and filtering by the
--   keys (9 ms for 1,000 keys in a project of 35,000 jobs, whose statistics were stale),
--   and the index's predicate is repeated so that a generic plan can use it too.
-- A key committed by a concurrent submit after this read makes the insert fail with a unique
-- violation; the caller rolls back and retries, and the retry finds it (services.submit).
SELECT 'queue' AS kind, name::text, id, max_attempts, timeout_seconds, NULL::text AS state,
    now() AS now
FROM queues_queue
WHERE project_id = %(project_id)s AND name = ANY(%(names)s::text[])
UNION ALL
SELECT 'job', wanted.key, job.id, NULL, NULL, job.state::text, NULL
FROM unnest(%(keys)s::text[]) AS wanted(key)
CROSS JOIN LATERAL (
    SELECT id, state
    FROM jobs_job
    WHERE project_id = %(project_id)s
        AND idempotency_key = wanted.key
        AND idempotency_key IS NOT NULL
    LIMIT 1
) AS job
