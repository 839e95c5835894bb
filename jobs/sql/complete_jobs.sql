-- Complete many jobs in one statement: mark them succeeded, close their executions,
-- release children whose every parent has now succeeded, and count the jobs into the
-- dashboard's per-minute rollup (jobs_jobthroughput).
-- Fencing: a row is completed only while it is processing under the same lease_token; a
-- stale or unknown token matches nothing and the caller reports a conflict for that id.
-- Tenancy: %(project_id)s (the caller's project, never NULL) scopes every row.
-- Row locks: the jobs are locked first, FOR NO KEY UPDATE SKIP LOCKED, so one row that
-- another transaction holds (an operator's cancel, a long-running admin query, a stuck
-- session) never makes the whole batch wait: the rows that can be completed are, and a row
-- skipped that is still processing under its token (by this statement's snapshot) comes back
-- as 'busy', for the caller to report as "retry later" rather than as stale. A busy result
-- retried later may then turn out stale (the holder was expiring or cancelling the job).
-- Concurrency: two parents of one child completing at once both decrement pending_parents;
-- the second UPDATE waits for the first's row lock and then re-reads the row, so the count
-- reaches zero exactly once and the child is released exactly once (the children are not
-- skipped when locked: that wait is short, and skipping would strand the child).
-- callback_owed: the job's batch has callbacks not yet enqueued, so the caller checks whether
-- this completion finished it (services._fire_batch_callbacks); false costs the caller nothing.
-- Rollup (tally): +1 succeeded per job completed, one upsert per queue into the row of
-- (queue, this minute, shard = pg_backend_pid()). The row belongs to this database session
-- alone, so concurrent completions of one queue never wait for each other on a counter row,
-- and no two transactions lock rollup rows in opposite orders (no deadlock). The row commits
-- or rolls back with the jobs it counts. The dispatcher's maintenance folds the shards of
-- past minutes (fold_throughput.sql) and never waits for this row (SKIP LOCKED); a
-- transaction that began in a minute already folded simply adds a new row for it.
-- Index: primary key for jobs and batches; jobs_jobexecution_job_id; jobdependency_unique
-- (parent_id, …); jobthroughput_bucket_unique (queue_id, minute, shard) for the upsert.
WITH input AS (
    SELECT *
    FROM unnest(%(ids)s::uuid[], %(lease_tokens)s::uuid[], %(results)s::text[])
        AS i(id, lease_token, result)
),
locked AS MATERIALIZED (
    SELECT job.id
    FROM jobs_job AS job
    JOIN input AS i ON i.id = job.id AND i.lease_token = job.lease_token
    WHERE job.state = 'processing' AND job.project_id = %(project_id)s::uuid
    FOR NO KEY UPDATE OF job SKIP LOCKED
),
done AS (
    UPDATE jobs_job AS job
    SET state = 'succeeded',
        result = i.result::jsonb,
        finished_at = now(),
        lease_token = NULL,
        lease_expires_at = NULL
    FROM input AS i, locked AS l
    WHERE job.id = l.id
        AND i.id = l.id
        AND job.lease_token = i.lease_token
        AND job.state = 'processing'
    RETURNING job.id, i.lease_token, job.batch_id, job.organization_id, job.project_id,
        job.queue_id
),
busy AS (
    SELECT DISTINCT i.id
    FROM input AS i
    JOIN jobs_job AS job ON job.id = i.id AND job.lease_token = i.lease_token
    WHERE job.state = 'processing'
        AND job.project_id = %(project_id)s::uuid
        AND NOT EXISTS (SELECT 1 FROM locked AS l WHERE l.id = i.id)
),
closed AS (
    UPDATE jobs_jobexecution AS e
    SET status = 'succeeded', finished_at = now()
    FROM done
    WHERE e.job_id = done.id AND e.lease_token = done.lease_token
),
released AS (
    UPDATE jobs_job AS child
    SET pending_parents = child.pending_parents - edges.n,
        state = CASE
            WHEN child.pending_parents - edges.n > 0 THEN child.state
            WHEN child.run_at > now() THEN 'scheduled'
            ELSE 'pending'
        END
    FROM (
        SELECT d.child_id, count(*) AS n
        FROM jobs_jobdependency AS d
        JOIN done ON d.parent_id = done.id
        GROUP BY d.child_id
    ) AS edges
    WHERE child.id = edges.child_id AND child.state = 'blocked'
    RETURNING child.id, child.state
),
tally AS (
    INSERT INTO jobs_jobthroughput AS t
        (organization_id, project_id, queue_id, minute, shard, succeeded, failed, dead)
    SELECT organization_id, project_id, queue_id, date_trunc('minute', now()),
        pg_backend_pid(), count(*), 0, 0
    FROM done
    GROUP BY organization_id, project_id, queue_id
    ON CONFLICT (queue_id, minute, shard)
        DO UPDATE SET succeeded = t.succeeded + excluded.succeeded
)
SELECT 'done' AS kind, done.id, done.batch_id, b.id IS NOT NULL AS callback_owed
FROM done
LEFT JOIN jobs_batch AS b
    ON b.id = done.batch_id
    AND b.callback_enqueued_at IS NULL
    AND (b.on_complete IS NOT NULL OR b.on_success IS NOT NULL)
UNION ALL
SELECT 'released', id, NULL, false FROM released WHERE state = 'pending'
UNION ALL
SELECT 'busy', id, NULL, false FROM busy
