-- Take the waiting (pending and scheduled) jobs of queue %(queue_id)s for a purge: lock them
-- and record their ids in taken_jobs (taken_jobs_table.sql); return how many.
-- Index: job_claim_pending (queue_id, ...) WHERE state = 'pending' and job_queue_state
-- (queue_id, state) WHERE state <> 'pending', one per arm of the OR (a BitmapOr): neither
-- partial index alone covers both states.
-- Concurrency: the set is the rows this one statement locks, fixed for the rest of the
-- purge: jobs submitted later, and the children the purge itself releases to pending, are
-- not in it. FOR UPDATE re-checks the state on the newest version of a row changed since
-- the snapshot, so a job claimed meanwhile (now processing) is left out; SKIP LOCKED leaves
-- out the rows someone holds right now (a claim in progress, a cancel, a submission locking
-- its parents FOR SHARE), exactly as a single-statement purge always did. Until commit no
-- one can change a taken job, nor add an execution, log line or edge pointing at one (their
-- foreign-key checks take KEY SHARE on it), so the later statements see every such row.
WITH locked AS (
    SELECT j.id
    FROM jobs_job AS j
    WHERE j.queue_id = %(queue_id)s AND (j.state = 'pending' OR j.state = 'scheduled')
    FOR UPDATE OF j SKIP LOCKED
)
INSERT INTO taken_jobs (id)
SELECT id FROM locked
