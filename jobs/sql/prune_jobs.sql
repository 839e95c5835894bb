-- Delete up to %(limit)s finished jobs (succeeded, dead, cancelled) older than their queue's
-- retention (or %(days)s days when given), with their executions, log lines and dependency
-- edges, in one statement. Oldest first, so each batch starts where the index starts.
-- Index: job_state_run_at_prio (state, run_at, priority) WHERE state <> 'pending'; a job's
-- run_at is never later than its finish, except a delayed job cancelled early, which is
-- simply pruned once its run_at is old enough too.
-- Concurrency: SKIP LOCKED leaves rows someone is changing (a retry, say) for a later run;
-- the foreign keys are checked at commit, when every referencing row is gone too.
WITH doomed AS MATERIALIZED (
    SELECT j.id
    FROM jobs_job AS j
    JOIN queues_queue AS q ON q.id = j.queue_id
    WHERE j.state IN ('succeeded', 'dead', 'cancelled')
        AND j.run_at < now() - make_interval(days => coalesce(%(days)s, q.retention_days))
        AND j.finished_at < now() - make_interval(days => coalesce(%(days)s, q.retention_days))
    ORDER BY j.run_at
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
),
logs AS (
    DELETE FROM jobs_executionlog WHERE job_id IN (SELECT id FROM doomed)
),
executions AS (
    DELETE FROM jobs_jobexecution WHERE job_id IN (SELECT id FROM doomed)
),
edges AS (
    DELETE FROM jobs_jobdependency
    WHERE parent_id IN (SELECT id FROM doomed) OR child_id IN (SELECT id FROM doomed)
)
DELETE FROM jobs_job WHERE id IN (SELECT id FROM doomed)
