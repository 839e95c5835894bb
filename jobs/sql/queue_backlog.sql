-- For each queue of project %(project_id)s: its pending jobs (counting stops at
-- %(cap)s + 1), its running jobs (stops at %(running_cap)s + 1), and the age in seconds of the
-- oldest pending job by its run_at (the time it became due), at %(now)s or now(); NULL
-- without pending jobs.
-- The oldest pending job is found without sorting the backlog: job_claim_pending is ordered
-- (queue_id, priority DESC, sub_priority DESC, run_at, id), so the first entry of each
-- (priority, sub_priority) present is that pair's oldest; the minimum of those is the
-- queue's. A recursive loose index scan walks from one pair to the next: one index probe per
-- pair present (usually ten at most: sub_priority is 0 unless a client sets it), whatever
-- the backlog.
-- Index: job_claim_pending for pending, job_queue_state (queue_id, state) for processing;
-- each state a literal, so the planner can match the partial indexes.
-- Tenancy: the queues are %(project_id)s's (queues_queue), and a job's project is its queue's.
-- Concurrency: a plain read.
SELECT q.id,
    (SELECT count(*) FROM (
        SELECT 1 FROM jobs_job AS j WHERE j.queue_id = q.id AND j.state = 'pending'
        LIMIT %(cap)s + 1) AS capped) AS pending,
    (SELECT count(*) FROM (
        SELECT 1 FROM jobs_job AS j WHERE j.queue_id = q.id AND j.state = 'processing'
        LIMIT %(running_cap)s + 1) AS capped) AS running,
    extract(epoch FROM coalesce(%(now)s::timestamptz, now()) - (
        WITH RECURSIVE heads AS (
            (SELECT j.priority, j.sub_priority, j.run_at FROM jobs_job AS j
             WHERE j.queue_id = q.id AND j.state = 'pending'
             ORDER BY j.priority DESC, j.sub_priority DESC, j.run_at, j.id
             LIMIT 1)
            UNION ALL
            SELECT following.* FROM heads AS h
            CROSS JOIN LATERAL (
                SELECT j.priority, j.sub_priority, j.run_at FROM jobs_job AS j
                WHERE j.queue_id = q.id AND j.state = 'pending'
                    AND (j.priority, j.sub_priority) < (h.priority, h.sub_priority)
                ORDER BY j.priority DESC, j.sub_priority DESC, j.run_at, j.id
                LIMIT 1
            ) AS following
        )
        SELECT min(run_at) FROM heads
    ))::float8 AS oldest_pending_seconds
FROM queues_queue AS q
WHERE q.project_id = %(project_id)s::uuid
