-- Transaction-level advisory lock, so one dispatcher at a time runs a leader-only step that
-- fits in one transaction; released at commit or rollback, whatever happens in between.
SELECT pg_try_advisory_xact_lock(%(key)s)
