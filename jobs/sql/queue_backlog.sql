-- For each queue of project %(project_id)s: its pending jobs (counting stops at
-- %(cap)s + 1), its running jobs (stops at %(running_cap)s + 1), and the age in seconds of the
-- oldest pending job by its run_at (the time it became due), at %(now)s or now(); NULL
-- without pending jobs.
-- The oldest pending job is found without sorting the backlog: job_claim_pending is ordered
-- (queue_id, priority DESC, run_at, id), so for each of the ten priorities the first entry
-- of (queue, priority) is that priority's oldest; the minimum of those ten is the queue's
-- (a loose index scan: at most ten index probes per queue, whatever the backlog).
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
        SELECT min(oldest.run_at)
        FROM generate_series(0, 9) AS p(priority)
        CROSS JOIN LATERAL (
            SELECT j.run_at FROM jobs_job AS j
            WHERE j.queue_id = q.id AND j.state = 'pending' AND j.priority = p.priority
            ORDER BY j.run_at
            LIMIT 1
        ) AS oldest
    ))::float8 AS oldest_pending_seconds
FROM queues_queue AS q
WHERE q.project_id = %(project_id)s::uuid
