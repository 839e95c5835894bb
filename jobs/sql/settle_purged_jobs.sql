-- Settle the waiting descendants of the next batch of purged jobs, before
-- delete_taken_jobs.sql deletes that batch: the %(limit)s ids of taken_jobs
-- (take_waiting_jobs.sql) after %(after)s, in id order. The same walk as
-- cancel_descendants.sql, by each edge's on_parent_failure, with the reason "cancelled:
-- parent job <id> was purged": 'cancel' children (blocked, in any queue) are cancelled and
-- the walk goes on through them; 'run' children count the purged parent as finished and are
-- released when none is left. One row: how many jobs were released to pending (the caller
-- NOTIFYs the dispatchers) and the batches of cancelled jobs that still owe callbacks.
-- Index: taken_jobs' primary key (the batch); jobdependency_unique (parent_id, child_id) for
-- each step of the walk and the run edges; jobs_job and jobs_batch by primary key.
-- Concurrency: the roots are locked since take_waiting_jobs.sql and are not blocked, so the
-- walk never changes them. Both UPDATEs re-check state = 'blocked' on the row they lock, and a
-- completion racing for a run child's row re-reads pending_parents after the wait, as in
-- cancel_descendants.sql. A child released here is not in taken_jobs: the purge never
-- deletes it.
WITH RECURSIVE roots AS MATERIALIZED (
    SELECT id, 'cancelled: parent job ' || id || ' was purged' AS reason
    FROM taken_jobs
    WHERE id > %(after)s
    ORDER BY id
    LIMIT %(limit)s
),
doomed(id, reason) AS (
    SELECT d.child_id, r.reason
    FROM roots AS r
    JOIN jobs_jobdependency AS d ON d.parent_id = r.id AND d.on_parent_failure = 'cancel'
    JOIN jobs_job AS j ON j.id = d.child_id AND j.state = 'blocked'
    UNION
    SELECT d.child_id, x.reason
    FROM doomed AS x
    JOIN jobs_jobdependency AS d ON d.parent_id = x.id AND d.on_parent_failure = 'cancel'
    JOIN jobs_job AS j ON j.id = d.child_id AND j.state = 'blocked'
),
cancelled AS (
    UPDATE jobs_job AS job
    SET state = 'cancelled', finished_at = now(), last_error = x.reason
    FROM (SELECT DISTINCT ON (id) id, reason FROM doomed ORDER BY id, reason) AS x
    WHERE job.id = x.id AND job.state = 'blocked'
    RETURNING job.id, job.batch_id
),
finished AS (
    SELECT id FROM roots
    UNION
    SELECT id FROM cancelled
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
        FROM finished AS f
        JOIN jobs_jobdependency AS d ON d.parent_id = f.id AND d.on_parent_failure = 'run'
        WHERE d.child_id NOT IN (SELECT id FROM cancelled)
        GROUP BY d.child_id
    ) AS edges
    WHERE child.id = edges.child_id AND child.state = 'blocked'
    RETURNING child.state
)
SELECT
    (SELECT count(*) FROM released WHERE state = 'pending') AS released,
    ARRAY(
        SELECT b.id
        FROM jobs_batch AS b
        WHERE b.id IN (SELECT batch_id FROM cancelled)
            AND b.callback_enqueued_at IS NULL
            AND (b.on_complete IS NOT NULL OR b.on_success IS NOT NULL)
    ) AS owed_batches
