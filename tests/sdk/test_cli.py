"""``taskforge-worker``: its arguments in-process, and signals on a real subprocess."""

import signal
import subprocess

import pytest
from taskforge_client.cli import main
from taskforge_client.worker import parse_queues

from jobs.models import Job, JobExecution
from tests.sdk.conftest import child_env, wait_for, worker_command
from workers.models import Worker as WorkerRow


def test_help_explains_the_handler_convention_and_the_environment(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    out = capsys.readouterr().out
    assert exited.value.code == 0
    for words in (
        "taskforge_client.registry",
        "@handler(",
        "TASKFORGE_URL",
        "TASKFORGE_API_KEY",
        "default:3,emails:1",
        "SIGTERM",
        "taskforge_client.demo",
    ):
        assert words in out


def test_it_refuses_to_start_without_url_or_key(capsys, monkeypatch):
    monkeypatch.delenv("TASKFORGE_URL", raising=False)
    monkeypatch.delenv("TASKFORGE_API_KEY", raising=False)

    with pytest.raises(SystemExit) as exited:
        main(["taskforge_client.demo"])

    assert exited.value.code == 2
    assert "--url is required (or set TASKFORGE_URL)" in capsys.readouterr().err


def test_it_refuses_a_module_it_cannot_import(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--url", "http://x", "--api-key", "k", "no_such_module.handlers"])

    assert exited.value.code == 2
    assert "cannot import no_such_module.handlers" in capsys.readouterr().err


def test_queue_specs_parse_into_weights():
    assert parse_queues("default:3, emails:1,reports") == {"default": 3, "emails": 1, "reports": 1}
    assert parse_queues(["a", "b"]) == {"a": 1, "b": 1}
    for bad in ("", "default:x", ":3", "default:0"):
        with pytest.raises(ValueError):
            parse_queues(bad)


def start_worker(sdk_server, tmp_path, *args):
    with (tmp_path / "worker.log").open("w") as log:
        return subprocess.Popen(
            [*worker_command(), "--poll-wait", "1", "--name", "cli-worker", *args],
            env=child_env(sdk_server), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def handlers_started(tmp_path):
    """How many demo.sleep handlers the worker started (they log "sleeping …")."""
    return (tmp_path / "worker.log").read_text().count("sleeping ")


@pytest.mark.slow
def test_sigterm_drains_the_worker_which_finishes_what_it_started(
    sdk_server, api, dispatcher, tmp_path
):
    _, jobs = api.submit_batch(
        [{"queue": "default", "job_type": "demo.sleep", "payload": {"seconds": 1}}] * 12
    )
    worker = start_worker(sdk_server, tmp_path, "--concurrency", "4", "taskforge_client.demo")
    try:
        wait_for(lambda: handlers_started(tmp_path) == 4, message="4 handlers running")
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
    finally:
        worker.kill()
        worker.wait()
    output = (tmp_path / "worker.log").read_text()
    print(output)

    assert code == 0
    assert "received SIGTERM: draining" in output
    assert "draining: finishing 4 running job(s)" in output
    started = {str(e.job_id) for e in JobExecution.objects.all_tenants()}
    assert len(started) >= 4
    for job in Job.objects.all_tenants().filter(pk__in=[j.id for j in jobs]):
        if str(job.pk) in started:
            assert job.state == "succeeded" and job.result == {"slept": 1.0}
            assert JobExecution.objects.all_tenants().filter(job=job).count() == 1
        else:
            assert job.state == "pending" and job.attempts == 0
    assert not WorkerRow.objects.all_tenants().exists()


@pytest.mark.slow
def test_a_second_signal_exits_at_once(sdk_server, api, dispatcher, tmp_path):
    job = api.submit("default", "demo.sleep", {"seconds": 60})
    worker = start_worker(sdk_server, tmp_path, "taskforge_client.demo")
    try:
        wait_for(lambda: handlers_started(tmp_path) == 1, message="the handler to start")
        worker.send_signal(signal.SIGTERM)
        wait_for(
            lambda: "received SIGTERM" in (tmp_path / "worker.log").read_text(),
            message="the first signal to be handled",
        )
        worker.send_signal(signal.SIGINT)
        code = worker.wait(10)
    finally:
        worker.kill()
        worker.wait()

    assert code == 1
    assert "second SIGINT: exiting now" in (tmp_path / "worker.log").read_text()
    # Still leased to the worker, which left without a word: the lease expiry retries it.
    assert api.get_job(job.id).state == "processing"
