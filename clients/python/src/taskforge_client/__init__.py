"""TaskForge's Python SDK: the API client, the worker runner and a Django Tasks backend.

from taskforge_client import TaskForge

tf = TaskForge("https://taskforge.example.com", "tf_…")
job = tf.submit("default", "emails.send_welcome", {"user_id": 42})
job = tf.wait(job.id)
"""

from __future__ import annotations

__version__ = "0.1.0"

from taskforge_client.client import NO_RETRIES, RetryPolicy, TaskForge
from taskforge_client.errors import (
    AuthenticationError,
    Conflict,
    EncodingError,
    JobCancelled,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ServerError,
    TaskForgeError,
    TransportError,
    ValidationError,
    WaitTimeout,
)
from taskforge_client.handlers import (
    JobContext,
    PermanentError,
    Registry,
    handler,
    permanent,
    registry,
)
from taskforge_client.jobs import Job
from taskforge_client.worker import Worker

__all__ = [
    "NO_RETRIES",
    "AuthenticationError",
    "Conflict",
    "EncodingError",
    "Job",
    "JobCancelled",
    "JobContext",
    "NotFound",
    "PayloadTooLarge",
    "PermanentError",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "Registry",
    "RetryPolicy",
    "ServerError",
    "TaskForge",
    "TaskForgeError",
    "TransportError",
    "ValidationError",
    "WaitTimeout",
    "Worker",
    "__version__",
    "handler",
    "permanent",
    "registry",
]
