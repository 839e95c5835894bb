-- Cancel every waiting (blocked) descendant of jobs that ended dead or cancelled, with the
-- reason naming the ancestor. Walks the dependency graph with a recursive CTE; UNION (not
-- UNION ALL) stops on diamonds. Only blocked jobs change: a descendant that already ran or
-- is running keeps its state.
-- Index: jobdependency_unique (parent_id, child_id) drives each step of the walk.
WITH RECURSIVE roots AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(reasons)s::text[]) AS r(id, reason)
),
descendants(id, reason) AS (
    SELECT d.child_id, r.reason
    FROM jobs_jobdependency AS d JOIN roots AS r ON d.parent_id = r.id
    UNION
    SELECT d.child_id, x.reason
    FROM jobs_jobdependency AS d JOIN descendants AS x ON d.parent_id = x.id
)
UPDATE jobs_job AS job
SET state = 'cancelled', finished_at = now(), last_error = x.reason
FROM (SELECT DISTINCT ON (id) id, reason FROM descendants ORDER BY id, reason) AS x
WHERE job.id = x.id AND job.state = 'blocked'
RETURNING job.id, job.batch_id
