-- The planner's estimate of how many jobs of project %(project_id)s are in state %(state)s:
-- the "Plan Rows" of the plan, from the table's statistics (ANALYZE, which the dispatcher's
-- maintenance runs on jobs_job). For a count past its cap (state_counts.sql), where an
-- exact count would read every matching row. The parameters are bound before planning, so
-- the estimate is for these very values, prepared statement or not.
-- Index: none is read; nothing is executed.
-- Tenancy: %(project_id)s scopes the rows estimated.
EXPLAIN (FORMAT JSON)
SELECT 1 FROM jobs_job WHERE project_id = %(project_id)s::uuid AND state = %(state)s
