-- cache.incr(), first half: the live value of a key, locked until the caller's transaction
-- writes it back (cache_store_value.sql); no row when the key is missing or expired.
-- Table: taskforge_cache, by its primary key.
-- Concurrency: FOR UPDATE makes increments of one key from any number of processes queue on
-- the row, so none is lost (Django's own incr is a get and a set, and loses them).
SELECT value FROM taskforge_cache
WHERE cache_key = %(key)s AND expires >= %(now)s
FOR UPDATE
