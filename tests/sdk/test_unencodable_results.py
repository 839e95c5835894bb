"""A result the SDK cannot send as JSON (a lone surrogate, which UTF-8 cannot encode) fails its
own job for good; the other results of the same request are reported as usual. It once made the
whole results request fail before sending: every job of the batch waited out its lease and
ran again, and the culprit died after five attempts as "lease expired"."""

import threading

import pytest
from taskforge_client import EncodingError, ValidationError

from jobs.models import Job
from tests.sdk.test_worker import wait_until_terminal


def test_an_unencodable_result_fails_its_job_and_the_rest_of_the_batch_succeeds(
    sdk_server, api, run_worker
):
    # One flush carries all four results: the handlers finish together and the reporter
    # waits half a second for more before sending.
    worker = sdk_server.worker(concurrency=4, flush_interval=0.5, flush_size=100)
    together = threading.Barrier(4, timeout=30)

    @worker.handler("answers")
    def answers(ctx, payload):
        together.wait()
        return {"text": "half a pair: \ud800"} if payload["bad"] else {"n": payload["n"]}

    specs = [
        {"queue": "default", "job_type": "answers", "payload": {"bad": n == 2, "n": n}}
        for n in range(4)
    ]
    _, jobs = api.submit_batch(specs)
    run_worker(worker)

    done = wait_until_terminal([job.id for job in jobs], timeout=20)

    bad = done[jobs[2].id]
    assert (bad.state, bad.attempts) == ("dead", 1), bad.last_error
    assert bad.last_error.startswith("the result is not JSON-serializable: ")
    assert "lone surrogate" in bad.last_error and "\\ud800" in bad.last_error
    for n in (0, 1, 3):
        good = done[jobs[n].id]
        assert (good.state, good.attempts, good.result) == ("succeeded", 1, {"n": n})


def test_the_client_refuses_a_body_it_cannot_encode_before_sending_it(api):
    with pytest.raises(EncodingError) as refused:
        api.submit("default", "t", {"text": "\udfff"})

    assert isinstance(refused.value, ValidationError)
    assert "lone surrogate" in refused.value.message and "\\udfff" in refused.value.message
    assert refused.value.status is None
    assert not Job.objects.all_tenants().exists()
