-- Session-level advisory lock, so one dispatcher at a time runs a leader-only step.
-- Not tied to a transaction: VACUUM cannot run inside one.
SELECT pg_try_advisory_lock(%(key)s)
