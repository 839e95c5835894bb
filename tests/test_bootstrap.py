import io
import json

import pytest
from django.core.management import CommandError, call_command

from accounts.models import API_KEY_SCOPES, ApiKey, AuditLog, Organization, Project, Role, User
from billing.models import Subscription, Tier
from queues.models import Queue
from taskforge.lib.errors import Conflict, ValidationFailed
from taskforge.onboarding import create_api_key, create_organization

MODELS = (Organization, Subscription, User, Project, Queue, ApiKey, AuditLog)


def bootstrap(*args):
    out = io.StringIO()
    call_command("bootstrap", *args, stdout=out)
    return out.getvalue()


def row_counts():
    return {model.__name__: model.objects.count() for model in MODELS}


def raw_key_from(output):
    return next(word for word in output.split() if word.startswith("tf_"))


def test_it_creates_the_whole_tenant(db):
    bootstrap("--org", "Acme Corp", "--email", "Ops@Acme.example")

    assert row_counts() == {
        "Organization": 1,
        "Subscription": 1,
        "User": 1,
        "Project": 1,
        "Queue": 1,
        "ApiKey": 1,
        "AuditLog": 2,
    }
    org = Organization.objects.get()
    assert (org.name, org.slug) == ("Acme Corp", "acme-corp")
    assert Subscription.objects.get().tier == Tier.STARTER
    user = User.objects.get()
    assert (user.email, user.role, user.organization) == ("ops@acme.example", Role.ADMIN, org)
    queue = Queue.objects.get()
    assert (queue.name, queue.project.name, queue.organization) == ("default", "default", org)
    assert sorted(ApiKey.objects.get().scopes) == sorted(API_KEY_SCOPES)
    assert set(AuditLog.objects.values_list("action", flat=True)) == {
        "organization.created",
        "api_key.created",
    }
    assert AuditLog.objects.get(action="organization.created").actor_user == user


def test_the_printed_api_key_authenticates_and_is_not_stored(db):
    output = bootstrap("--org", "Acme", "--email", "ops@acme.example")

    raw = raw_key_from(output)
    key = ApiKey.objects.get(prefix=raw[:12])
    assert key.matches(raw)
    assert raw not in key.key_hash
    assert "will not be shown again" in output


def test_the_generated_password_is_printed_and_works(db):
    output = bootstrap("--org", "Acme", "--email", "ops@acme.example")

    password = output.split("password:")[1].split()[0]
    assert User.objects.get().check_password(password)


def test_the_given_password_works_and_is_not_printed(db):
    output = bootstrap(
        "--org", "Acme", "--email", "ops@acme.example", "--password", "a-long-fine-secret"
    )

    assert User.objects.get().check_password("a-long-fine-secret")
    assert "a-long-fine-secret" not in output


def test_running_twice_changes_nothing_and_says_so(db):
    bootstrap("--org", "Acme", "--email", "ops@acme.example", "--password", "a-long-fine-secret")
    before = row_counts()

    output = bootstrap("--org", "Acme", "--email", "OPS@acme.example", "--password", "other-pw-9")

    assert row_counts() == before
    assert "nothing changed" in output
    assert "tf_" not in output
    assert User.objects.get().check_password("a-long-fine-secret")


def test_json_mode_prints_one_object_with_the_secrets_of_this_run(db):
    data = json.loads(bootstrap("--org", "Acme", "--email", "ops@acme.example", "--json"))

    org = Organization.objects.get()
    assert set(data) == {
        "created",
        "organization",
        "organization_id",
        "project_id",
        "email",
        "staff",
        "password",
        "api_key",
    }
    assert data["created"] is True
    assert data["staff"] is False
    assert data["organization"] == "Acme"
    assert data["organization_id"] == str(org.id)
    assert data["project_id"] == str(Project.objects.get().id)
    assert data["email"] == "ops@acme.example"
    assert User.objects.get().check_password(data["password"])
    assert ApiKey.objects.get(prefix=data["api_key"][:12]).matches(data["api_key"])


def test_json_mode_leaves_out_a_password_it_did_not_generate(db):
    data = json.loads(
        bootstrap(
            "--org",
            "Acme",
            "--email",
            "ops@acme.example",
            "--password",
            "a-long-secret-1",
            "--json",
        )
    )

    assert "password" not in data
    assert "api_key" in data


def test_json_mode_on_a_second_run_reports_nothing_created_and_no_secrets(db):
    bootstrap("--org", "Acme", "--email", "ops@acme.example")

    data = json.loads(bootstrap("--org", "Acme", "--email", "ops@acme.example", "--json"))

    assert data == {
        "created": False,
        "organization": "Acme",
        "organization_id": str(Organization.objects.get().id),
        "project_id": str(Project.objects.get().id),
        "email": "ops@acme.example",
        "staff": False,
    }


def test_an_email_of_another_organization_is_a_command_error(db):
    bootstrap("--org", "Acme", "--email", "ops@acme.example")
    before = row_counts()

    with pytest.raises(CommandError, match="already belongs to organization 'Acme'"):
        bootstrap("--org", "Globex", "--email", "ops@acme.example")

    assert row_counts() == before


def test_a_weak_password_is_a_command_error(db):
    with pytest.raises(CommandError, match="password is too weak"):
        bootstrap("--org", "Acme", "--email", "ops@acme.example", "--password", "123")

    assert Organization.objects.count() == 0


def test_create_organization_refuses_a_taken_email(db):
    create_organization(name="Acme", email="ops@acme.example", password=None)

    with pytest.raises(Conflict, match="already exists"):
        create_organization(name="Globex", email="OPS@acme.example", password=None)

    assert Organization.objects.count() == 1


def test_create_organization_without_password_leaves_it_unusable(db):
    result = create_organization(name="Acme", email="ops@acme.example", password=None)

    assert not result.user.has_usable_password()


def test_a_slug_collision_gets_a_suffix(db):
    first = create_organization(name="Acme Corp", email="a@acme.example", password=None)
    second = create_organization(name="Acme  corp!", email="b@acme.example", password=None)
    third = create_organization(name="ACME corp", email="c@acme.example", password=None)

    slugs = [r.organization.slug for r in (first, second, third)]
    assert slugs == ["acme-corp", "acme-corp-2", "acme-corp-3"]


def test_create_api_key_rejects_unknown_scopes(project):
    with pytest.raises(ValidationFailed, match="unknown scopes: jobs:delete, root") as exc:
        create_api_key(project, name="ci", scopes=["jobs:read", "jobs:delete", "root"])

    assert exc.value.details["unknown_scopes"] == ["jobs:delete", "root"]
    assert ApiKey.objects.count() == 0


def test_create_api_key_stores_only_the_prefix_and_hash(project, admin):
    key, raw = create_api_key(project, name="ci", scopes=["jobs:read"], created_by=admin)

    key.refresh_from_db()
    assert (key.prefix, key.scopes, key.created_by) == (raw[:12], ["jobs:read"], admin)
    assert key.matches(raw)
    assert raw not in key.key_hash
    assert AuditLog.objects.for_org(project.organization).get().action == "api_key.created"
