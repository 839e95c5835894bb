"""One LISTEN connection per web process, shared by every long-poll running in it.

A long-poll (GET /workers/{id}/jobs?wait=) subscribes to a few keys and sleeps on one
threading.Event; this hub's thread LISTENs on every channel in use and sets the events when a
NOTIFY arrives. A key is either a channel (``taskforge_worker_<id>``: the worker was drained,
deregistered or its queues changed) or ``channel:payload`` (``taskforge_jobs:<queue id>``: jobs
of that queue became pending, jobs/sql/notify_ready.sql). A notification on a channel wakes the
waiters of the channel itself and of ``channel:payload``; one with an empty payload wakes every
waiter with a key on that channel (a sender that does not know which queues). So every web
process LISTENs on taskforge_jobs once, and a submit wakes only the long-polls of the workers
serving its queue. A channel stays listened for a while after its last waiter leaves, since
the same worker polls again at once. If the database is unreachable, waiters fall back to
re-checking on a short timer (the caller's loop), so nothing waits forever.

When the process is told to stop (SIGTERM: deploy/gunicorn.conf.py calls end_long_polls()),
every waiting long-poll is woken and answers at once, with whatever it has (usually no jobs),
and later ones do not wait: a graceful stop or reload must not sit out the long-polls' 30 s,
during which the workers could report nothing and would look dead. Their next poll reaches the
process that replaces this one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

logger = logging.getLogger("taskforge.notifications")

# A channel with no waiter for this long is UNLISTENed.
IDLE_CHANNEL_SECONDS = 300.0
# The hub's thread applies new LISTENs between waits of this length.
POLL_SLICE_SECONDS = 0.05


class NotificationHub:
    def __init__(self, connect: Callable[[], psycopg.Connection[Any]]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        # Waiting events by key, and the keys in use on each channel.
        self._waiters: dict[str, set[threading.Event]] = defaultdict(set)
        self._keys: dict[str, set[str]] = defaultdict(set)
        self._last_used: dict[str, float] = {}
        self._listening: set[str] = set()
        self._to_listen: set[str] = set()
        self._ready: dict[str, threading.Event] = {}
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def subscribe(
        self,
        keys: str | Sequence[str],
        *,
        event: threading.Event | None = None,
        ready_timeout: float = 1.0,
    ) -> threading.Event:
        """Return an event set on the next NOTIFY matching any of ``keys`` (``channel`` or
        ``channel:payload``); pass ``event`` to add keys to an event subscribed before.

        Returns once the channels are LISTENed (or ``ready_timeout`` passed), so a caller that
        checks the database after subscribing cannot miss a notification sent in between.
        """
        event = event or threading.Event()
        keys = [keys] if isinstance(keys, str) else list(keys)
        pending = []
        with self._lock:
            now = time.monotonic()
            for key in keys:
                channel = key.partition(":")[0]
                self._waiters[key].add(event)
                self._keys[channel].add(key)
                self._last_used[channel] = now
                ready = self._ready.get(channel)
                if ready is None:
                    ready = self._ready[channel] = threading.Event()
                    self._to_listen.add(channel)
                pending.append(ready)
            self._start()
        deadline = time.monotonic() + ready_timeout
        for ready in pending:
            ready.wait(max(0.0, deadline - time.monotonic()))
        return event

    def wake_all(self) -> None:
        """Set the event of every waiter, on every channel."""
        with self._lock:
            for waiters in self._waiters.values():
                for event in waiters:
                    event.set()

    def unsubscribe(self, keys: str | Sequence[str], event: threading.Event) -> None:
        keys = [keys] if isinstance(keys, str) else list(keys)
        with self._lock:
            now = time.monotonic()
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[key]
                        channel = key.partition(":")[0]
                        self._keys[channel].discard(key)
                        self._last_used[channel] = now

    def stop(self, timeout: float = 2.0) -> None:
        """End the hub's thread and close its connection (tests, process shutdown)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
        self._stopping.clear()
        with self._lock:
            self._listening.clear()
            self._ready.clear()
            self._to_listen.clear()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="taskforge-notify", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    self._serve(conn)
            except psycopg.Error as exc:
                logger.warning("notification hub lost its connection (%s); reconnecting", exc)
                with self._lock:
                    # Everything must be LISTENed again on the new connection.
                    self._to_listen |= self._listening
                    self._listening.clear()
                self._stopping.wait(1.0)

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stopping.is_set():
            self._apply_listens(conn)
            for notify in conn.notifies(timeout=POLL_SLICE_SECONDS):
                self._wake(notify.channel, notify.payload)

    def _wake(self, channel: str, payload: str) -> None:
        with self._lock:
            keys = [channel, f"{channel}:{payload}"] if payload else self._keys.get(channel, ())
            for key in keys:
                for event in self._waiters.get(key, ()):
                    event.set()

    def _apply_listens(self, conn: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        with self._lock:
            to_listen, self._to_listen = self._to_listen, set()
            idle = [
                channel
                for channel in self._listening
                if not self._keys.get(channel)
                and now - self._last_used.get(channel, now) > IDLE_CHANNEL_SECONDS
            ]
        for channel in to_listen:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        for channel in idle:
            conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
        with self._lock:
            self._listening |= to_listen
            for channel in to_listen:
                self._ready[channel].set()
            for channel in idle:
                self._listening.discard(channel)
                self._ready.pop(channel, None)
                self._keys.pop(channel, None)
                self._last_used.pop(channel, None)


_hub: NotificationHub | None = None
_hub_lock = threading.Lock()
_ending = threading.Event()


def end_long_polls() -> None:
    """Make every long-poll of this process answer now, and the later ones not wait.

    Safe in a signal handler: it only sets an event and leaves the waking of the waiters (which
    takes the hub's lock) to a thread of its own.
    """
    _ending.set()
    threading.Thread(target=_wake_all, name="taskforge-end-long-polls", daemon=True).start()


def long_polls_ending() -> bool:
    """True once end_long_polls() was called: the process is shutting down."""
    return _ending.is_set()


def _wake_all() -> None:
    with _hub_lock:
        current = _hub
    if current is not None:
        current.wake_all()


def hub() -> NotificationHub:
    """The process's hub, connected like Django's default database."""
    global _hub
    with _hub_lock:
        if _hub is None:
            _hub = NotificationHub(_connect_like_django)
        return _hub


def stop_hub() -> None:
    """Stop the process's hub if it runs (its connection would keep a test database open)."""
    with _hub_lock:
        if _hub is not None:
            _hub.stop()


def _connect_like_django() -> psycopg.Connection[Any]:
    from django.db import connection

    keep = {"dbname", "user", "password", "host", "port", "sslmode", "sslrootcert"}
    params = {k: v for k, v in connection.get_connection_params().items() if k in keep}
    return psycopg.connect(**params, autocommit=True, application_name="taskforge-longpoll")
