-- Create this transaction's set of taken jobs: the ids that take_waiting_jobs.sql or
-- take_queue_jobs.sql locked, which purge_taken_jobs.sql and delete_taken_jobs.sql then work
-- through in batches. A temporary table, so the ids stay in the database (a million-job purge
-- never sends them to Python), dropped at commit or rollback.
-- Index: its primary key, the keyset the batches walk in id order: each batch starts where
-- the previous one stopped, so the whole set is read once whatever its size.
-- Concurrency: temporary tables are private to the session; ON COMMIT DROP scopes it to one
-- transaction (the callers' durable ones), so nothing survives on a pooled connection.
CREATE TEMPORARY TABLE taken_jobs (id uuid PRIMARY KEY) ON COMMIT DROP
