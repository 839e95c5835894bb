"""Which worker gets how many jobs of which queue: the dispatcher's policy, as a pure function.

Kept free of the database so its rules can be read and tested on their own:
* a worker's free slots go to its highest-priority queues that have pending jobs first;
* among queues of equal priority, slots are split by assignment weight with smooth weighted
  round robin (nginx's algorithm), whose state carries over between ticks, so a worker with
  weights 3:1 gets 3:1 even when it frees one slot at a time;
* a queue with fewer pending jobs than demanded gives its share to the worker's other queues;
* an organization whose plan caps its running jobs gets no more than its room, taken by its
  queues in the order above, so the room goes to the queues that can use it this tick.
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
    # The queue's organization, whose plan may cap its running jobs (plan_slots' plan_room).
    organization_id: UUID | None = None


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
    plan_room: Mapping[UUID, int] | None = None,
    rng: random.Random | None = None,
) -> list[Slot]:
    """Spread up to ``budget`` jobs over workers' free slots and their queues' pending jobs.

    ``plan_room``: how many more jobs each organization may start (its plan's max_concurrency
    less its running jobs); an organization not in it has no such cap. It is spent slot by
    slot as the queues are picked, rather than split among the queues beforehand, so room is
    never set aside for a queue whose workers have no free slot while another queue of the
    organization could have used it.
    """
    remaining = dict(available)
    room: dict[UUID | None, int] = {org: n for org, n in (plan_room or {}).items()}
    next_number: dict[UUID, int] = {}
    slots: list[Slot] = []
    workers = list(free)
    # Shuffle so that, when jobs are scarce, no worker is always served first.
    (rng or random).shuffle(workers)
    for worker_id in workers:
        for _ in range(free[worker_id]):
            if len(slots) >= budget:
                return slots
            choice = _pick_queue(worker_id, assignments.get(worker_id, ()), remaining, room, state)
            if choice is None:
                break
            queue_id = choice.queue_id
            remaining[queue_id] -= 1
            if choice.organization_id in room:
                room[choice.organization_id] -= 1
            number = next_number.get(queue_id, 1)
            next_number[queue_id] = number + 1
            slots.append(Slot(worker_id, queue_id, number))
    return slots


def _pick_queue(
    worker_id: UUID,
    choices: Sequence[Assignment],
    remaining: Mapping[UUID, int],
    room: Mapping[UUID | None, int],
    state: RoundRobinState,
) -> Assignment | None:
    # An organization without an entry in ``room`` has no plan cap.
    eligible = [
        a
        for a in choices
        if remaining.get(a.queue_id, 0) > 0 and room.get(a.organization_id, 1) > 0
    ]
    if not eligible:
        return None
    top = max(a.queue_priority for a in eligible)
    group = [a for a in eligible if a.queue_priority == top]
    if len(group) == 1:
        return group[0]
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
    return best


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
