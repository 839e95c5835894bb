-- For the locked workers: each active assignment to an unpaused queue, with the queue's
-- priority, cap, whether it has a rate limit and its organization with the organization's plan
-- (tier and limit overrides; none without a subscription), and the worker's running job count
-- (repeated on each of its rows). The plan comes with the assignments so that a tick reads
-- every organization's plan limits in this one statement, not in one query per organization.
-- Index: assignment_unique (queue_id, worker_id) and the worker_id foreign key index;
-- job_worker_processing (worker_id) WHERE state = 'processing' for the counts; the unique
-- organization_id of billing_subscription (one subscription per organization).
SELECT a.worker_id, a.queue_id, a.weight, q.priority, q.max_concurrency,
    q.rate_limit_per_second IS NOT NULL AS rate_limited, q.organization_id, s.tier,
    s.limits::text AS limits,
    (SELECT count(*) FROM jobs_job AS j
     WHERE j.state = 'processing' AND j.worker_id = a.worker_id) AS running
FROM workers_queueworkerassignment AS a
JOIN queues_queue AS q ON q.id = a.queue_id
LEFT JOIN billing_subscription AS s ON s.organization_id = q.organization_id
WHERE a.worker_id = ANY(%(worker_ids)s::uuid[]) AND a.is_active AND NOT q.paused
