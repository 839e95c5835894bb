"""Job services: every write to jobs goes through one of these, each a durable transaction.

By concern:

* ``submit``: one job, a batch (all or nothing), the engine's own producers;
* ``results``: what workers report (complete, fail, logs), lease expiry, and the attempts a
  re-registered worker's old process took with it;
* ``actions``: an operator's cancel and retry of one job;
* ``listing``: find a project's jobs: the list's filters and search box (``JobQuery``),
  keyset pages both ways, a capped count; the API's list and bulk filter parse through it;
* ``bulk``: cancel, retry or delete many jobs by ids or by a filter (a ``JobQuery``);
* ``batches``: batch progress and callbacks, fired exactly once;
* ``graph``: the DAG rules the others share (cascades, waiting again after a retry);
* ``lookup``: one job of a project, a foreign one looking missing;
* ``queue_jobs``: a queue's jobs in bulk (purge the waiting ones, take and delete them all),
  batched in SQL, in the caller's transaction: taskforge/queue_ops.py adds the queue's lock
  and the audit record (``from jobs.services import queue_jobs``).

The hot statements they run are in jobs/sql/, executed by jobs/queries.py. Callers import
from here (``from jobs import services``); the modules are the places to read.
"""

# What the engine's statements hand back, for callers that pass it on (the worker protocol).
from jobs.queries import BUSY, AssignedJob, Outcome, worker_channel
from jobs.services.actions import cancel_job, retry_job
from jobs.services.batches import (
    CALLBACK_NAMES,
    BatchStatus,
    batch_status,
    fire_batch_callbacks,
    fire_owed_batch_callbacks,
)
from jobs.services.bulk import BULK_LIMIT, bulk_action
from jobs.services.listing import (
    JobPage,
    JobQuery,
    count_matching,
    filtered,
    page,
    parse_search,
)
from jobs.services.lookup import get_job
from jobs.services.results import (
    ResultItem,
    append_logs,
    complete_job,
    expire_leases,
    fail_job,
    fail_worker_jobs_in_transaction,
    report_results,
)
from jobs.services.submit import Submitted, enqueue_in_transaction, submit_job, submit_jobs

__all__ = [
    "BULK_LIMIT",
    "BUSY",
    "CALLBACK_NAMES",
    "AssignedJob",
    "BatchStatus",
    "JobPage",
    "JobQuery",
    "Outcome",
    "ResultItem",
    "Submitted",
    "append_logs",
    "batch_status",
    "bulk_action",
    "cancel_job",
    "complete_job",
    "count_matching",
    "enqueue_in_transaction",
    "expire_leases",
    "fail_job",
    "fail_worker_jobs_in_transaction",
    "filtered",
    "fire_batch_callbacks",
    "fire_owed_batch_callbacks",
    "get_job",
    "page",
    "parse_search",
    "report_results",
    "retry_job",
    "submit_job",
    "submit_jobs",
    "worker_channel",
]
