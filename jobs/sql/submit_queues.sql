-- The queues a submission names, with the defaults its jobs inherit, and the transaction's
-- now() (constant for the whole transaction) from which run_at and the initial state are
-- decided: one prepared statement on the submit path instead of an ORM query.
-- Index: queue_name_unique (project_id, name).
SELECT name, id, max_attempts, timeout_seconds, now()
FROM queues_queue
WHERE project_id = %(project_id)s AND name = ANY(%(names)s::text[])
