from taskforge.lib.errors import Conflict, NotFound, TaskForgeError, ValidationFailed


class JobNotFound(NotFound):
    code = "not_found"


class StaleLease(Conflict):
    """The lease token is not the job's current one: re-assigned, cancelled or finished."""


class JobBusy(TaskForgeError):
    """Another transaction holds the job's row right now: nothing changed, and the same request
    may succeed in a moment. Not a conflict: the lease may well be current."""

    code = "busy"
    http_status = 503


class JobNotCancellable(Conflict):
    pass


class JobNotRetryable(Conflict):
    pass


class DependencyCycle(ValidationFailed):
    pass


class IdempotencyRace(Exception):
    """A concurrent submit inserted the same idempotency key first; retry the transaction."""
