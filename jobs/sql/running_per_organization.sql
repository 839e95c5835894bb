-- How many jobs of each organization are processing, across all its projects and queues,
-- counting at most its cap (parallel arrays %(organization_ids)s, %(caps)s): the claim
-- only needs the room left under the organization's plan, so a count never reads past it.
--
-- Index: queues_queue's organization_id foreign key index for the organization's queues, then
-- job_queue_state (queue_id, state) WHERE state <> 'pending' for each queue's processing rows:
-- the statement reads the organization's own processing rows and no other tenant's. (A filter
-- on jobs_job.organization_id has no index to use: it would scan every tenant's processing
-- jobs.) The correlated subquery keeps that nested-loop shape whatever the statistics.
-- Concurrency: none of its own; the caller holds lock_organizations.sql's locks, taken in an
-- earlier statement, so this snapshot includes every claim committed before they were granted.
SELECT o.id, (
    SELECT count(*)
    FROM (
        SELECT 1
        FROM queues_queue AS q
        JOIN jobs_job AS j ON j.queue_id = q.id AND j.state = 'processing'
        WHERE q.organization_id = o.id
        LIMIT o.cap
    ) AS capped
) AS running
FROM unnest(%(organization_ids)s::uuid[], %(caps)s::int[]) AS o(id, cap)
