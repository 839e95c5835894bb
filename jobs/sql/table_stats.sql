-- Churn of the hot tables since their last ANALYZE / VACUUM, for the dispatcher's
-- maintenance step. On a server whose autovacuum is off or lagging, nothing else would
-- refresh statistics or reclaim dead rows, and claims slow down as dead tuples pile up.
SELECT relname, n_live_tup, n_dead_tup, n_mod_since_analyze
FROM pg_stat_user_tables
WHERE relname = ANY(%(tables)s::text[])
