-- How many jobs each queue of project %(project_id)s holds in each unfinished state and
-- dead, each count stopping at %(cap)s + 1, so the cost follows the cap and never the backlog
-- (the caller shows a count past the cap as an estimate or "cap+").
-- Each state is a literal in its own subquery, so the planner can match the partial indexes:
-- job_claim_pending (queue_id, ...) WHERE state = 'pending' and job_queue_state
-- (queue_id, state) WHERE state <> 'pending'; a state taken from a parameter or a join could
-- not prove either predicate and would scan the table.
-- Tenancy: the queues are %(project_id)s's (queues_queue), and a job's project is its queue's.
-- Concurrency: a plain read.
SELECT q.id,
    (SELECT count(*) FROM (
        SELECT 1 FROM jobs_job AS j WHERE j.queue_id = q.id AND j.state = 'pending'
        LIMIT %(cap)s + 1) AS capped) AS pending,
    (SELECT count(*) FROM (
        SELECT 1 FROM jobs_job AS j WHERE j.queue_id = q.id AND j.state = 'scheduled'
        LIMIT %(cap)s + 1) AS capped) AS scheduled,
    (SELECT count(*) FROM (
        SELECT 1 FROM jobs_job AS j WHERE j.queue_id = q.id AND j.state = 'blocked'
        LIMIT %(cap)s + 1) AS capped) AS blocked,
    (SELECT count(*) FROM (
        SELECT 1 FROM jobs_job AS j WHERE j.queue_id = q.id AND j.state = 'processing'
        LIMIT %(cap)s + 1) AS capped) AS processing,
    (SELECT count(*) FROM (
        SELECT 1 FROM jobs_job AS j WHERE j.queue_id = q.id AND j.state = 'dead'
        LIMIT %(cap)s + 1) AS capped) AS dead
FROM queues_queue AS q
WHERE q.project_id = %(project_id)s::uuid
