-- Lock the parents a new job names by id, and read their states.
-- FOR SHARE conflicts with the UPDATE that completes or fails a parent, so a parent cannot
-- finish between this read and the commit that adds the dependency edge (it would not see
-- the edge and the child would stay blocked forever). Concurrent submissions of children of
-- one parent share the lock and do not wait for each other.
SELECT id, state
FROM jobs_job
WHERE project_id = %(project_id)s AND id = ANY(%(ids)s::uuid[])
FOR SHARE
