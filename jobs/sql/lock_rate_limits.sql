-- Lock the rate-limited queues among %(queue_ids)s and read each one's token bucket, refilled
-- up to now: (queue, rate, tokens, as of). The bucket earns rate_limit_per_second tokens a
-- second and holds at most greatest(rate, 1), the burst; a null bucket is full. Each job
-- claimed spends one token: the claim (workers/sql/claim_for_worker.sql) writes
-- tokens - claimed back, as of the same time.
--
-- Index: the primary key (a few queues per tick, and only those with a limit and pending jobs).
-- Concurrency: FOR NO KEY UPDATE, taken in id order (no deadlock between claimers), holds
-- each bucket until the claim that spends it commits, so two claims never spend the same
-- tokens: the second one waits here, then reads the first one's bucket (READ COMMITTED
-- returns the newest version of a row it had to wait for). NO KEY, so submits, whose
-- foreign-key checks take KEY SHARE on the queue row, never wait for it. The clock is
-- statement_timestamp(), the database's, clamped never to run behind the stored refill time:
-- a statement that started before another claim's may still get the lock after it.
SELECT id, rate_limit_per_second,
    least(
        greatest(rate_limit_per_second, 1),
        coalesce(
            rate_tokens + rate_limit_per_second * greatest(
                0, extract(epoch FROM statement_timestamp() - rate_refilled_at)::float8
            ),
            greatest(rate_limit_per_second, 1)
        )
    ) AS tokens,
    greatest(rate_refilled_at, statement_timestamp()) AS as_of
FROM queues_queue
WHERE id = ANY(%(queue_ids)s::uuid[]) AND rate_limit_per_second IS NOT NULL
ORDER BY id
FOR NO KEY UPDATE
