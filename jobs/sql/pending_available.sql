-- How many pending jobs each queue has, counting at most %(cap)s per queue.
-- The dispatcher only needs to know whether a queue can fill the free slots it has, so the
-- count stops at the cap: its cost follows the free slots, not the backlog (job_claim_pending).
SELECT q.id, (
    SELECT count(*)
    FROM (
        SELECT 1 FROM jobs_job
        WHERE state = 'pending' AND queue_id = q.id
        LIMIT %(cap)s
    ) AS capped
) AS available
FROM unnest(%(queue_ids)s::uuid[]) AS q(id)
