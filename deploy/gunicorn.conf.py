"""gunicorn settings for the web process: `gunicorn -c deploy/gunicorn.conf.py taskforge.wsgi`.

Worker long-polls (GET /api/v1/workers/{id}/jobs?wait=≤30) hold a thread while they wait, so
the web process runs threaded workers with room for them beside ordinary requests. Size
TASKFORGE_WEB_THREADS to (long-polling workers / processes) + headroom; each thread may hold a
database connection, so processes * threads must stay under PostgreSQL's max_connections.
"""

import os

bind = os.environ.get("TASKFORGE_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("TASKFORGE_WEB_THREADS", "16"))
# Longer than the longest long-poll, so a reload lets in-flight polls finish.
graceful_timeout = 40
timeout = 60
keepalive = 75
accesslog = "-"
errorlog = "-"
