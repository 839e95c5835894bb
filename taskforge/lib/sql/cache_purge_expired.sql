-- Delete the cache rows that have expired (mostly the rate-limit windows that ended).
-- Index: taskforge_cache_expires (expires).
-- Concurrency: a plain DELETE of dead rows; two processes purging at once wait on each other's
-- row locks and skip what the other deleted. A live row is never touched.
DELETE FROM taskforge_cache WHERE expires < %(now)s
