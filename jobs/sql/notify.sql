-- Wake listeners: the dispatchers (channel taskforge_jobs) or specific workers (one channel
-- each). Sent inside the caller's transaction, so PostgreSQL delivers it at commit, never for
-- work that rolled back. One statement per batch, never one per job.
SELECT pg_notify(channel, '') FROM unnest(%(channels)s::text[]) AS c(channel)
