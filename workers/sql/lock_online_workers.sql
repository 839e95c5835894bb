-- Lock the online workers this dispatcher will fill in this tick, with their capacity.
-- SKIP LOCKED: dispatchers serve disjoint sets of workers. FOR NO KEY UPDATE: rows that only
-- reference a worker (queue assignments) need not wait. The caller reads running counts in
-- its next statement, whose snapshot includes every claim committed before the lock was
-- granted; read in this statement they could miss one, and two dispatchers would then fill
-- the same free slots.
-- Index: worker_status_heartbeat (status, last_heartbeat).
SELECT id, capacity
FROM workers_worker
WHERE status = 'online'
ORDER BY id
FOR NO KEY UPDATE SKIP LOCKED
