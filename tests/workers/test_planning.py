"""workers.planning.plan_slots: the dispatcher's policy as a pure function (no database)."""

import random
import uuid
from collections import Counter

from workers.planning import Assignment, forget_unseen, plan_slots

W1, W2 = uuid.uuid4(), uuid.uuid4()
HIGH, LOW, A, B = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def plan(free, assignments, available, *, budget=1000, state=None, seed=0):
    return plan_slots(
        free,
        assignments,
        available,
        budget=budget,
        state=state if state is not None else {},
        rng=random.Random(seed),
    )


def per_queue(slots):
    return Counter(slot.queue_id for slot in slots)


def test_it_plans_no_more_slots_than_the_budget():
    assignments = {W1: [Assignment(A, 1, 5)], W2: [Assignment(A, 1, 5)]}
    slots = plan({W1: 10, W2: 10}, assignments, {A: 100}, budget=7)
    assert len(slots) == 7


def test_it_plans_no_more_slots_than_a_worker_has_free():
    slots = plan({W1: 3}, {W1: [Assignment(A, 1, 5)]}, {A: 100})
    assert [slot.worker_id for slot in slots] == [W1] * 3


def test_it_plans_no_more_slots_than_a_queue_has_pending_jobs():
    assignments = {W1: [Assignment(A, 1, 5)], W2: [Assignment(A, 1, 5)]}
    slots = plan({W1: 10, W2: 10}, assignments, {A: 4})
    assert len(slots) == 4


def test_it_fills_slots_from_the_highest_priority_queue_first():
    assignments = {W1: [Assignment(LOW, 100, 1), Assignment(HIGH, 1, 9)]}
    slots = plan({W1: 5}, assignments, {HIGH: 50, LOW: 50})
    assert per_queue(slots) == {HIGH: 5}


def test_it_falls_back_to_a_lower_priority_queue_when_the_higher_runs_dry():
    assignments = {W1: [Assignment(LOW, 1, 1), Assignment(HIGH, 1, 9)]}
    slots = plan({W1: 5}, assignments, {HIGH: 2, LOW: 50})
    assert per_queue(slots) == {HIGH: 2, LOW: 3}


def test_it_splits_single_slot_rounds_by_weight_when_state_carries_over():
    assignments = {W1: [Assignment(A, 3, 5), Assignment(B, 1, 5)]}
    state: dict = {}
    counts: Counter = Counter()
    for _ in range(2000):
        counts += per_queue(plan({W1: 1}, assignments, {A: 10, B: 10}, state=state))
    assert 1350 <= counts[A] <= 1650
    assert 350 <= counts[B] <= 650
    assert counts[A] + counts[B] == 2000


def test_it_gives_an_empty_queues_share_to_the_other_queue():
    assignments = {W1: [Assignment(A, 3, 5), Assignment(B, 1, 5)]}
    slots = plan({W1: 8}, assignments, {A: 0, B: 100})
    assert per_queue(slots) == {B: 8}


def test_it_gives_a_short_queues_unused_share_to_the_other_queue():
    assignments = {W1: [Assignment(A, 1, 5), Assignment(B, 1, 5)]}
    slots = plan({W1: 10}, assignments, {A: 2, B: 100})
    assert per_queue(slots) == {A: 2, B: 8}


def test_it_plans_nothing_for_a_worker_without_assignments():
    assert plan({W1: 5}, {}, {A: 100}) == []


def test_it_numbers_each_queues_slots_from_1_to_n_across_workers():
    both = [Assignment(A, 1, 5), Assignment(B, 1, 5)]
    slots = plan({W1: 5, W2: 6}, {W1: both, W2: both}, {A: 100, B: 100})
    assert len(slots) == 11
    for queue_id, count in per_queue(slots).items():
        numbers = sorted(slot.number for slot in slots if slot.queue_id == queue_id)
        assert numbers == list(range(1, count + 1))


def test_it_forgets_the_round_robin_state_of_assignments_unseen_for_longer_than_the_grace():
    state = {(W1, A): 2, (W1, B): -2, (W2, A): 1, (W2, B): -1}
    last_seen = {(W1, A): 100.0, (W1, B): 50.0, (W2, A): 39.0, (W2, B): 10.0}

    forget_unseen(state, last_seen, now=100.0, keep_for=60.0)

    # W1's pairs were seen 0 and 50 s ago: a worker full for a while keeps its weights.
    assert state == {(W1, A): 2, (W1, B): -2}
    assert last_seen == {(W1, A): 100.0, (W1, B): 50.0}


def test_it_forgets_round_robin_state_that_was_never_seen():
    state = {(W1, A): 1, (W2, B): 3}
    forget_unseen(state, {(W1, A): 5.0}, now=5.0, keep_for=60.0)
    assert state == {(W1, A): 1}


def test_it_keeps_round_robin_state_bounded_by_the_assignments_of_the_grace_period():
    state: dict = {}
    last_seen: dict = {}
    # A thousand short-lived workers, each seen in one tick only, one tick a second.
    for tick in range(1000):
        worker = uuid.uuid4()
        assignments = {worker: [Assignment(A, 3, 5), Assignment(B, 1, 5)]}
        for assignment in assignments[worker]:
            last_seen[worker, assignment.queue_id] = float(tick)
        plan({worker: 1}, assignments, {A: 10, B: 10}, state=state)
        forget_unseen(state, last_seen, now=float(tick), keep_for=60.0)
    assert len(state) <= 2 * 61
    assert len(last_seen) <= 2 * 61
