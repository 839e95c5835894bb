"""The dispatcher: the engine loop behind ``manage.py rundispatcher``.

Each ``tick()`` runs the steps of docs/architecture.md#5-dispatch-one-tick in order, each one
a short set-based transaction returning a count. Any number of dispatchers may run against one
database: every claim uses SKIP LOCKED, and leader-only maintenance takes an advisory lock.
Between ticks the loop sleeps on LISTEN (submits and results NOTIFY it) or a jittered poll
interval, whichever comes first; if LISTEN is unavailable it simply polls.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any

import psycopg
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import Count
from django.db.models.functions import Now

from billing.plans import limits_of
from jobs import queries, services
from jobs.models import Job, JobExecution, JobState, JobThroughput
from jobs.schedules import services as scheduling
from jobs.services import stats
from queues.models import Queue
from taskforge import conf
from workers import dispatch_sql, webtier
from workers.models import Worker, WorkerStatus
from workers.planning import Assignment, LastSeen, RoundRobinState, forget_unseen, plan_slots

logger = logging.getLogger("taskforge.dispatcher")

# Longest pause _cooldown() puts between busy ticks.
MAX_COOLDOWN = 0.05

# Seconds of idleness after which the next tick first checks its database connection.
HEALTH_CHECK_AFTER_IDLE = 5.0

# Seconds between promotions of due scheduled jobs while the dispatcher is busy.
PROMOTE_INTERVAL = 0.1

# Seconds between looks for due cron schedules (fire times are whole minutes).
SCHEDULE_INTERVAL = 1.0

# Seconds between sweeps for batches whose callbacks are owed but were not enqueued (a safety
# net: callbacks normally fire in the transaction that finishes the batch).
BATCH_SWEEP_INTERVAL = 30.0

# Due schedules handled per transaction (each may enqueue several catch-up runs).
SCHEDULES_PER_TICK = 100

# Seconds between lease-expiry / silent-worker sweeps while the dispatcher is busy.
SWEEP_INTERVAL = 1.0

# Seconds the round-robin weights of a (worker, queue) assignment outlive its last sighting
# (an offline worker, a paused or deleted queue…); pruned at each sweep.
ROUND_ROBIN_KEEP_SECONDS = 60.0

# Tables whose statistics and dead rows the maintenance step looks after. The throughput
# rollup takes an update per batch of results and is folded every interval.
HOT_TABLES = (
    Job._meta.db_table,
    JobExecution._meta.db_table,
    Worker._meta.db_table,
    JobThroughput._meta.db_table,
)


@dataclass(frozen=True, slots=True)
class TickResult:
    promoted: int = 0
    fired: int = 0
    assigned: int = 0
    expired: int = 0
    offline: int = 0
    # Some step hit its batch limit: there is more to do right away.
    full: bool = False

    def __bool__(self) -> bool:
        return bool(self.promoted or self.fired or self.assigned or self.expired or self.offline)


def _plan_concurrency(tier: str | None, limits: str | None) -> int | None:
    """An organization's plan max_concurrency (None: no cap) from its subscription's tier and
    limits (JSON text), as billing.plans.plan_limits gives it: the tier's default unless the
    limits override it; starter's without a subscription."""
    return limits_of(tier, json.loads(limits) if limits else None)["max_concurrency"]


