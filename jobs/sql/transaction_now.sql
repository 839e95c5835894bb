-- The current transaction's timestamp: now() is fixed for a whole transaction, so Python may
-- compute with this value exactly as SQL in the same transaction would.
SELECT now()
