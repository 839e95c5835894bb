"""What several dashboard pages share: the chart window; re-exports of the shared helpers."""

from __future__ import annotations

from django.http import HttpRequest

from accounts.dashboard import done
from jobs.services import stats
from taskforge.lib.snippets import first_steps

__all__ = ["done", "first_steps", "window_of"]


def window_of(request: HttpRequest) -> str:
    """The chart window the URL asks for (``?window=24h``); the shortest by default."""
    asked = request.GET.get("window", "")
    return asked if asked in stats.WINDOWS else next(iter(stats.WINDOWS))
