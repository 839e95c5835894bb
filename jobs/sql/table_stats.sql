-- Churn of the hot tables since their last ANALYZE / VACUUM, for the dispatcher's
-- maintenance step. On a server whose autovacuum is off or lagging, nothing else would
-- refresh statistics or reclaim dead rows, and claims slow down as dead tuples pile up.
-- n_ins_since_vacuum: rows inserted since the last VACUUM. Only VACUUM marks pages
-- all-visible, and without that every index-only scan (the dashboard's capped counts) reads
-- the table too: 300-800 ms instead of 5-20 ms at a million jobs.
SELECT relname, n_live_tup, n_dead_tup, n_mod_since_analyze, n_ins_since_vacuum
FROM pg_stat_user_tables
WHERE relname = ANY(%(tables)s::text[])
