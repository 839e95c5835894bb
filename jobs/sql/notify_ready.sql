-- Say that jobs of these queues became pending: one NOTIFY on taskforge_jobs per queue, with
-- the queue's id (32 hex digits) as payload. Every web process LISTENs on that channel and
-- wakes only the long-polls of workers serving those queues (workers/notifications.py); an
-- empty payload (notify.sql on the same channel) wakes them all. Sent inside the caller's
-- transaction, so PostgreSQL delivers it at commit, never for work that rolled back, and
-- once per queue however many jobs the transaction made pending.
SELECT pg_notify('taskforge_jobs', replace(q::text, '-', ''))
FROM unnest(%(queue_ids)s::uuid[]) AS u(q)