class Dispatcher:
    def __init__(
        self,
        *,
        poll_interval: float | None = None,
        batch_size: int | None = None,
        lease_seconds: int | None = None,
    ) -> None:
        self.poll_interval = poll_interval if poll_interval is not None else conf.poll_interval()
        self.batch_size = batch_size if batch_size is not None else conf.batch_size()
        self.lease_seconds = lease_seconds if lease_seconds is not None else conf.lease_seconds()
        self.identity = uuid.uuid4()
        self.stopping = False
        self._round_robin: RoundRobinState = {}
        self._round_robin_seen: LastSeen = {}
        self.round_robin_keep_seconds = ROUND_ROBIN_KEEP_SECONDS
        # When (time.monotonic()) a rate-limited queue with jobs waiting earns its next token;
        # the wait after a tick ends then at the latest. None: no queue waits on its limit.
        self._next_token_due: float | None = None
        # Why the last look at the web tier excused workers' silence, if it did (logged when
        # it changes; workers/webtier.py).
        self._excuse: str | None = None
        self._listener: psycopg.Connection[Any] | None = None
        self._next_maintenance = 0.0
        self._next_sweep = 0.0
        self._next_promote = 0.0
        self._next_schedules = 0.0
        self._next_batch_sweep = 0.0
        self._failures = 0
        self._last_tick = (0.0, 0.0)

    # --- steps --------------------------------------------------------------------------------

    def tick(self) -> TickResult:
        """Run every step once, in order.

        Promotion of due jobs runs at most every PROMOTE_INTERVAL (a delayed job starts at
        most that late; an idle dispatcher, ticking once per poll interval, always promotes),
        which keeps it off the path of a submit that wakes the dispatcher. Lease expiry and
        the silent-worker sweep need no sub-second precision, so a busy
        dispatcher (woken by every batch of results) runs them at most once per
        SWEEP_INTERVAL, or again at once when their last run hit the batch limit. Cron
        schedules are looked at every SCHEDULE_INTERVAL, after promotion and before assignment,
        so a job a schedule enqueues is assigned in the same tick.
        """
        promoted = fired = 0
        schedules_behind = False
        if time.monotonic() >= self._next_promote:
            promoted = self.promote_due()
            behind = promoted == self.batch_size
            self._next_promote = time.monotonic() + (0 if behind else PROMOTE_INTERVAL)
        if time.monotonic() >= self._next_schedules:
            fired, schedules_behind = self.fire_schedules()
            self._next_schedules = time.monotonic() + (0 if schedules_behind else SCHEDULE_INTERVAL)
        assigned = self.assign()
        expired = offline = 0
        if time.monotonic() >= self._next_sweep:
            expired = self.expire_leases()
            offline = self.mark_silent_workers()
            if time.monotonic() >= self._next_batch_sweep:
                self._next_batch_sweep = time.monotonic() + BATCH_SWEEP_INTERVAL
                self.fire_owed_batch_callbacks()
            behind = self.batch_size in (expired, offline)
            self._next_sweep = time.monotonic() + (0 if behind else SWEEP_INTERVAL)
            forget_unseen(
                self._round_robin,
                self._round_robin_seen,
                now=time.monotonic(),
                keep_for=self.round_robin_keep_seconds,
            )
        full = schedules_behind or self.batch_size in (promoted, assigned, expired, offline)
        return TickResult(promoted, fired, assigned, expired, offline, full)

    def promote_due(self) -> int:
        """Scheduled jobs whose run_at has come become pending."""
        with transaction.atomic(durable=True):
            promoted = queries.promote_due(limit=self.batch_size)
        return promoted

    def fire_schedules(self) -> tuple[int, bool]:
        """Enqueue the runs of due cron schedules; return (jobs enqueued, more schedules due).

        A failure here (other than a lost connection) is logged and the tick goes on: a broken
        schedule must not stop the dispatching of every other job.
        """
        try:
            fired = scheduling.fire_due_schedules(limit=SCHEDULES_PER_TICK)
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            logger.exception("firing schedules failed; dispatching goes on")
            return 0, False
        return fired.enqueued, fired.schedules == SCHEDULES_PER_TICK

    def assign(self) -> int:
        """Claim pending jobs into the free slots of online workers; NOTIFY each worker."""
        self._next_token_due = None
        with transaction.atomic(durable=True):
            free, assignments, capped, rate_limited, plans = self._free_slots_and_assignments()
            if not free:
                return 0
            queue_ids = {a.queue_id for choices in assignments.values() for a in choices}
            if not queue_ids:
                return 0
            budget = min(self.batch_size, sum(free.values()))
            available = queries.pending_available(sorted(queue_ids), cap=budget)
            plan_room = self._plan_room(available, assignments, plans)
            if capped:
                self._apply_concurrency_caps(available, capped)
            pending = dict(available)
            buckets = self._apply_rate_limits(available, rate_limited)
            slots = plan_slots(
                free,
                assignments,
                available,
                budget=budget,
                state=self._round_robin,
                plan_room=plan_room,
            )
            # The claim NOTIFYs the workers that got jobs, and spends the buckets' tokens, in
            # the same statement.
            claimed = queries.claim_jobs(slots, lease_seconds=self.lease_seconds, buckets=buckets)
        if buckets:
            self._schedule_next_token(buckets, pending, claimed)
        return len(claimed)

    def expire_leases(self) -> int:
        """Jobs whose lease ran out count as failed attempts: retried, or dead when exhausted.

        Not while the web tier is down or just back (workers/webtier.py): the workers could
        not heartbeat, and their finished jobs would run again.
        """
        if self._silence_excused():
            return 0
        return services.expire_leases(limit=self.batch_size)

    def mark_silent_workers(self) -> int:
        """Workers silent past the timeout go offline; their leases end now. Not while the web
        tier is down or just back, as for expire_leases."""
        if self._silence_excused():
            return 0
        cutoff = Now() - timedelta(seconds=conf.worker_timeout_seconds())
        with transaction.atomic(durable=True):
            silent = list(
                Worker.objects.all_tenants()
                .filter(
                    status__in=(WorkerStatus.ONLINE, WorkerStatus.DRAINING),
                    last_heartbeat__lt=cutoff,
                )
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[: self.batch_size]
            )
            if silent:
                Worker.objects.all_tenants().filter(pk__in=silent).update(
                    status=WorkerStatus.OFFLINE
                )
                queries.expire_worker_leases(silent)
                logger.warning("marked %d silent worker(s) offline", len(silent))
        return len(silent)

    def _silence_excused(self) -> bool:
        excuse = webtier.silence_excuse()
        if excuse != self._excuse:
            self._excuse = excuse
            if excuse == webtier.DOWN:
                logger.warning(
                    "the web tier is down: no lease ends and no worker goes offline for "
                    "silence until it has been back for %ss",
                    conf.web_restart_grace_seconds(),
                )
            elif excuse == webtier.RESTARTED:
                logger.info(
                    "the web tier (re)started: no lease ends and no worker goes offline for "
                    "silence until it has been up for %ss",
                    conf.web_restart_grace_seconds(),
                )
            else:
                logger.info("the web tier is up: leases and worker silence count again")
        return excuse is not None

    def fire_owed_batch_callbacks(self) -> int:
        """Enqueue the callbacks of finished batches that still owe them (a safety net)."""
        fired = services.fire_owed_batch_callbacks(limit=self.batch_size)
        if fired:
            logger.warning("fired the owed callbacks of %d finished batch(es)", fired)
        return fired

    def maintain(self) -> list[str]:
        """Fold the dashboard's throughput rollup, and keep the hot tables analyzed and
        vacuumed (each in one dispatcher at a time)."""
        done = []
        # Every maintenance interval, so a minute's shards are folded within about that long
        # after it ends and the rollup keeps a handful of rows per queue and minute.
        folded = stats.fold_throughput()
        if folded:
            done.append(f"folded {folded} throughput row(s)")
        done += queries.maintain_tables(HOT_TABLES)
        for action in done:
            logger.info("maintenance: %s", action)
        return done

    # --- helpers of assign() ----------------------------------------------------------------

    def _free_slots_and_assignments(
        self,
    ) -> tuple[
        dict[uuid.UUID, int],
        dict[uuid.UUID, list[Assignment]],
        set[uuid.UUID],
        set[uuid.UUID],
        dict[uuid.UUID, int | None],
    ]:
        """Free slots of the online workers this dispatcher locked for this tick, their
        active assignments to unpaused queues, which of those queues have a cap and which a
        rate limit, and the plan max_concurrency of their organizations (None: no cap).

        Two statements, in this order (workers/sql/lock_online_workers.sql says why).
        """
        capacity = dispatch_sql.lock_online_workers()
        if not capacity:
            return {}, {}, set(), set(), {}
        rows = dispatch_sql.worker_assignments(list(capacity))
        free: dict[uuid.UUID, int] = {}
        by_worker: dict[uuid.UUID, list[Assignment]] = defaultdict(list)
        capped: set[uuid.UUID] = set()
        rate_limited: set[uuid.UUID] = set()
        plans: dict[uuid.UUID, int | None] = {}
        now = time.monotonic()
        for row in rows:
            worker_id, queue_id, weight, priority, max_concurrency, limited = row[:6]
            org, tier, limits, busy = row[6:]
            # Seen even when full: its round-robin weights must survive until it frees a slot.
            self._round_robin_seen[worker_id, queue_id] = now
            if capacity[worker_id] - busy <= 0:
                continue
            free[worker_id] = capacity[worker_id] - busy
            by_worker[worker_id].append(Assignment(queue_id, weight, priority, org))
            if max_concurrency is not None:
                capped.add(queue_id)
            if limited:
                rate_limited.add(queue_id)
            if org not in plans:
                plans[org] = _plan_concurrency(tier, limits)
        return free, by_worker, capped, rate_limited, plans

    def _plan_room(
        self,
        available: dict[uuid.UUID, int],
        assignments: dict[uuid.UUID, list[Assignment]],
        plans: dict[uuid.UUID, int | None],
    ) -> dict[uuid.UUID, int]:
        """How many more jobs each organization with jobs waiting may start under its plan's
        max_concurrency (its running jobs across all its projects, queues and workers, and
        every dispatcher's); organizations whose plan has no cap are left out.

        Like a queue's cap, but the organization has no row every dispatcher would lock (one
        without a subscription is on starter), so each capped organization gets an advisory
        lock (jobs/sql/lock_organizations.sql) held until this tick's claim commits: the
        running count, read after the lock is granted, includes every other dispatcher's
        committed claims, and none of them claims for the organization meanwhile. The locks
        come before any queue row's (caps, then rate limits), so every dispatcher takes its
        locks in one order. workers/planning.py spends the room as it picks queues.
        """
        caps: dict[uuid.UUID, int] = {}
        for choices in assignments.values():
            for choice in choices:
                org = choice.organization_id
                if org is None or available.get(choice.queue_id, 0) <= 0:
                    continue
                cap = plans.get(org)
                if cap is not None:
                    caps[org] = cap
        if not caps:
            return {}
        queries.lock_organizations(sorted(caps))
        running = queries.running_per_organization(caps)
        return {org: max(0, cap - running.get(org, 0)) for org, cap in caps.items()}

    def _apply_concurrency_caps(
        self, available: dict[uuid.UUID, int], capped: set[uuid.UUID]
    ) -> None:
        """Lower each capped queue's availability to its max_concurrency headroom.

        The queue rows are locked first, so dispatchers take turns on capped queues and the
        running count each one reads already includes the others' committed claims.
        """
        rows = (
            Queue.objects.all_tenants()
            .filter(pk__in=list(capped), max_concurrency__isnull=False)
            .order_by("pk")
            .select_for_update()
            .values_list("pk", "max_concurrency")
        )
        caps = {queue_id: cap for queue_id, cap in rows if cap is not None}
        if not caps:
            return
        running = dict(
            Job.objects.all_tenants()
            .filter(state=JobState.PROCESSING, queue_id__in=list(caps))
            .values("queue_id")
            .annotate(n=Count("*"))
            .values_list("queue_id", "n")
        )
        for queue_id, cap in caps.items():
            available[queue_id] = max(0, min(available[queue_id], cap - running.get(queue_id, 0)))

    def _apply_rate_limits(
        self, available: dict[uuid.UUID, int], rate_limited: set[uuid.UUID]
    ) -> dict[uuid.UUID, queries.RateBucket]:
        """Lower each rate-limited queue's availability to the whole tokens in its bucket.

        Only queues with pending jobs are locked (jobs/sql/lock_rate_limits.sql): dispatchers
        take turns on them until this transaction, whose claim spends the tokens, commits.
        Organizations (_plan_room) and concurrency caps are locked first, so every dispatcher
        takes its locks in the same order: organizations by lock key, capped queues by id,
        then the other rate-limited ones by id.
        """
        waiting = sorted(queue_id for queue_id in rate_limited if available.get(queue_id, 0) > 0)
        buckets = queries.lock_rate_limits(waiting)
        for queue_id, bucket in buckets.items():
            available[queue_id] = min(available[queue_id], bucket.allowed)
        return buckets

    def _schedule_next_token(
        self,
        buckets: dict[uuid.UUID, queries.RateBucket],
        pending: dict[uuid.UUID, int],
        claimed: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]],
    ) -> None:
        """Note when the next token is due of a queue whose limit, not the workers' free
        slots, left jobs pending, so the wait after this tick ends by then (see _wait)."""
        spent = Counter(queue_id for _, _, queue_id in claimed)
        delays = [
            bucket.seconds_to_next_token(spent[queue_id])
            for queue_id, bucket in buckets.items()
            if pending[queue_id] > spent[queue_id] and bucket.tokens - spent[queue_id] < 1
        ]
        if delays:
            self._next_token_due = time.monotonic() + min(delays)

    # --- the loop -----------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> None:
        """Tick until stopped (first SIGTERM/SIGINT); with ``once``, tick a single time."""
        self._install_signal_handlers()
        if not once:
            # Spread the first ticks of dispatchers started together (thundering herd).
            self._sleep(random.uniform(0, min(self.poll_interval, 1.0)))  # noqa: S311
        logger.info(
            "dispatcher %s started (poll %.2fs, batch %d)",
            self.identity,
            self.poll_interval,
            self.batch_size,
        )
        idle_since = time.monotonic()
        try:
            while not self.stopping:
                # Django's connection health check costs a round trip; pay it after an idle
                # spell, not on every busy wake-up (a broken connection is caught below).
                if time.monotonic() - idle_since > HEALTH_CHECK_AFTER_IDLE:
                    close_old_connections()
                try:
                    tick_started = time.monotonic()
                    result = self.tick()
                    # Only a tick that assigned work marks the dispatcher busy (see _cooldown).
                    busy_for = time.monotonic() - tick_started if result.assigned else 0.0
                    self._last_tick = (tick_started, busy_for)
                    self._maybe_maintain()
                except (OperationalError, InterfaceError) as exc:
                    if once:
                        raise
                    self._recover(exc)
                    continue
                self._failures = 0
                if result:
                    logger.info(
                        "tick: promoted=%d fired=%d assigned=%d expired=%d offline=%d",
                        result.promoted,
                        result.fired,
                        result.assigned,
                        result.expired,
                        result.offline,
                    )
                if once:
                    break
                if not result.full and not self.stopping:
                    idle_since = time.monotonic()
                    self._wait()
        finally:
            self._close_listener()
        logger.info("dispatcher %s stopped", self.identity)

    def _recover(self, exc: Exception) -> None:
        """The database went away (restart, failover, network): reconnect with backoff."""
        self._failures += 1
        delay = min(30.0, 0.5 * 2 ** min(self._failures - 1, 6))
        logger.error("database error (%s); retrying in %.1fs", exc, delay)
        connection.close()
        self._close_listener()
        self._sleep(delay)

    def _maybe_maintain(self) -> None:
        if time.monotonic() >= self._next_maintenance:
            self._next_maintenance = time.monotonic() + conf.maintenance_interval()
            self.maintain()

    def _cooldown(self) -> None:
        """Space busy ticks out by their own duration, so a burst of NOTIFYs (every batch of
        results sends one) makes fewer, fuller ticks instead of one small tick each: ticking
        stays at most about half of this process's time. After a tick that assigned nothing
        (woken by results, say), or a long idle spell, the next tick starts at once, so a
        single submit is not delayed.
        """
        started, duration = self._last_tick
        self._sleep(min(MAX_COOLDOWN, started + 2 * duration - time.monotonic()))

    def _wait(self) -> None:
        """Block until a NOTIFY arrives, the jittered poll interval passes, or a rate-limited
        queue with jobs waiting earns its next token, whichever comes first."""
        timeout = self.poll_interval * random.uniform(1.0, 1.1)  # noqa: S311
        if self._next_token_due is not None:
            timeout = min(timeout, max(0.0, self._next_token_due - time.monotonic()))
        listener = self._ensure_listener()
        if listener is None:
            self._sleep(timeout)
            return
        deadline = time.monotonic() + timeout
        try:
            # Short slices, so a SIGTERM (which only sets self.stopping) is honoured within
            # 0.1 s even when idle; a NOTIFY still ends the wait at once.
            while not self.stopping and (left := deadline - time.monotonic()) > 0:
                if any(True for _ in listener.notifies(timeout=min(left, 0.1), stop_after=1)):
                    break
            self._cooldown()
            # Collapse a burst of notifications into one tick.
            for _ in listener.notifies(timeout=0.0):
                pass
        except psycopg.Error:
            logger.warning("LISTEN connection lost; polling until it reconnects")
            self._close_listener()

    def _ensure_listener(self) -> psycopg.Connection[Any] | None:
        if self._listener is not None:
            return self._listener
        params = {
            key: value
            for key, value in connection.get_connection_params().items()
            if key in {"dbname", "user", "password", "host", "port", "sslmode", "sslrootcert"}
        }
        try:
            self._listener = psycopg.connect(
                **params,
                autocommit=True,
                application_name=f"taskforge-dispatcher {self.identity}",
            )
            self._listener.execute(f"LISTEN {queries.DISPATCH_CHANNEL}")
        except psycopg.Error as exc:
            logger.warning("cannot LISTEN (%s); falling back to polling", exc)
            self._close_listener()
        return self._listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            finally:
                self._listener = None

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            # Second signal: give up at once. An open transaction is rolled back by the server.
            signal.signal(signum, signal.SIG_DFL)
            sys.exit(1)
        logger.info(
            "received %s: finishing the current step, then stopping", signal.Signals(signum).name
        )
        self.stopping = True
