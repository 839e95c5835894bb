-- Delete the next batch of taken jobs (take_waiting_jobs.sql or take_queue_jobs.sql): the
-- %(limit)s ids of taken_jobs after %(after)s, in id order, with their executions, log lines
-- and dependency edges (both directions), in one statement. One row: the batch's last id
-- (NULL once the set is exhausted; the caller's next %(after)s), how many jobs were deleted,
-- and the batches of those jobs that still owe callbacks (a purge fires them).
-- Index: taken_jobs' primary key (the keyset, so the batches read the set once in all);
-- jobs_job by primary key; executionlog_job (job_id, id), jobexecution_claim_unique
-- (job_id, lease_token), and jobdependency_unique (parent_id, child_id) with the child_id
-- index for the edges.
-- Concurrency: the jobs are locked since they were taken, and no execution, log line or edge
-- can point anew at a locked job (its foreign-key check takes KEY SHARE on it), so this
-- statement's snapshot has every row that refers to one. The foreign keys are checked at
-- commit, when every referencing row is gone too.
WITH batch AS MATERIALIZED (
    SELECT id FROM taken_jobs WHERE id > %(after)s ORDER BY id LIMIT %(limit)s
),
logs AS (
    DELETE FROM jobs_executionlog WHERE job_id IN (SELECT id FROM batch)
),
executions AS (
    DELETE FROM jobs_jobexecution WHERE job_id IN (SELECT id FROM batch)
),
edges AS (
    DELETE FROM jobs_jobdependency
    WHERE parent_id IN (SELECT id FROM batch) OR child_id IN (SELECT id FROM batch)
),
deleted AS (
    DELETE FROM jobs_job WHERE id IN (SELECT id FROM batch) RETURNING batch_id
)
SELECT
    (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
    (SELECT count(*) FROM deleted) AS deleted,
    ARRAY(
        SELECT b.id
        FROM jobs_batch AS b
        WHERE b.id IN (SELECT batch_id FROM deleted)
            AND b.callback_enqueued_at IS NULL
            AND (b.on_complete IS NOT NULL OR b.on_success IS NOT NULL)
    ) AS owed_batches
