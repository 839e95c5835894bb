-- Fail many attempts in one statement: each job goes back to scheduled after the queue's
-- backoff (taskforge_retry_delay, jobs/migrations/0002) or, when out of attempts or not
-- retryable, to dead. Used for worker-reported failures and for expired leases alike.
-- Counts each attempt into the dashboard's per-minute rollup (jobs_jobthroughput).
-- Fencing: only rows processing under the same lease_token change; the caller reports a
-- conflict for ids that are not returned.
-- Row locks: the jobs are locked first, FOR NO KEY UPDATE SKIP LOCKED, as in complete_jobs.sql:
-- a row another transaction holds is skipped, and returned with the state 'busy' (and nothing
-- else) when it is still processing under its token, for the caller to retry rather than
-- report as stale. Lease expiry and a worker's re-registration locked their rows earlier in
-- the same transaction; SKIP LOCKED never skips the transaction's own locks.
-- Tenancy: %(project_id)s scopes the rows; NULL only from the engine's lease expiry
-- (queries.fail_expired_leases_of_every_tenant), which no request path imports.
-- callback_owed: the job went dead and its batch has callbacks not yet enqueued.
-- Rollup (tally): +1 failed per attempt failed here (retried or not), +1 dead per job that
-- went dead, one upsert per queue into this session's own row of the minute, as in
-- complete_jobs.sql (shard = pg_backend_pid(): no wait on, and no deadlock over, a counter
-- row shared with another transaction, even one that completed jobs of the same queues).
-- Index: primary key (jobs, batches); jobs_jobexecution_job_id for the execution rows;
-- jobthroughput_bucket_unique (queue_id, minute, shard) for the upsert.
WITH input AS (
    SELECT *
    FROM unnest(%(ids)s::uuid[], %(lease_tokens)s::uuid[], %(errors)s::text[],
        %(retryable)s::boolean[], %(tracebacks)s::text[])
        AS i(id, lease_token, error, retryable, traceback)
),
locked AS MATERIALIZED (
    SELECT job.id
    FROM jobs_job AS job
    JOIN input AS i ON i.id = job.id AND i.lease_token = job.lease_token
    WHERE job.state = 'processing'
        AND (%(project_id)s::uuid IS NULL OR job.project_id = %(project_id)s::uuid)
    FOR NO KEY UPDATE OF job SKIP LOCKED
),
failed AS (
    UPDATE jobs_job AS job
    SET state = CASE
            WHEN NOT i.retryable OR job.attempts >= job.max_attempts THEN 'dead'
            ELSE 'scheduled'
        END,
        run_at = CASE
            WHEN NOT i.retryable OR job.attempts >= job.max_attempts THEN job.run_at
            ELSE now() + make_interval(secs => taskforge_retry_delay(
                job.attempts, q.backoff_base_seconds, q.backoff_multiplier,
                q.backoff_max_seconds, q.backoff_jitter))
        END,
        finished_at = CASE
            WHEN NOT i.retryable OR job.attempts >= job.max_attempts THEN now()
        END,
        last_error = i.error,
        lease_token = NULL,
        lease_expires_at = NULL
    FROM input AS i, locked AS l, queues_queue AS q
    WHERE job.id = l.id
        AND i.id = l.id
        AND q.id = job.queue_id
        AND job.lease_token = i.lease_token
        AND job.state = 'processing'
    RETURNING job.id, job.state, job.run_at, job.batch_id, i.lease_token, i.error,
        i.traceback, job.organization_id, job.project_id, job.queue_id
),
busy AS (
    SELECT DISTINCT i.id
    FROM input AS i
    JOIN jobs_job AS job ON job.id = i.id AND job.lease_token = i.lease_token
    WHERE job.state = 'processing'
        AND (%(project_id)s::uuid IS NULL OR job.project_id = %(project_id)s::uuid)
        AND NOT EXISTS (SELECT 1 FROM locked AS l WHERE l.id = i.id)
),
closed AS (
    UPDATE jobs_jobexecution AS e
    SET status = %(execution_status)s, error = failed.error, traceback = failed.traceback,
        finished_at = now()
    FROM failed
    WHERE e.job_id = failed.id AND e.lease_token = failed.lease_token
),
tally AS (
    INSERT INTO jobs_jobthroughput AS t
        (organization_id, project_id, queue_id, minute, shard, succeeded, failed, dead)
    SELECT organization_id, project_id, queue_id, date_trunc('minute', now()),
        pg_backend_pid(), 0, count(*), count(*) FILTER (WHERE state = 'dead')
    FROM failed
    GROUP BY organization_id, project_id, queue_id
    ON CONFLICT (queue_id, minute, shard)
        DO UPDATE SET failed = t.failed + excluded.failed, dead = t.dead + excluded.dead
)
SELECT f.id, f.state, f.run_at, f.batch_id, f.state = 'dead' AND b.id IS NOT NULL
FROM failed AS f
LEFT JOIN jobs_batch AS b
    ON b.id = f.batch_id
    AND b.callback_enqueued_at IS NULL
    AND (b.on_complete IS NOT NULL OR b.on_success IS NOT NULL)
UNION ALL
SELECT id, 'busy', NULL, NULL, false FROM busy
