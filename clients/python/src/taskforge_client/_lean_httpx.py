"""Import httpx without its command-line client.

``import httpx`` also imports ``httpx._main`` (the ``httpx`` command) whenever ``click`` and
``rich`` are installed, and with them ``rich.console`` and ``pygments``: about 5 MB of memory in
every worker process, for a command the SDK never runs. When httpx is not imported yet, this
module puts a stand-in for ``httpx._main`` in place first; ``httpx.main`` then says how to get
the real command. Import httpx from here, never directly, so the order holds.
"""

from __future__ import annotations

import sys
import types

if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    _stand_in = types.ModuleType("httpx._main")

    def _main() -> None:
        raise SystemExit("taskforge_client leaves the httpx command out: run `python -m httpx`")

    _stand_in.main = _main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = _stand_in

import httpx

__all__ = ["httpx"]
