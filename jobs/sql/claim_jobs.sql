-- Assign pending jobs to workers: one statement for every (worker, queue, slot) of a tick.
--
-- Input: parallel arrays of slots. Slot numbers count 1..n per queue across all workers, so
-- each queue is read once with LIMIT n (its total demand) and its k-th job goes to the worker
-- holding slot k. Locking the same queue twice in one statement would return the same rows
-- twice: SKIP LOCKED does not skip rows locked by one's own transaction.
--
-- Index: job_claim_pending (queue_id, priority DESC, run_at, id) WHERE state = 'pending' is
-- exactly this ORDER BY, so the plan is an index scan stopped by LIMIT whatever the backlog
-- size or table statistics.
-- Concurrency: FOR UPDATE SKIP LOCKED lets any number of dispatchers claim at once without
-- handing out a job twice. MATERIALIZED keeps the locking subquery an optimisation fence:
-- without it the planner may re-run it per joined row and lock more than LIMIT rows.
-- Each claim issues a fresh lease_token (the fencing token) and records the attempt as a
-- JobExecution row in the same statement.
-- Rate limits: the buckets of the rate-limited queues (parallel arrays, empty when none) were
-- locked and read by lock_rate_limits.sql earlier in this transaction, and the slots of each
-- queue stay within floor(tokens); "spent" writes each bucket back, less the jobs this
-- statement actually claimed, under that lock. Queues without a limit are not in the arrays
-- and their rows are not touched.
WITH slots AS (
    SELECT *
    FROM unnest(%(worker_ids)s::uuid[], %(queue_ids)s::uuid[], %(slots)s::int[])
        AS s(worker_id, queue_id, slot)
),
demand AS (
    SELECT queue_id, count(*) AS n FROM slots GROUP BY queue_id
),
locked AS MATERIALIZED (
    SELECT
        j.id, j.queue_id,
        row_number() OVER (PARTITION BY j.queue_id ORDER BY j.priority DESC, j.run_at, j.id)
            AS slot
    FROM demand d
    CROSS JOIN LATERAL (
        SELECT id, queue_id, priority, run_at
        FROM jobs_job
        WHERE state = 'pending' AND queue_id = d.queue_id
        ORDER BY priority DESC, run_at, id
        LIMIT d.n
        FOR UPDATE SKIP LOCKED
    ) AS j
),
claimed AS (
    UPDATE jobs_job AS job
    SET state = 'processing',
        worker_id = s.worker_id,
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        delivered_at = NULL,
        attempts = job.attempts + 1,
        started_at = now()
    FROM locked AS l
    JOIN slots AS s ON s.queue_id = l.queue_id AND s.slot = l.slot
    WHERE job.id = l.id
    RETURNING job.id, job.organization_id, job.project_id, job.queue_id, job.worker_id,
        job.attempts, job.lease_token
),
spent AS (
    UPDATE queues_queue AS q
    SET rate_tokens = b.tokens - c.n, rate_refilled_at = b.as_of
    FROM unnest(
        %(rate_queue_ids)s::uuid[], %(rate_tokens)s::float8[], %(rate_as_of)s::timestamptz[]
    ) AS b(queue_id, tokens, as_of)
    JOIN (SELECT queue_id, count(*) AS n FROM claimed GROUP BY queue_id) AS c
        ON c.queue_id = b.queue_id
    WHERE q.id = b.queue_id
),
executions AS (
    INSERT INTO jobs_jobexecution (
        organization_id, project_id, job_id, attempt, lease_token, worker_id, status, error,
        started_at
    )
    SELECT organization_id, project_id, id, attempts, lease_token, worker_id, 'started', '', now()
    FROM claimed
)
-- Each worker that got jobs is NOTIFYed here rather than in a statement of its own;
-- PostgreSQL delivers one notification per channel and payload per transaction, at commit.
SELECT id, worker_id, queue_id,
    pg_notify('taskforge_worker_' || replace(worker_id::text, '-', ''), '')
FROM claimed
