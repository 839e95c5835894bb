-- Take every job of queue %(queue_id)s for the queue's deletion: lock them and record their
-- ids in taken_jobs (taken_jobs_table.sql); return how many there are in each state.
-- Index: job_claim_pending (queue_id, ...) WHERE state = 'pending' and job_queue_state
-- (queue_id, state) WHERE state <> 'pending', one per arm of the always-true OR (a
-- BitmapOr): without it no index has the queue's rows and the whole table is scanned.
-- Concurrency: the caller holds the queue row FOR UPDATE, which conflicts with the KEY SHARE
-- lock every job insert takes on its queue, so no job joins the queue before commit. FOR
-- UPDATE without SKIP LOCKED waits for the transactions changing a job (a claim, a
-- completion) and re-checks the OR, true in every state, on the newest version: every job
-- of the queue is taken, in the state it is in once nobody else can change it. From here on
-- no execution, log line or edge can point anew at a taken job (their foreign-key checks
-- take KEY SHARE on it), so the later statements see every row that refers to one.
WITH locked AS MATERIALIZED (
    SELECT j.id, j.state
    FROM jobs_job AS j
    WHERE j.queue_id = %(queue_id)s AND (j.state = 'pending' OR j.state <> 'pending')
    FOR UPDATE OF j
),
taken AS (
    INSERT INTO taken_jobs (id) SELECT id FROM locked
)
SELECT state, count(*) FROM locked GROUP BY state
