-- How many jobs of project %(project_id)s (only queue %(queue_id)s's when given) are in each
-- state, each count stopping at %(cap)s + 1, so the cost follows the cap and never the
-- backlog (the caller shows a count past the cap as an estimate or "cap+").
-- The jobs are reached through the project's queues, one index range per queue and state,
-- reading no column but the index's: job_claim_pending (queue_id, ...) WHERE state =
-- 'pending', and job_queue_state (queue_id, state) WHERE state <> 'pending' for the others
-- (index-only scans where the visibility map allows). Each state is a literal in its own
-- arm, so the planner can match those partial predicates; a state taken from a parameter
-- could prove neither and would scan the table.
-- Tenancy: the queues are %(project_id)s's (queues_queue), and a job's project is its queue's.
-- Concurrency: a plain read; each arm sees the statement's snapshot.
WITH queues AS MATERIALIZED (
    SELECT q.id
    FROM queues_queue AS q
    WHERE q.project_id = %(project_id)s::uuid
        AND (%(queue_id)s::uuid IS NULL OR q.id = %(queue_id)s::uuid)
)
SELECT 'pending', count(*) FROM (
    SELECT 1 FROM queues AS q JOIN jobs_job AS j ON j.queue_id = q.id
    WHERE j.state = 'pending' LIMIT %(cap)s + 1) AS capped
UNION ALL
SELECT 'scheduled', count(*) FROM (
    SELECT 1 FROM queues AS q JOIN jobs_job AS j ON j.queue_id = q.id
    WHERE j.state = 'scheduled' LIMIT %(cap)s + 1) AS capped
UNION ALL
SELECT 'blocked', count(*) FROM (
    SELECT 1 FROM queues AS q JOIN jobs_job AS j ON j.queue_id = q.id
    WHERE j.state = 'blocked' LIMIT %(cap)s + 1) AS capped
UNION ALL
SELECT 'processing', count(*) FROM (
    SELECT 1 FROM queues AS q JOIN jobs_job AS j ON j.queue_id = q.id
    WHERE j.state = 'processing' LIMIT %(cap)s + 1) AS capped
UNION ALL
SELECT 'succeeded', count(*) FROM (
    SELECT 1 FROM queues AS q JOIN jobs_job AS j ON j.queue_id = q.id
    WHERE j.state = 'succeeded' LIMIT %(cap)s + 1) AS capped
UNION ALL
SELECT 'dead', count(*) FROM (
    SELECT 1 FROM queues AS q JOIN jobs_job AS j ON j.queue_id = q.id
    WHERE j.state = 'dead' LIMIT %(cap)s + 1) AS capped
UNION ALL
SELECT 'cancelled', count(*) FROM (
    SELECT 1 FROM queues AS q JOIN jobs_job AS j ON j.queue_id = q.id
    WHERE j.state = 'cancelled' LIMIT %(cap)s + 1) AS capped
