-- Claim pending jobs for one polling worker and hand them over in the same statement: the
-- fetch (GET /workers/{id}/jobs) is the claim, so only a worker that is asking gets jobs.
--
-- Input: parallel arrays (queue, how many): the split of the worker's free slots between its
-- queues that workers/claiming.py planned (priorities, weights, caps, rate limits, plan room).
-- Each queue is read once with LIMIT n; only jobs of the worker's types when it declared
-- them (%(job_types)s NULL: any type).
--
-- Index: job_claim_pending (queue_id, priority DESC, sub_priority DESC, run_at, id) WHERE
-- state = 'pending' is exactly this ORDER BY, so the plan is an index scan stopped by LIMIT
-- whatever the backlog.
-- Concurrency: FOR UPDATE SKIP LOCKED lets any number of fetches (and web processes) claim at
-- once without handing out a job twice. MATERIALIZED keeps the locking subquery an
-- optimisation fence: without it the planner may re-run it per joined row and lock more than
-- LIMIT rows.
-- Each claim issues a fresh lease_token (the fencing token) and records the attempt as a
-- JobExecution row. Delivery is not acknowledgement: the answer may be written to a process
-- that died with its long-poll open, so the lease is only %(ack_seconds)s (the
-- acknowledgement timeout) until a heartbeat names the job (heartbeat.sql); a job nobody
-- acknowledges expires then and is retried, instead of waiting out a whole lease.
-- Rate limits: the buckets of the rate-limited queues (parallel arrays, empty when none) were
-- locked and read by lock_rate_limits.sql earlier in this transaction, and each queue's count
-- stays within floor(tokens); "spent" writes each bucket back, less the jobs this statement
-- actually claimed, under that lock.
WITH wanted AS (
    SELECT * FROM unnest(%(queue_ids)s::uuid[], %(counts)s::int[]) AS w(queue_id, n)
),
locked AS MATERIALIZED (
    SELECT j.id
    FROM wanted AS w
    CROSS JOIN LATERAL (
        SELECT id
        FROM jobs_job
        WHERE state = 'pending' AND queue_id = w.queue_id
            AND (%(job_types)s::text[] IS NULL OR job_type = ANY(%(job_types)s::text[]))
        ORDER BY priority DESC, sub_priority DESC, run_at, id
        LIMIT w.n
        FOR UPDATE SKIP LOCKED
    ) AS j
),
claimed AS (
    UPDATE jobs_job AS job
    SET state = 'processing',
        worker_id = %(worker_id)s,
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => %(ack_seconds)s),
        delivered_at = now(),
        attempts = job.attempts + 1,
        started_at = now()
    -- An array of ids, not a join with the CTE: with table statistics the planner would hash
    -- the CTE against a sequential scan of jobs_job (26 ms at 100,000 pending, 7 ms this way).
    WHERE job.id = ANY(ARRAY(SELECT id FROM locked))
    RETURNING job.id, job.organization_id, job.project_id, job.queue_id, job.job_type,
        job.payload, job.attempts, job.lease_token, job.lease_expires_at, job.timeout_seconds,
        job.priority, job.sub_priority, job.run_at, job.created_at
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
    SELECT organization_id, project_id, id, attempts, lease_token, %(worker_id)s, 'started',
        '', now()
    FROM claimed
)
-- The job's queue name, priorities and creation time go with it: a handler may want them (the
-- Django Tasks backend rebuilds its TaskResult from them) without asking for the job again.
SELECT c.id, c.queue_id, c.job_type, c.payload, c.attempts, c.lease_token, c.lease_expires_at,
    c.timeout_seconds, q.name, c.priority, c.sub_priority, c.created_at
FROM claimed AS c
JOIN queues_queue AS q ON q.id = c.queue_id
ORDER BY c.priority DESC, c.sub_priority DESC, c.run_at, c.id
