"""The dispatcher: the engine loop behind ``manage.py rundispatcher``.

Each ``tick()`` runs the steps of docs/architecture.md#6-the-dispatcher-one-tick in order, each one
a short set-based transaction returning a count: promotion of due jobs, cron schedules, lease
expiry and silent workers, owed batch callbacks. It hands no job to a worker: workers claim
their jobs themselves when they fetch (workers/claiming.py), so only a worker that is asking
gets one. Any number of dispatchers may run against one database: every step uses SKIP
LOCKED, and leader-only maintenance takes an advisory lock. Between ticks the loop sleeps a
jittered poll interval, or not at all when a step hit its batch limit.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models.functions import Now

from jobs import queries, services
from jobs.models import Job, JobExecution, JobThroughput
from jobs.schedules import services as scheduling
from jobs.services import stats
from taskforge import conf
from workers import webtier
from workers.models import Worker, WorkerStatus

logger = logging.getLogger("taskforge.dispatcher")

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
    expired: int = 0
    offline: int = 0
    # Some step hit its batch limit: there is more to do right away.
    full: bool = False

    def __bool__(self) -> bool:
        return bool(self.promoted or self.fired or self.expired or self.offline)


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
        # Why the last look at the web tier excused workers' silence, if it did (logged when
        # it changes; workers/webtier.py).
        self._excuse: str | None = None
        self._next_maintenance = 0.0
        self._next_sweep = 0.0
        self._next_promote = 0.0
        self._next_schedules = 0.0
        self._next_batch_sweep = 0.0
        self._failures = 0

    # --- steps --------------------------------------------------------------------------------

    def tick(self) -> TickResult:
        """Run every step once, in order.

        Promotion of due jobs runs at most every PROMOTE_INTERVAL, or again at once when it
        hit the batch limit; it NOTIFYs the queues it made pending, whose waiting long-polls
        then claim the jobs. Lease expiry and the silent-worker sweep need no sub-second
        precision: at most once per SWEEP_INTERVAL, or again at once when their last run hit
        the batch limit. Cron schedules are looked at every SCHEDULE_INTERVAL.
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
        expired = offline = 0
        if time.monotonic() >= self._next_sweep:
            expired = self.expire_leases()
            offline = self.mark_silent_workers()
            if time.monotonic() >= self._next_batch_sweep:
                self._next_batch_sweep = time.monotonic() + BATCH_SWEEP_INTERVAL
                self.fire_owed_batch_callbacks()
            behind = self.batch_size in (expired, offline)
            self._next_sweep = time.monotonic() + (0 if behind else SWEEP_INTERVAL)
        full = schedules_behind or self.batch_size in (promoted, expired, offline)
        return TickResult(promoted, fired, expired, offline, full)

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
        while not self.stopping:
            # Django's connection health check costs a round trip; pay it after an idle
            # spell, not on every busy tick (a broken connection is caught below).
            if time.monotonic() - idle_since > HEALTH_CHECK_AFTER_IDLE:
                close_old_connections()
            try:
                result = self.tick()
                self._maybe_maintain()
            except (OperationalError, InterfaceError) as exc:
                if once:
                    raise
                self._recover(exc)
                continue
            self._failures = 0
            if result:
                logger.info(
                    "tick: promoted=%d fired=%d expired=%d offline=%d",
                    result.promoted,
                    result.fired,
                    result.expired,
                    result.offline,
                )
            if once:
                break
            if not result.full and not self.stopping:
                idle_since = time.monotonic()
                # Jittered, so dispatchers started together do not tick in step.
                self._sleep(self.poll_interval * random.uniform(1.0, 1.1))  # noqa: S311
        logger.info("dispatcher %s stopped", self.identity)

    def _recover(self, exc: Exception) -> None:
        """The database went away (restart, failover, network): reconnect with backoff."""
        self._failures += 1
        delay = min(30.0, 0.5 * 2 ** min(self._failures - 1, 6))
        logger.error("database error (%s); retrying in %.1fs", exc, delay)
        connection.close()
        self._sleep(delay)

    def _maybe_maintain(self) -> None:
        if time.monotonic() >= self._next_maintenance:
            self._next_maintenance = time.monotonic() + conf.maintenance_interval()
            self.maintain()

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
            # os._exit, not sys.exit: SystemExit raised inside a query can be swallowed by the
            # driver's own error handling (seen when SIGINT and SIGTERM arrive together: Python
            # runs SIGINT's handler first, then SIGTERM's lands mid-query).
            logger.warning("received %s again: exiting at once", signal.Signals(signum).name)
            os._exit(1)
        logger.info(
            "received %s: finishing the current step, then stopping", signal.Signals(signum).name
        )
        self.stopping = True
