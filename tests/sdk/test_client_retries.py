"""The client's retry rules, against a scripted transport (no server, no database).

Transient failures are simulated here only; everything else in tests/sdk runs against the
real server, and tests/sdk/test_http_transport.py runs the real transport over real sockets.
"""

import json
from dataclasses import dataclass
from email.message import Message
from http.client import responses

import pytest
from taskforge_client import (
    RateLimited,
    RetryPolicy,
    ServerError,
    TaskForge,
    TransportError,
    ValidationError,
)
from taskforge_client._http import ConnectFailed, ReadTimeout, Response

JOB = {"id": "0190a000-0000-7000-8000-000000000001", "queue": "default", "job_type": "t",
       "state": "pending", "payload": {}, "priority": 5, "attempts": 0}  # fmt: skip


@dataclass
class Sent:
    method: str
    path: str
    content: bytes | None


class Script:
    """A transport that answers each request with the next scripted response."""

    def __init__(self, *responses):
        self.responses = list(responses)
        self.requests = []

    def request(self, method, path, *, content=None, headers=None, params=None, timeout=None):
        self.requests.append(Sent(method, path, content))
        answer = self.responses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self):
        pass


def respond(status, body=None, headers=None, text=""):
    message = Message()
    for name, value in (headers or {}).items():
        message[name] = value
    content = json.dumps(body).encode() if body is not None else text.encode()
    return Response(status, responses.get(status, ""), message, content)


def refused():
    return ConnectFailed("ConnectionRefusedError: [Errno 111] Connection refused")


def error(status, code, headers=None):
    body = {"error": {"code": code, "message": f"{code} happened", "details": {"x": 1}}}
    return respond(status, body, headers)


def client_for(script, attempts=4):
    sleeps = []
    policy = RetryPolicy(attempts=attempts, backoff_base=0.01, sleep=sleeps.append)
    client = TaskForge("http://tf.test/api/v1/", "tf_key", retry=policy, transport=script)
    return client, sleeps


def test_it_retries_a_429_after_the_retry_after_the_server_asked_for():
    script = Script(error(429, "rate_limited", {"Retry-After": "3"}), respond(200, JOB))
    client, sleeps = client_for(script)

    job = client.get_job(JOB["id"])

    assert job.id == JOB["id"]
    assert len(script.requests) == 2
    assert sleeps == [3.0]


def test_it_retries_a_429_even_for_a_post_without_idempotency_key():
    script = Script(error(429, "rate_limited", {"Retry-After": "1"}), respond(200, JOB))
    client, sleeps = client_for(script)

    client.cancel(JOB["id"])

    assert len(script.requests) == 2 and sleeps == [1.0]


def test_it_raises_rate_limited_with_retry_after_when_retries_run_out():
    script = Script(*[error(429, "rate_limited", {"Retry-After": "2"}) for _ in range(3)])
    client, sleeps = client_for(script, attempts=3)

    with pytest.raises(RateLimited) as caught:
        client.get_job(JOB["id"])

    assert caught.value.retry_after == 2.0
    assert caught.value.status == 429 and caught.value.code == "rate_limited"
    assert caught.value.details == {"x": 1}
    assert sleeps == [2.0, 2.0]


def test_it_does_not_wait_for_a_retry_after_longer_than_the_policy_allows():
    script = Script(error(429, "rate_limited", {"Retry-After": "3600"}))
    client, sleeps = client_for(script)

    with pytest.raises(RateLimited) as caught:
        client.get_job(JOB["id"])

    assert caught.value.retry_after == 3600 and sleeps == []


def test_it_retries_reads_on_502_503_504_with_growing_backoff():
    script = Script(
        respond(502, text="<html>bad gateway</html>"),
        error(503, "unavailable"),
        respond(504),
        respond(200, JOB),
    )
    client, sleeps = client_for(script)

    assert client.get_job(JOB["id"]).state == "pending"
    assert len(sleeps) == 3
    # Equal jitter: each wait is at least half its exponential step (0.01, 0.02, 0.04).
    assert [s >= step / 2 for s, step in zip(sleeps, (0.01, 0.02, 0.04), strict=True)] == [True] * 3


def test_it_retries_reads_on_connection_errors():
    script = Script(refused(), ReadTimeout("slow"), respond(200, JOB))
    client, _ = client_for(script)

    assert client.get_job(JOB["id"]).id == JOB["id"]
    assert len(script.requests) == 3


