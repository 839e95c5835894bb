from taskforge.lib.errors import Conflict, NotFound, ValidationFailed


class JobNotFound(NotFound):
    code = "not_found"


class StaleLease(Conflict):
    """The lease token is not the job's current one: re-assigned, cancelled or finished."""


class JobNotCancellable(Conflict):
    pass


class JobNotRetryable(Conflict):
    pass


class DependencyCycle(ValidationFailed):
    pass


class IdempotencyRace(Exception):
    """A concurrent submit inserted the same idempotency key first; retry the transaction."""
