"""gunicorn settings for the web process: `gunicorn -c deploy/gunicorn.conf.py taskforge.wsgi`.

Production runs it behind a buffering reverse proxy (deploy/nginx.conf, docs/deploy.md).

The worker class is gthread's subclass taskforge/lib/gunicorn_worker.py: its event loop reads
each request whole before a thread takes it (slow clients cannot pin threads; a request not
complete within TASKFORGE_WEB_READ_TIMEOUT seconds gets 408), and the worker protocol has
threads of its own. Worker long-polls (GET /api/v1/workers/{id}/jobs?wait=≤30) hold one of
those while they wait: size TASKFORGE_WEB_WORKER_THREADS to (long-polling workers /
processes) + headroom for their results and heartbeats, and TASKFORGE_WEB_THREADS for client
requests. Each thread may hold a database connection, so processes * (both thread counts) must
stay under PostgreSQL's max_connections.
"""

import os
from typing import Any

bind = os.environ.get("TASKFORGE_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "taskforge.lib.gunicorn_worker.BufferingThreadWorker"
# Client requests; the worker protocol has TASKFORGE_WEB_WORKER_THREADS more (16 by default).
threads = int(os.environ.get("TASKFORGE_WEB_THREADS", "8"))
# Longer than the longest long-poll, so a reload lets in-flight polls finish.
graceful_timeout = 40
timeout = 60
keepalive = 75
accesslog = "-"
errorlog = "-"
# gunicorn >= 25.1 opens a control socket for `gunicornc` (reload, scale, shut down) by default
# at $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl: one path for every instance of
# the user, so a second instance takes it over and commands reach the wrong server. Off unless
# TASKFORGE_GUNICORN_CONTROL_SOCKET names a path for this instance.
control_socket = os.environ.get("TASKFORGE_GUNICORN_CONTROL_SOCKET", "").strip()
control_socket_disable = not control_socket


def when_ready(server: Any) -> None:
    # Said once per server, by the master, rather than by every process that loads the settings
    # (each gunicorn worker, and every manage.py command down to --help).
    if not os.environ.get("REDIS_URL", "").strip():
        server.log.info(
            "REDIS_URL is not set: rate limits are counted in PostgreSQL "
            "(the database cache, shared by every process)"
        )


def post_worker_init(worker: Any) -> None:
    # Each web process beacons that it is up (workers/webtier.py), so that the dispatcher
    # blames no worker for silence while the web tier is down or just back. At SIGTERM (a stop,
    # or a reload: the master sends it to the old processes) it ends its long-polls at once
    # (workers/notifications.py): otherwise the graceful stop waits for them, up to 30 s, and
    # the workers can report nothing meanwhile. Then gunicorn's own SIGTERM handling goes on.
    import signal

    from workers import notifications, webtier

    webtier.start_beacon()
    graceful = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        notifications.end_long_polls()
        webtier.stop_beacon_soon()
        if callable(graceful):
            graceful(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    # As gunicorn's worker does for its own handler: SIGTERM must not interrupt system calls.
    signal.siginterrupt(signal.SIGTERM, False)
    # Everything loaded so far (Django, the apps, their modules) lives as long as the process:
    # move it out of the garbage collector's generations, so each collection walks only what
    # requests allocate. About a tenth of a batch submit's CPU (bench/submit.py).
    import gc

    gc.freeze()
