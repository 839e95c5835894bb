-- Delete the dashboard rollup's hour rows (shard 1) older than 8 days: the longest chart
-- shows 7 days, and a day more leaves room for a dispatcher that was down for a while.
-- Time is %(now)s (tests) or now().
-- Index: jobthroughput_fold (shard, minute), a range.
-- Concurrency: only the fold (fold_throughput.sql, under the same advisory lock) writes
-- hour rows, so nothing waits on these.
DELETE FROM jobs_jobthroughput
WHERE shard = 1
    AND minute < coalesce(%(now)s::timestamptz, now()) - interval '8 days'
