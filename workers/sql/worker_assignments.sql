-- For the locked worker (lock_worker.sql): each active assignment to an unpaused queue, with the
-- queue's priority, cap, whether it has a rate limit, its organization with the organization's
-- plan (tier and limit overrides; none without a subscription), how many of the queue's
-- pending jobs of the queue (counting at most %(cap)s, whatever their type), and the worker's
-- busy slots (repeated on each row).
-- Busy: jobs processing under the worker, and jobs an operator cancelled while they ran that
-- the worker has not reported gone yet (their handlers still run; job_worker_held_cancelled),
-- as long as its heartbeats keep naming them: a hold not pushed back for a lease ends.
-- The plan comes with the assignments so that a claim reads its organization's plan limits in
-- this one statement. The pending count stops at the cap, so its cost follows the free slots,
-- not the backlog.
-- Index: assignment worker_id foreign key index; job_claim_pending (queue_id, priority DESC,
-- sub_priority DESC, run_at, id) WHERE state = 'pending' for the counts (a job type filter
-- reads the index rows in claim order and skips other types); job_worker_processing /
-- job_worker_held_cancelled (worker_id) for busy; the unique organization_id of billing_subscription.
SELECT a.queue_id, a.weight, q.priority, q.max_concurrency,
    q.rate_limit_per_second IS NOT NULL AS rate_limited, q.organization_id, s.tier,
    s.limits::text AS limits,
    (SELECT count(*) FROM (
        SELECT 1 FROM jobs_job AS j
        WHERE j.state = 'pending' AND j.queue_id = a.queue_id
        -- The claim order, so the plan is job_claim_pending whatever the statistics say:
        -- without it, a table whose rows are nearly all pending (one tenant's backlog of a
        -- million) is counted by a sequential scan, 150 ms for every fetch of every tenant.
        -- No job type filter here, for the same reason: with one tenant's million jobs of
        -- one type in the statistics, another tenant's type looks rare, and the planner
        -- scans the whole table for it (140 ms a fetch). Jobs of other types are counted;
        -- the claim statement takes only the worker's types, and finds fewer.
        ORDER BY j.priority DESC, j.sub_priority DESC, j.run_at, j.id
        LIMIT %(cap)s
    ) AS capped) AS available,
    (SELECT count(*) FROM jobs_job AS j
     WHERE j.state = 'processing' AND j.worker_id = a.worker_id)
    + (SELECT count(*) FROM jobs_job AS j
       WHERE j.state = 'cancelled' AND j.lease_expires_at IS NOT NULL
           AND j.worker_id = a.worker_id AND j.lease_expires_at > now()) AS busy
FROM workers_queueworkerassignment AS a
JOIN queues_queue AS q ON q.id = a.queue_id
LEFT JOIN billing_subscription AS s ON s.organization_id = q.organization_id
WHERE a.worker_id = %(worker_id)s AND a.is_active AND NOT q.paused
