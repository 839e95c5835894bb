-- A worker's heartbeat, in one statement (one round trip, atomic without a transaction
-- block): the worker is alive, these are the jobs it runs (%(ids)s).
-- * The worker row (its project's: tenant-scoped): last_heartbeat = now(); online again if
--   the dispatcher marked it offline, draining stays draining. No row: no such worker, and
--   nothing else changes (every other part requires the row).
-- * Named jobs processing under it: the lease is pushed back, which also acknowledges a
--   delivery (claim_for_worker.sql gave it only the acknowledgement timeout).
-- * Named jobs an operator cancelled while they ran here ("held": state 'cancelled',
--   worker_id kept, lease_expires_at set by the cancel): the hold is pushed back, so the slot
--   stays counted busy while the handler still runs, and the answer lists every named
--   cancelled job of this worker so that it can stop them.
-- * Held cancelled jobs it no longer names: released (lease_expires_at NULL), the worker
--   does not run them any more; their queues are NOTIFYed (notify_ready.sql's payload) so that
--   a long-poll waiting for a free slot of this worker re-checks.
-- Index: the primary key for the named ids (at most 10,000); job_worker_held_cancelled
-- (worker_id) WHERE state = 'cancelled' AND lease_expires_at IS NOT NULL for the unnamed.
-- Row locks: the worker row is updated (a fetch claiming for this worker holds it briefly).
-- Job rows are locked SKIP LOCKED: a row another transaction holds does not hold up the
-- heartbeat (and with it every other lease of the worker); lease expiry skips locked rows as
-- well, so the next heartbeat after the lock is gone catches up on it. The named and
-- the unnamed sets are disjoint, so no row is changed twice in the statement.
WITH worker AS (
    UPDATE workers_worker
    SET last_heartbeat = now(),
        status = CASE WHEN status = 'draining' THEN 'draining' ELSE 'online' END
    WHERE id = %(worker_id)s AND project_id = %(project_id)s
    RETURNING id, status
),
named AS MATERIALIZED (
    SELECT id
    FROM jobs_job
    WHERE id = ANY(%(ids)s::uuid[]) AND worker_id = %(worker_id)s
        AND project_id = %(project_id)s AND EXISTS (SELECT FROM worker)
        AND (state = 'processing' OR (state = 'cancelled' AND lease_expires_at IS NOT NULL))
    FOR NO KEY UPDATE SKIP LOCKED
),
extended AS (
    UPDATE jobs_job AS job
    SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
    FROM named
    WHERE job.id = named.id AND job.worker_id = %(worker_id)s
        AND (job.state = 'processing'
            OR (job.state = 'cancelled' AND job.lease_expires_at IS NOT NULL))
    RETURNING job.id
),
cancelled AS (
    -- Read, not locked: the answer tells the worker to stop these, held or already released.
    SELECT id
    FROM jobs_job
    WHERE id = ANY(%(ids)s::uuid[]) AND worker_id = %(worker_id)s
        AND project_id = %(project_id)s AND state = 'cancelled' AND EXISTS (SELECT FROM worker)
),
unnamed AS MATERIALIZED (
    SELECT id
    FROM jobs_job
    WHERE worker_id = %(worker_id)s AND state = 'cancelled' AND lease_expires_at IS NOT NULL
        AND id <> ALL(%(ids)s::uuid[]) AND EXISTS (SELECT FROM worker)
    FOR NO KEY UPDATE SKIP LOCKED
),
released AS (
    UPDATE jobs_job AS job
    SET lease_expires_at = NULL
    FROM unnamed
    WHERE job.id = unnamed.id AND job.state = 'cancelled' AND job.worker_id = %(worker_id)s
    RETURNING job.id, job.queue_id
)
SELECT worker.status,
    ARRAY(SELECT id FROM cancelled ORDER BY id) AS cancelled,
    (SELECT count(*) FROM extended) AS extended,
    (SELECT count(*) FROM released) AS released,
    (SELECT count(pg_notify('taskforge_jobs', replace(q.queue_id::text, '-', '')))
     FROM (SELECT DISTINCT queue_id FROM released) AS q) AS notified
FROM worker
