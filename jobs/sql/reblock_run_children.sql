-- Dead or cancelled jobs are being retried. Their blocked children whose edge says
-- on_parent_failure = 'run' had counted them as finished (cancel_descendants.sql, or the
-- submit when the parent had already failed); the parents run again, so the children wait
-- for them again: pending_parents goes back up by one per edge. Children that already left
-- 'blocked' (released, running, finished) are not touched, nor are jobs retried in the same
-- call (the caller recomputes their counts).
-- Index: jobdependency_unique (parent_id, child_id); jobs_job by primary key.
-- Concurrency: the caller holds the parents' row locks. A concurrent completion of another
-- parent of the child waits for the child's row lock and re-reads pending_parents (or this
-- statement waits and re-checks state = 'blocked'), so no count is lost.
UPDATE jobs_job AS child
SET pending_parents = child.pending_parents + edges.n
FROM (
    SELECT d.child_id, count(*) AS n
    FROM jobs_jobdependency AS d
    WHERE d.parent_id = ANY(%(ids)s::uuid[])
        AND d.on_parent_failure = 'run'
        AND NOT d.child_id = ANY(%(ids)s::uuid[])
    GROUP BY d.child_id
) AS edges
WHERE child.id = edges.child_id AND child.state = 'blocked'
