"""The version stamp of API-key authentication (accounts/authentication.py).

Web processes keep the API keys they authenticated in memory. A row in accounts_auth_stamp
counts every change that could alter how a key authenticates, and triggers bump it in the same
transaction as the change, so the new stamp becomes visible exactly when the change does:

* an API key updated in anything but ``last_used_at`` (revoked, expiry or scopes changed,
  moved), deleted or truncated;
* an organization updated (its IP allowlist, its name…), deleted or truncated;
* a project updated, deleted or truncated (its keys go with it).

A web process re-reads the stamp at most once a second and forgets every cached key when it
changed. ``last_used_at`` is left out: it is written about once a minute per key and process,
and would make every cache forget everything that often.

The function upserts the one row, so a stamp table emptied by hand starts counting again
instead of never changing (which would keep stale keys in every cache).
"""

from django.db import migrations

CREATE = r"""
CREATE TABLE accounts_auth_stamp (
    id smallint PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO accounts_auth_stamp (id, version) VALUES (1, 0);

CREATE FUNCTION accounts_bump_auth_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO accounts_auth_stamp (id, version) VALUES (1, 1)
    ON CONFLICT (id) DO UPDATE SET version = accounts_auth_stamp.version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER accounts_apikey_auth_stamp_update AFTER UPDATE ON accounts_apikey
    FOR EACH ROW WHEN (
        (OLD.organization_id, OLD.project_id, OLD.prefix, OLD.key_hash, OLD.scopes,
         OLD.expires_at, OLD.revoked_at)
        IS DISTINCT FROM
        (NEW.organization_id, NEW.project_id, NEW.prefix, NEW.key_hash, NEW.scopes,
         NEW.expires_at, NEW.revoked_at)
    ) EXECUTE FUNCTION accounts_bump_auth_stamp();
CREATE TRIGGER accounts_apikey_auth_stamp_delete AFTER DELETE OR TRUNCATE ON accounts_apikey
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_bump_auth_stamp();

CREATE TRIGGER accounts_organization_auth_stamp_update AFTER UPDATE ON accounts_organization
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION accounts_bump_auth_stamp();
CREATE TRIGGER accounts_organization_auth_stamp_delete
    AFTER DELETE OR TRUNCATE ON accounts_organization
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_bump_auth_stamp();

CREATE TRIGGER accounts_project_auth_stamp_update AFTER UPDATE ON accounts_project
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION accounts_bump_auth_stamp();
CREATE TRIGGER accounts_project_auth_stamp_delete AFTER DELETE OR TRUNCATE ON accounts_project
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_bump_auth_stamp();
"""

DROP = r"""
DROP TRIGGER IF EXISTS accounts_project_auth_stamp_delete ON accounts_project;
DROP TRIGGER IF EXISTS accounts_project_auth_stamp_update ON accounts_project;
DROP TRIGGER IF EXISTS accounts_organization_auth_stamp_delete ON accounts_organization;
DROP TRIGGER IF EXISTS accounts_organization_auth_stamp_update ON accounts_organization;
DROP TRIGGER IF EXISTS accounts_apikey_auth_stamp_delete ON accounts_apikey;
DROP TRIGGER IF EXISTS accounts_apikey_auth_stamp_update ON accounts_apikey;
DROP FUNCTION IF EXISTS accounts_bump_auth_stamp();
DROP TABLE IF EXISTS accounts_auth_stamp;
"""


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_audit_target_id_255")]

    operations = [migrations.RunSQL(CREATE, DROP)]
