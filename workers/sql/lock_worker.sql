-- The worker a fetch claims for, locked until the claim commits: (capacity, status, job types).
-- Two fetches of one worker (a client that polls twice at once) then take turns, and the
-- second one's busy count (worker_assignments.sql, the next statement, whose snapshot includes
-- every claim committed before this lock was granted) sees the first one's jobs: read in this
-- statement it could miss them, and both would fill the same free slots.
-- FOR NO KEY UPDATE: rows that only reference the worker (queue assignments) need not wait.
-- Scoped by project: a fetch only ever names a worker of its own project.
-- Index: the primary key.
-- The claim commits without waiting for its WAL to reach disk (synchronous_commit off for this
-- transaction only, set here to spare a round trip): a claim lost in a crash leaves its jobs
-- pending as they were, to be claimed again, which at-least-once delivery allows (a worker
-- that ran one gets 409 for its result); submits and results keep waiting for the disk.
SELECT capacity, status, job_types, set_config('synchronous_commit', 'off', true)
FROM workers_worker
WHERE id = %(worker_id)s AND project_id = %(project_id)s
FOR NO KEY UPDATE
