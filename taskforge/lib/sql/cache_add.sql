-- cache.add(): store a value under a key unless the key holds one that has not expired;
-- return the key when this call stored it, no row when a live value was already there.
-- Table: taskforge_cache (primary key cache_key), created by taskforge/migrations/0001_cache_table.py.
-- Concurrency: INSERT ... ON CONFLICT settles each key atomically: of several processes adding
-- one key at once exactly one stores it, and an expired row is replaced under its row lock.
-- (Django's own add reads, then inserts, and loses the race with an IntegrityError that
-- PostgreSQL logs.) Times come from Python, as Django's DatabaseCache compares them on read.
INSERT INTO taskforge_cache (cache_key, value, expires)
VALUES (%(key)s, %(value)s, %(expires)s)
ON CONFLICT (cache_key) DO UPDATE
SET value = excluded.value, expires = excluded.expires
WHERE taskforge_cache.expires < %(now)s
RETURNING cache_key
