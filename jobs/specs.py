"""Job specs: what a client asks for, checked before anything touches the database.

The rules (field limits, refs, cycles, graph size) read in one place and are tested without a
transaction; jobs/services/submit.py writes what passed. Every error names the job's index and
the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from jobs import limits
from jobs.exceptions import DependencyCycle
from jobs.models import JobState, ParentFailure
from taskforge import conf
from taskforge.lib.errors import PayloadTooLarge, ValidationFailed, field_error
from taskforge.lib.jsonlimits import storable_json

# The payload key a batch callback receives its batch's summary under (see callback_payload).
BATCH_SUMMARY_KEY = "batch"
# The fields a batch callback spec (on_complete / on_success) may have.
CALLBACK_FIELDS = (
    "queue", "job_type", "payload", "priority", "max_attempts", "timeout_seconds", "tags",
)  # fmt: skip
# ParentFailure.values builds a new list on every use; a batch checks it a thousand times.
_PARENT_FAILURES = frozenset(ParentFailure.values)


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What a client asks for: one job. ``ref``/``depends_on_refs`` link jobs of one batch."""

    queue: str
    job_type: str
    payload: Any = field(default_factory=dict)
    priority: int = 5
    sub_priority: int = 0
    run_at: datetime | None = None
    delay_seconds: float | None = None
    idempotency_key: str | None = None
    depends_on: Sequence[UUID] = ()
    max_attempts: int | None = None
    timeout_seconds: int | None = None
    tags: Sequence[str] = ()
    ref: str | None = None
    depends_on_refs: Sequence[str] = ()
    # What a parent ending dead or cancelled does to this job (stored on each incoming edge).
    on_parent_failure: str = ParentFailure.CANCEL


def _fail(index: int | None, field_name: str, message: str) -> ValidationFailed:
    return field_error(field_name, message, index=index)


