-- Settle the waiting descendants of jobs that ended dead or cancelled (or were deleted before
-- they finished), by the on_parent_failure of each edge:
-- * 'cancel': the blocked child is cancelled with the reason naming the root, and the walk
--   goes on through it (a recursive CTE over cancel edges into blocked jobs only; UNION, not
--   UNION ALL, stops on diamonds);
-- * 'run': the failed parent counts as finished. Each root and each job cancelled here
--   lowers its blocked run children's pending_parents by one per edge, and a child reaching 0
--   is released exactly as complete_jobs.sql releases. The walk does not go through such a
--   child: it did not fail.
-- A child cancelled here (one cancel edge from a failed job is enough) is not also released,
-- and the roots themselves change in neither way. The caller NOTIFYs the dispatchers for
-- released rows; callback_owed says the cancelled job's batch may now owe its callbacks.
-- Index: jobdependency_unique (parent_id, child_id) drives each step of the walk and the run
-- edges; jobs_job and jobs_batch by primary key.
-- Concurrency: both UPDATEs re-check state = 'blocked' on the row they lock. A concurrent
-- completion of another parent of a run child waits for the child's row lock and re-reads
-- pending_parents (and so does this statement after it), so the count reaches zero once and
-- the child is released once.
WITH RECURSIVE roots AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(reasons)s::text[]) AS r(id, reason)
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
    WHERE job.id = x.id
        AND job.state = 'blocked'
        AND job.id NOT IN (SELECT id FROM roots)
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
            AND d.child_id NOT IN (SELECT id FROM roots)
        GROUP BY d.child_id
    ) AS edges
    WHERE child.id = edges.child_id AND child.state = 'blocked'
    RETURNING child.id, child.state
)
SELECT 'cancelled' AS kind, c.id, c.batch_id, b.id IS NOT NULL AS callback_owed
FROM cancelled AS c
LEFT JOIN jobs_batch AS b
    ON b.id = c.batch_id
    AND b.callback_enqueued_at IS NULL
    AND (b.on_complete IS NOT NULL OR b.on_success IS NOT NULL)
UNION ALL
SELECT 'released', id, NULL, false FROM released WHERE state = 'pending'
