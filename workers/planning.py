"""Which worker gets how many jobs of which queue: the dispatcher's policy, as a pure function.

Kept free of the database so its rules can be read and tested on their own:
* a worker's free slots go to its highest-priority queues that have pending jobs first;
* among queues of equal priority, slots are split by assignment weight with smooth weighted
  round robin (nginx's algorithm), whose state carries over between ticks, so a worker with
  weights 3:1 gets 3:1 even when it frees one slot at a time;
* a queue with fewer pending jobs than demanded gives its share to the worker's other queues.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

from jobs.queries import Slot


@dataclass(frozen=True, slots=True)
class Assignment:
    queue_id: UUID
    weight: int
    queue_priority: int


# Smooth weighted round robin "current weight" per (worker, queue), kept by the dispatcher.
RoundRobinState = dict[tuple[UUID, UUID], int]
# When the dispatcher last saw each (worker, queue) assignment (its monotonic clock).
LastSeen = dict[tuple[UUID, UUID], float]


def plan_slots(
    free: Mapping[UUID, int],
    assignments: Mapping[UUID, Sequence[Assignment]],
    available: Mapping[UUID, int],
    *,
    budget: int,
    state: RoundRobinState,
    rng: random.Random | None = None,
) -> list[Slot]:
    """Spread up to ``budget`` jobs over workers' free slots and their queues' pending jobs."""
    remaining = dict(available)
    next_number: dict[UUID, int] = {}
    slots: list[Slot] = []
    workers = list(free)
    # Shuffle so that, when jobs are scarce, no worker is always served first.
    (rng or random).shuffle(workers)
    for worker_id in workers:
        for _ in range(free[worker_id]):
            if len(slots) >= budget:
                return slots
            queue_id = _pick_queue(worker_id, assignments.get(worker_id, ()), remaining, state)
            if queue_id is None:
                break
            remaining[queue_id] -= 1
            number = next_number.get(queue_id, 1)
            next_number[queue_id] = number + 1
            slots.append(Slot(worker_id, queue_id, number))
    return slots


def _pick_queue(
    worker_id: UUID,
    choices: Sequence[Assignment],
    remaining: Mapping[UUID, int],
    state: RoundRobinState,
) -> UUID | None:
    eligible = [a for a in choices if remaining.get(a.queue_id, 0) > 0]
    if not eligible:
        return None
    top = max(a.queue_priority for a in eligible)
    group = [a for a in eligible if a.queue_priority == top]
    if len(group) == 1:
        return group[0].queue_id
    total = 0
    best: Assignment | None = None
    for a in group:
        key = (worker_id, a.queue_id)
        state[key] = state.get(key, 0) + a.weight
        total += a.weight
        if best is None or state[key] > state[(worker_id, best.queue_id)]:
            best = a
    assert best is not None
    state[(worker_id, best.queue_id)] -= total
    return best.queue_id


def forget_unseen(
    state: RoundRobinState, last_seen: LastSeen, *, now: float, keep_for: float
) -> None:
    """Drop the round-robin state of (worker, queue) pairs not seen for over ``keep_for`` s.

    Workers that went offline or were deleted, queues paused or deleted, and assignments
    removed or deactivated stop being seen, so the state does not grow forever. A pair is
    not dropped the moment it goes unseen: a full worker, or one another dispatcher holds for
    a tick, comes back with its weights where they were (restarting them from zero would hand
    a worker freeing one slot at a time to its heaviest queue every time).
    """
    for key in [key for key, seen in last_seen.items() if now - seen > keep_for]:
        del last_seen[key]
    for key in [key for key in state if key not in last_seen]:
        del state[key]
