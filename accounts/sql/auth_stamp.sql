-- The version stamp of API-key authentication (accounts/migrations/0003_auth_stamp.py): triggers
-- bump it in the transaction of any change to a key, organization or project that could alter
-- how a key authenticates. One row, read by its primary key; no lock (a read of a committed
-- value, compared with the value the process cached its keys under).
SELECT version FROM accounts_auth_stamp WHERE id = 1
