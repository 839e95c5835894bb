-- Release the session advisory lock that try_lock.sql took, once the leader-only step is done.
SELECT pg_advisory_unlock(%(key)s)
