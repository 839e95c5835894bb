"""The web tier's own liveness, so that the dispatcher blames no worker for a silence the server
caused.

Workers reach TaskForge only through the web processes. While those are down (a restart, a
crash, a deploy), no heartbeat and no result can arrive, and the dispatcher, which keeps
running, would mark every worker offline and end its leases: finished jobs whose results are
waiting in the workers would run again. So each web process keeps a beacon, a WebProcess row
whose ``last_seen`` it renews every BEACON_SECONDS from a thread of its own, and at SIGTERM
sets back as if it had stopped beaconing long enough ago for the tier to count as down unless
another process beacons (deploy/gunicorn.conf.py starts and stops it). The dispatcher then
excuses silence (``silence_excused``):

* while no web process has beaconed for DOWN_AFTER_SECONDS: the web tier is down;
* until the web processes alive now have run for TASKFORGE_WEB_RESTART_GRACE_SECONDS: the
  tier came back (or was restarted) a moment ago, and workers need a heartbeat interval and
  their retry backoff to find it again.

Beacons not renewed for FORGET_AFTER_SECONDS are not trusted (the web tier no longer writes
them, say it runs without deploy/gunicorn.conf.py), and with no beacon at all silence counts
as before: a server without beacons behaves exactly as it did without this module.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta

from django.db import DatabaseError, close_old_connections, connection
from django.db.models import Count, Q
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now

from taskforge import conf
from workers.models import WebProcess

logger = logging.getLogger("taskforge.webtier")

# A web process renews its beacon this often.
BEACON_SECONDS = 1.0
# No beacon renewed for this long: the web tier is down. Several beacon intervals, so that one
# slow write is not an outage; well under any sane worker timeout (30 s by default), so that
# workers are excused before they could be marked offline.
DOWN_AFTER_SECONDS = 3.0
# Beacons older than this are stale leftovers, not an outage: silence counts as usual again.
FORGET_AFTER_SECONDS = 3600.0


class Beacon:
    """This process's WebProcess row, renewed every ``interval`` seconds by a daemon thread."""

    def __init__(self, *, interval: float = BEACON_SECONDS) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: datetime | None = None
        self._row = WebProcess(hostname=socket.gethostname()[:255], pid=os.getpid())

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="taskforge-beacon", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread and mark the row stopped: this process serves no more (SIGTERM).

        The row is kept, its last_seen set back past DOWN_AFTER_SECONDS: deleting it would
        leave no beacon at all, which reads as "no beacons here" rather than "the web tier is
        down", and the dispatcher would go on blaming the workers.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            WebProcess.objects.filter(pk=self._row.pk).update(
                last_seen=_ago(DOWN_AFTER_SECONDS + BEACON_SECONDS)
            )
        except DatabaseError as exc:
            logger.warning("could not mark the web beacon stopped: %s", exc)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._renew()
                except DatabaseError as exc:
                    # The database is away: the beacon goes stale, which is the truth.
                    logger.warning("web beacon not renewed: %s", exc)
                    connection.close()
                self._stop.wait(self.interval)
        finally:
            connection.close()

    def _renew(self) -> None:
        close_old_connections()
        if self._started_at is not None:
            updated = WebProcess.objects.filter(pk=self._row.pk).update(last_seen=Now())
            if updated:
                return
        # First beat, or the row went (deleted as stale after a long pause): (re)create it,
        # keeping the start time of this process.
        WebProcess.objects.filter(last_seen__lt=_ago(FORGET_AFTER_SECONDS)).delete()
        self._row.last_seen = Now()
        self._row.started_at = self._started_at or Now()
        self._row.save(force_insert=True)
        self._row.refresh_from_db(fields=["started_at", "last_seen"])
        self._started_at = self._row.started_at


_beacon: Beacon | None = None


def start_beacon() -> None:
    """Start this process's beacon (once): call it in each web process that serves workers."""
    global _beacon
    if _beacon is None:
        _beacon = Beacon()
        _beacon.start()


def stop_beacon() -> None:
    """Stop this process's beacon and mark its row stopped, if it runs."""
    if _beacon is not None:
        _beacon.stop()


def stop_beacon_soon() -> None:
    """stop_beacon() in a thread of its own: safe to call from a signal handler (SIGTERM), which
    must not wait on the database or on a lock the interrupted code may hold."""
    threading.Thread(target=_stop_in_thread, name="taskforge-beacon-stop", daemon=True).start()


def _stop_in_thread() -> None:
    try:
        stop_beacon()
    finally:
        connection.close()  # this thread's own connection


# Why silence is excused (silence_excuse()).
DOWN = "down"
RESTARTED = "restarted"


def silence_excuse() -> str | None:
    """Why a worker's silence may be the server's own doing right now: DOWN (the web processes
    have stopped beaconing), RESTARTED (those alive have run for less than the restart grace),
    or None (silence counts). One query, by the database's clock; the last_seen index serves
    it."""
    alive = Q(last_seen__gte=_ago(DOWN_AFTER_SECONDS))
    grace = conf.web_restart_grace_seconds()
    counts = WebProcess.objects.filter(last_seen__gte=_ago(FORGET_AFTER_SECONDS)).aggregate(
        known=Count("pk"),
        alive=Count("pk", filter=alive),
        settled=Count("pk", filter=alive & Q(started_at__lte=_ago(grace))),
    )
    if not counts["known"]:
        return None
    if not counts["alive"]:
        return DOWN
    return None if counts["settled"] else RESTARTED


def silence_excused() -> bool:
    """True while the dispatcher must not blame workers for silence (silence_excuse())."""
    return silence_excuse() is not None


def _ago(seconds: float) -> CombinedExpression:
    return Now() - timedelta(seconds=seconds)
