-- Fail many attempts in one statement: each job goes back to scheduled after the queue's
-- backoff (taskforge_retry_delay, jobs/migrations/0002) or, when out of attempts or not
-- retryable, to dead. Used for worker-reported failures and for expired leases alike.
-- Fencing: only rows processing under the same lease_token change; the caller reports a
-- conflict for ids that are not returned.
-- Tenancy: %(project_id)s scopes the rows; NULL only from the engine's lease expiry
-- (queries.fail_expired_leases_of_every_tenant), which no request path imports.
-- callback_owed: the job went dead and its batch has callbacks not yet enqueued.
-- Index: primary key (jobs, batches); jobs_jobexecution_job_id for the execution rows.
WITH input AS (
    SELECT *
    FROM unnest(%(ids)s::uuid[], %(lease_tokens)s::uuid[], %(errors)s::text[],
        %(retryable)s::boolean[])
        AS i(id, lease_token, error, retryable)
),
failed AS (
    UPDATE jobs_job AS job
    SET state = CASE
            WHEN NOT i.retryable OR job.attempts >= job.max_attempts THEN 'dead'
            ELSE 'scheduled'
        END,
        run_at = CASE
            WHEN NOT i.retryable OR job.attempts >= job.max_attempts THEN job.run_at
            ELSE now() + make_interval(secs => taskforge_retry_delay(
                job.attempts, q.backoff_base_seconds, q.backoff_multiplier,
                q.backoff_max_seconds, q.backoff_jitter))
        END,
        finished_at = CASE
            WHEN NOT i.retryable OR job.attempts >= job.max_attempts THEN now()
        END,
        last_error = i.error,
        lease_token = NULL,
        lease_expires_at = NULL
    FROM input AS i, queues_queue AS q
    WHERE job.id = i.id
        AND q.id = job.queue_id
        AND job.lease_token = i.lease_token
        AND job.state = 'processing'
        AND (%(project_id)s::uuid IS NULL OR job.project_id = %(project_id)s::uuid)
    RETURNING job.id, job.state, job.run_at, job.batch_id, i.lease_token, i.error
),
closed AS (
    UPDATE jobs_jobexecution AS e
    SET status = %(execution_status)s, error = failed.error, finished_at = now()
    FROM failed
    WHERE e.job_id = failed.id AND e.lease_token = failed.lease_token
)
SELECT f.id, f.state, f.run_at, f.batch_id, f.state = 'dead' AND b.id IS NOT NULL
FROM failed AS f
LEFT JOIN jobs_batch AS b
    ON b.id = f.batch_id
    AND b.callback_enqueued_at IS NULL
    AND (b.on_complete IS NOT NULL OR b.on_success IS NOT NULL)