def test_it_does_not_repeat_a_post_that_may_have_created_something():
    script = Script(error(503, "unavailable"))
    client, sleeps = client_for(script)

    with pytest.raises(ServerError) as caught:
        client.request("POST", "/jobs/x/retry")

    assert caught.value.status == 503 and len(script.requests) == 1 and sleeps == []


def test_it_does_not_repeat_a_post_whose_response_timed_out():
    script = Script(ReadTimeout("slow"))
    client, _ = client_for(script)

    with pytest.raises(TransportError) as caught:
        client.request("POST", "/jobs/x/logs", json={})

    assert caught.value.status is None and len(script.requests) == 1


def test_it_repeats_a_post_that_never_left():
    script = Script(refused(), respond(200, JOB))
    client, _ = client_for(script)

    client.cancel(JOB["id"])

    assert len(script.requests) == 2


def test_submit_repeats_with_the_same_generated_idempotency_key():
    script = Script(ReadTimeout("slow"), error(502, "bad_gateway"), respond(201, JOB))
    client, _ = client_for(script)

    client.submit("default", "t", {"a": 1})

    bodies = [json.loads(request.content) for request in script.requests]
    keys = {body["idempotency_key"] for body in bodies}
    assert len(bodies) == 3 and len(keys) == 1 and None not in keys
    assert bodies[0] == {"queue": "default", "job_type": "t", "payload": {"a": 1},
                         "idempotency_key": bodies[0]["idempotency_key"]}  # fmt: skip


def test_each_submit_gets_its_own_idempotency_key_unless_one_is_given():
    script = Script(*[respond(201, JOB) for _ in range(3)])
    client, _ = client_for(script)

    client.submit("default", "t")
    client.submit("default", "t")
    client.submit("default", "t", idempotency_key="mine")

    keys = [json.loads(request.content)["idempotency_key"] for request in script.requests]
    assert keys[0] != keys[1] and keys[2] == "mine"


def test_it_gives_up_after_the_policy_attempts_and_says_why():
    script = Script(*[refused() for _ in range(4)])
    client, sleeps = client_for(script)

    with pytest.raises(TransportError, match="Connection refused"):
        client.get_job(JOB["id"])

    assert len(script.requests) == 4 and len(sleeps) == 3


def test_it_never_retries_client_errors():
    script = Script(error(400, "validation_error"))
    client, sleeps = client_for(script)

    with pytest.raises(ValidationError) as caught:
        client.get_job(JOB["id"])

    assert caught.value.message == "validation_error happened" and sleeps == []


def test_run_at_must_be_timezone_aware():
    from datetime import datetime

    client, _ = client_for(Script())
    with pytest.raises(ValueError, match="timezone-aware"):
        client.submit("default", "t", run_at=datetime(2030, 1, 1))


def test_it_waits_for_the_retry_after_of_a_503_before_retrying_a_read():
    script = Script(error(503, "unavailable", {"Retry-After": "5"}), respond(200, JOB))
    client, sleeps = client_for(script)

    assert client.get_job(JOB["id"]).id == JOB["id"]
    assert sleeps == [5.0]


def test_a_submit_answered_503_is_retried_with_the_same_idempotency_key():
    script = Script(
        error(503, "unavailable", {"Retry-After": "2"}), refused(),
        respond(201, JOB),
    )  # fmt: skip
    client, sleeps = client_for(script)

    client.submit("default", "t")

    keys = {json.loads(request.content)["idempotency_key"] for request in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1 and sleeps[0] == 2.0


def test_no_retry_starts_whose_wait_would_end_past_max_elapsed():
    script = Script(error(503, "unavailable", {"Retry-After": "20"}))
    policy = RetryPolicy(attempts=5, max_elapsed=10, sleep=lambda seconds: None)
    client = TaskForge("http://tf.test", "tf_key", retry=policy, transport=script)

    with pytest.raises(ServerError) as caught:
        client.get_job(JOB["id"])

    assert caught.value.status == 503 and len(script.requests) == 1


def test_a_503_asking_for_more_than_max_retry_after_is_raised_at_once():
    script = Script(error(503, "unavailable", {"Retry-After": "3600"}))
    client, sleeps = client_for(script)

    with pytest.raises(ServerError):
        client.get_job(JOB["id"])

    assert sleeps == [] and len(script.requests) == 1
