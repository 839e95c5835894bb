-- The planner's estimate of how many jobs of queue %(queue_id)s are in state %(state)s, as
-- estimate_jobs.sql does for a project; for a per-queue count past its cap
-- (state_counts.sql for one queue, queue_depths.sql, queue_backlog.sql).
-- The project is left out of the filter on purpose: without statistics on their
-- dependence, the planner takes project and queue for independent columns and multiplies
-- their selectivities, guessing a tenth of a tenth. The caller only asks for a queue its
-- capped count found in the project.
-- Index: none is read; nothing is executed.
-- Tenancy: the caller's queue, already scoped to its project by the count before.
EXPLAIN (FORMAT JSON)
SELECT 1 FROM jobs_job WHERE queue_id = %(queue_id)s::uuid AND state = %(state)s
