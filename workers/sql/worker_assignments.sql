-- For the locked workers: each active assignment to an unpaused queue, with the queue's
-- priority, cap and whether it has a rate limit, and the worker's running job count (repeated
-- on each of its rows).
-- Index: assignment_unique (queue_id, worker_id) and the worker_id foreign key index;
-- job_worker_processing (worker_id) WHERE state = 'processing' for the counts.
SELECT a.worker_id, a.queue_id, a.weight, q.priority, q.max_concurrency,
    q.rate_limit_per_second IS NOT NULL AS rate_limited,
    (SELECT count(*) FROM jobs_job AS j
     WHERE j.state = 'processing' AND j.worker_id = a.worker_id) AS running
FROM workers_queueworkerassignment AS a
JOIN queues_queue AS q ON q.id = a.queue_id
WHERE a.worker_id = ANY(%(worker_ids)s::uuid[]) AND a.is_active AND NOT q.paused
