-- Take a transaction-level advisory lock on each organization among %(organization_ids)s,
-- waiting for any other transaction that holds one: the claim holds them from before it
-- counts an organization's running jobs (running_per_organization.sql) until its claim
-- commits, so claims starting jobs of one organization take turns and never both fill
-- the same room under its plan's max_concurrency.
--
-- Key: (class 'TFPL', hashtext(organization id)); the two-integer form keeps it apart from the
-- one-bigint keys of the leader-only steps (try_lock.sql). Two organizations that share a key
-- only take turns needlessly.
-- Concurrency: the outer query locks the keys in the ascending order the subquery returns
-- them, so two claims locking overlapping sets never wait for each other in a cycle.
-- The count must be the caller's next statement, not a part of this one: a statement's
-- snapshot is taken when it starts, before the lock is granted, and would miss the claims of
-- the transaction it waited for.
-- Index: none; no table is read.
SELECT pg_advisory_xact_lock(1413894220, k.key)
FROM (
    SELECT DISTINCT hashtext(o.id::text) AS key
    FROM unnest(%(organization_ids)s::uuid[]) AS o(id)
    ORDER BY key
) AS k
