-- cache.incr(), second half: write back the value of a key locked by cache_lock_value.sql.
-- Table: taskforge_cache, by its primary key.
-- Concurrency: runs in the transaction that holds the row lock; the expiry is left as it was.
UPDATE taskforge_cache SET value = %(value)s WHERE cache_key = %(key)s
