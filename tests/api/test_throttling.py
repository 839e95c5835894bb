import pytest
from rest_framework.test import APIClient

from billing.models import Subscription, Tier


def client_for(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.mark.django_db
def test_it_answers_429_with_retry_after_once_the_plan_limit_is_used(org, queue, make_api_key):
    Subscription.objects.for_org(org).update(limits={"requests_per_minute": 3})
    _, raw = make_api_key(scopes=["jobs:read"])
    client = client_for(raw)
    assert [client.get("/api/v1/jobs").status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get("/api/v1/jobs")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 61


@pytest.mark.django_db
def test_the_limit_is_shared_by_every_key_of_the_organization(org, queue, make_api_key):
    Subscription.objects.for_org(org).update(limits={"requests_per_minute": 2})
    first, second = (client_for(make_api_key(scopes=["jobs:read"])[1]) for _ in range(2))
    assert first.get("/api/v1/jobs").status_code == 200
    assert second.get("/api/v1/jobs").status_code == 200
    assert second.get("/api/v1/jobs").status_code == 429


@pytest.mark.django_db
def test_one_organization_using_its_limit_does_not_throttle_another(
    org, queue, other_org, other_project, make_api_key
):
    Subscription.objects.for_org(org).update(limits={"requests_per_minute": 1})
    ours = client_for(make_api_key(scopes=["jobs:read"])[1])
    theirs = client_for(make_api_key(scopes=["jobs:read"], project=other_project)[1])
    assert ours.get("/api/v1/jobs").status_code == 200
    assert ours.get("/api/v1/jobs").status_code == 429
    assert theirs.get("/api/v1/jobs").status_code == 200


@pytest.mark.django_db
def test_enterprise_plans_are_not_rate_limited(org, queue, make_api_key):
    Subscription.objects.for_org(org).update(tier=Tier.ENTERPRISE)
    client = client_for(make_api_key(scopes=["jobs:read"])[1])
    assert all(client.get("/api/v1/jobs").status_code == 200 for _ in range(20))