def _check_text(index: int | None, name: str, value: object, *, max_length: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _fail(index, name, "must be a non-empty string")
    if len(value) > max_length:
        raise _fail(index, name, f"must be at most {max_length} characters")
    if "\x00" in value:
        raise _fail(index, name, "must not contain NUL characters")


def _check_int(index: int | None, name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(index, name, f"must be an integer from {low} to {high}")


def encode_payload(
    index: int | None, payload: Any, *, name: str = "payload", items: str = "jobs"
) -> str:
    """Serialise a payload, result or log metadata to the JSON text that is stored, enforcing
    the size cap, the nesting limit and what PostgreSQL's jsonb accepts (no NUL, no lone
    surrogate). Every producer passes here, the engine's own (schedules, callbacks) too."""
    return storable_json(
        payload, field=name, index=index, items=items, max_bytes=conf.max_payload_bytes()
    )


def validate_spec(index: int | None, spec: JobSpec) -> str:
    """Check one spec's own fields; return its payload as JSON text."""
    _check_text(index, "queue", spec.queue, max_length=limits.QUEUE_NAME_MAX_LENGTH)
    _check_text(index, "job_type", spec.job_type, max_length=limits.JOB_TYPE_MAX_LENGTH)
    _check_int(index, "priority", spec.priority, limits.PRIORITY_MIN, limits.PRIORITY_MAX)
    _check_int(
        index, "sub_priority", spec.sub_priority, limits.SUB_PRIORITY_MIN, limits.SUB_PRIORITY_MAX
    )
    if spec.max_attempts is not None:
        _check_int(
            index,
            "max_attempts",
            spec.max_attempts,
            limits.MAX_ATTEMPTS_MIN,
            limits.MAX_ATTEMPTS_MAX,
        )
    if spec.timeout_seconds is not None:
        _check_int(
            index,
            "timeout_seconds",
            spec.timeout_seconds,
            limits.TIMEOUT_SECONDS_MIN,
            limits.TIMEOUT_SECONDS_MAX,
        )
    if spec.run_at is not None and spec.delay_seconds is not None:
        raise _fail(index, "run_at", "give run_at or delay_seconds, not both")
    if spec.run_at is not None and spec.run_at.tzinfo is None:
        raise _fail(index, "run_at", "must include a timezone (ISO-8601 with Z or an offset)")
    if spec.delay_seconds is not None:
        delay = spec.delay_seconds
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not math.isfinite(delay)
        ):
            raise _fail(index, "delay_seconds", "must be a number")
        if not 0 <= delay <= limits.DELAY_SECONDS_MAX:
            raise _fail(index, "delay_seconds", f"must be from 0 to {limits.DELAY_SECONDS_MAX}")
    if spec.idempotency_key is not None:
        _check_text(
            index,
            "idempotency_key",
            spec.idempotency_key,
            max_length=limits.IDEMPOTENCY_KEY_MAX_LENGTH,
        )
    if len(spec.tags) > limits.MAX_TAGS:
        raise _fail(index, "tags", f"at most {limits.MAX_TAGS} tags")
    for tag in spec.tags:
        _check_text(index, "tags", tag, max_length=limits.TAG_MAX_LENGTH)
    if spec.ref is not None:
        _check_text(index, "ref", spec.ref, max_length=limits.REF_MAX_LENGTH)
    if spec.on_parent_failure not in _PARENT_FAILURES:
        raise _fail(index, "on_parent_failure", f"must be one of {ParentFailure.values}")
    # A parent named twice would count twice in pending_parents but make one edge: the child
    # would wait forever for a second success.
    for name, parents in (
        ("depends_on", spec.depends_on),
        ("depends_on_refs", spec.depends_on_refs),
    ):
        if len(set(parents)) != len(parents):
            raise _fail(index, name, "names the same parent twice")
    count = len(spec.depends_on) + len(spec.depends_on_refs)
    if count > limits.MAX_PARENTS_PER_JOB:
        raise _fail(
            index,
            "depends_on_refs" if spec.depends_on_refs else "depends_on",
            f"at most {limits.MAX_PARENTS_PER_JOB} parents per job (depends_on and depends_on_refs "
            f"together), got {count}",
        )
    return encode_payload(index, spec.payload)


def check_batch_size(count: int) -> None:
    """Refuse a batch of more than TASKFORGE_MAX_BATCH_JOBS jobs. The API calls this on the
    parsed list before it validates a single item: refusing 100,000 items after validating
    them cost seconds of CPU."""
    limit = conf.max_batch_jobs()
    if count > limit:
        raise ValidationFailed(
            f"jobs: at most {limit} jobs per batch, got {count}",
            details={"field": "jobs", "limit": limit},
        )


def check_graph_size(specs: Sequence[JobSpec]) -> None:
    """Refuse a batch with more than limits.MAX_EDGES_PER_BATCH dependency edges."""
    edges = sum(len(s.depends_on) + len(s.depends_on_refs) for s in specs)
    if edges > limits.MAX_EDGES_PER_BATCH:
        raise ValidationFailed(
            f"jobs: at most {limits.MAX_EDGES_PER_BATCH} dependencies per batch, got {edges}",
            details={"field": "jobs", "limit": limits.MAX_EDGES_PER_BATCH},
        )


def validate_callback(name: str, spec: JobSpec) -> None:
    """Check a batch callback spec (``name`` is on_complete or on_success); errors name the
    field as ``on_complete.queue`` and so on. Whether the queue exists is checked at submit.

    The size check runs on the payload as it will be enqueued, with the widest possible batch
    summary: a callback that passed here is never refused later, inside the transaction of
    the completion that finishes its batch.
    """
    for field_name in ("run_at", "delay_seconds", "idempotency_key", "ref"):
        if getattr(spec, field_name) is not None:
            raise _callback_fail(name, field_name, "is not allowed on a batch callback")
    for field_name in ("depends_on", "depends_on_refs"):
        if getattr(spec, field_name):
            raise _callback_fail(name, field_name, "is not allowed on a batch callback")
    if not isinstance(spec.payload, dict):
        raise _callback_fail(name, "payload", "must be a JSON object")
    if BATCH_SUMMARY_KEY in spec.payload:
        raise _callback_fail(
            name, "payload", f"the key {BATCH_SUMMARY_KEY!r} is reserved for the batch summary"
        )
    try:
        validate_spec(None, spec)
        widest = callback_payload(
            spec.payload,
            batch_id=UUID(int=0),
            total=10**9,
            counts=dict.fromkeys(JobState.values, 10**9),
        )
        encode_payload(None, widest)
    except (ValidationFailed, PayloadTooLarge) as exc:
        field_name = f"{name}.{exc.details.get('field', '')}".rstrip(".")
        raise type(exc)(
            f"{name}.{exc.message}", details={**exc.details, "field": field_name}
        ) from None


def _callback_fail(name: str, field_name: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"{name}.{field_name}: {message}", details={"field": f"{name}.{field_name}"}
    )


def callback_payload(
    payload: dict[str, Any], *, batch_id: UUID, total: int, counts: dict[str, int]
) -> dict[str, Any]:
    """A callback's payload: the one given at submit plus the batch's summary under "batch"."""
    summary = {
        "id": str(batch_id),
        "total": total,
        "counts": counts,
        "succeeded": counts.get("succeeded", 0) == total,
    }
    return {**payload, BATCH_SUMMARY_KEY: summary}


def check_refs(specs: Sequence[JobSpec]) -> dict[str, int]:
    """Check refs are unique and known and form no cycle; return {ref: index}."""
    by_ref: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.ref is not None:
            if spec.ref in by_ref:
                raise _fail(
                    index, "ref", f"duplicate ref {spec.ref!r} (also jobs[{by_ref[spec.ref]}])"
                )
            by_ref[spec.ref] = index
    for index, spec in enumerate(specs):
        for ref in spec.depends_on_refs:
            if ref not in by_ref:
                raise _fail(index, "depends_on_refs", f"unknown ref {ref!r}")
            if ref == spec.ref:
                raise _fail(index, "depends_on_refs", "a job cannot depend on itself")
    cycle = find_cycle({s.ref: list(s.depends_on_refs) for s in specs if s.ref is not None})
    if cycle:
        path = " -> ".join(cycle)
        raise DependencyCycle(
            f"dependency cycle: {path}",
            details={"field": "depends_on_refs", "cycle": cycle, "index": by_ref[cycle[0]]},
        )
    return by_ref


def find_cycle(parents: dict[str, list[str]]) -> list[str] | None:
    """Return one cycle as a path that starts and ends at the same node, or None.

    Iterative depth-first search: a batch may be one 1,000-job chain, deeper than Python's
    recursion limit.
    """
    done: set[str] = set()
    for start in parents:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(parents.get(start, []))]
        while stack:
            parent = next(stack[-1], None)
            if parent is None:
                stack.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
            elif parent in on_path:
                return [*path[path.index(parent) :], parent]
            elif parent not in done:
                path.append(parent)
                on_path.add(parent)
                stack.append(iter(parents.get(parent, [])))
    return None


def topological_order(specs: Sequence[JobSpec], by_ref: dict[str, int]) -> list[int]:
    """Indexes ordered so every in-batch parent comes before its children (graph is acyclic)."""
    order: list[int] = []
    placed: set[int] = set()
    for start in range(len(specs)):
        if start in placed:
            continue
        placed.add(start)
        stack = [(start, iter(specs[start].depends_on_refs))]
        while stack:
            index, refs = stack[-1]
            ref = next(refs, None)
            if ref is None:
                stack.pop()
                order.append(index)
            elif (parent := by_ref[ref]) not in placed:
                placed.add(parent)
                stack.append((parent, iter(specs[parent].depends_on_refs)))
    return order
