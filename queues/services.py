"""Queue operator actions. Purging lives in jobs.services (it deletes jobs)."""

from __future__ import annotations

from django.db import transaction

from accounts.audit import SYSTEM, Actor, record_audit
from queues.models import Queue


def pause_queue(queue: Queue, *, actor: Actor = SYSTEM) -> Queue:
    """Stop assigning the queue's jobs; running jobs finish, submissions are still accepted."""
    return _set_paused(queue, paused=True, actor=actor)


def resume_queue(queue: Queue, *, actor: Actor = SYSTEM) -> Queue:
    """Assign the queue's jobs again (from the dispatchers' next tick, within the poll interval)."""
    return _set_paused(queue, paused=False, actor=actor)


def _set_paused(queue: Queue, *, paused: bool, actor: Actor) -> Queue:
    with transaction.atomic(durable=True):
        queue.paused = paused
        queue.save(update_fields=["paused"])
        record_audit(
            queue.organization_id,
            "queue.paused" if paused else "queue.resumed",
            actor=actor,
            project=queue.project,
            target_type="queue",
            target_id=queue.name,
        )
    return queue
