"""Template helpers of the dashboard: times, durations, counts, JSON and server-drawn charts.

Charts are SVG drawn here, on the server: no chart library, nothing fetched by the browser.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 1:
        return "now"
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h".replace(".0 h", " h")
    return f"{int(seconds // 86400)} d"


@register.simple_tag
def reltime(moment: datetime | None, now: datetime | None = None) -> SafeString | str:
    """``<time>`` with a relative text ("3 min ago", "in 2 h") and the exact UTC time on hover."""
    if moment is None:
        return "—"
    now = now or timezone.now()
    delta = (moment - now).total_seconds()
    text = _ago(delta)
    if text != "now":
        text = f"in {text}" if delta > 0 else f"{text} ago"
    exact = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return format_html('<time datetime="{}" title="{}">{}</time>', moment.isoformat(), exact, text)


@register.filter
def age(seconds: float | None) -> str:
    """A length of time in seconds, short: "45 s", "3 min", "2.5 h"."""
    if seconds is None:
        return "—"
    return _ago(seconds)


@register.filter
def duration(value: timedelta | float | None) -> str:
    """A run time: "850 ms", "12.3 s", "4 min 5 s", "2 h 3 min"."""
    if value is None:
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


@register.simple_tag
def between(start: datetime | None, end: datetime | None) -> str:
    """The duration from ``start`` to ``end`` (or to now while running)."""
    if start is None:
        return "—"
    return duration((end or timezone.now()) - start)


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%".replace(".0%", "%")


@register.filter
def short_id(value: Any) -> str:
    """The last 12 characters of a UUIDv7 (its first ones are the time, alike for neighbours)."""
    return str(value)[-12:]


@register.simple_tag
def sparkline(values: Sequence[int], label: str = "") -> SafeString:
    """A small line of ``values`` (oldest first) as SVG, 120 by 24."""
    width, height = 120, 24
    if not values:
        return mark_safe("")
    top = max(max(values), 1)
    step = width / max(len(values) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values)
    )
    return format_html(
        '<svg class="spark" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<polyline points="{}"/></svg>',
        width,
        height,
        label or f"last {len(values)} minutes, peak {top}",
        points,
    )


@register.simple_tag
def throughput_chart(buckets: Sequence[Any], bucket_label: str = "minute") -> SafeString:
    """Stacked bars of succeeded (below) and failed (above) per bucket, as SVG.

    ``buckets`` have ``start``, ``succeeded`` and ``failed``. Each bar carries a <title> with
    its time and figures, so hovering (or a screen reader) gives the numbers.
    """
    width, height, left, bottom = 720, 160, 36, 18
    plot_w, plot_h = width - left - 4, height - bottom - 6
    top = max((b.succeeded + b.failed for b in buckets), default=0)
    scale = plot_h / top if top else 0
    n = max(len(buckets), 1)
    bar_w = plot_w / n
    bars = []
    for i, bucket in enumerate(buckets):
        x = left + i * bar_w
        ok_h = bucket.succeeded * scale
        bad_h = bucket.failed * scale
        when = bucket.start.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        bars.append(
            (
                when,
                bucket.succeeded,
                bucket.failed,
                f"{x:.2f}",
                f"{6 + plot_h - ok_h:.2f}",
                f"{max(bar_w - 1, 0.5):.2f}",
                f"{ok_h:.2f}",
                f"{6 + plot_h - ok_h - bad_h:.2f}",
                f"{bad_h:.2f}",
            )
        )
    body = format_html_join(
        "",
        "<g><title>{}: {} succeeded, {} failed</title>"
        '<rect class="succeeded" x="{}" y="{}" width="{}" height="{}"/>'
        '<rect class="failed" x="{}" y="{}" width="{}" height="{}"/></g>',
        ((w, s, f, x, y, bw, h, x, fy, bw, fh) for w, s, f, x, y, bw, h, fy, fh in bars),
    )
    first = buckets[0].start.astimezone(UTC).strftime("%H:%M") if buckets else ""
    last = buckets[-1].start.astimezone(UTC).strftime("%H:%M") if buckets else ""
    if buckets and (buckets[-1].start - buckets[0].start) >= timedelta(days=2):
        first = buckets[0].start.astimezone(UTC).strftime("%b %d")
        last = buckets[-1].start.astimezone(UTC).strftime("%b %d")
    total_ok = sum(b.succeeded for b in buckets)
    total_bad = sum(b.failed for b in buckets)
    return format_html(
        '<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">'
        '<line class="axis" x1="{l}" y1="{base}" x2="{w}" y2="{base}"/>'
        '<text x="{tx}" y="12" text-anchor="end">{top}</text>'
        '<text x="{tx}" y="{base}" text-anchor="end">0</text>'
        "{body}"
        '<text x="{l}" y="{h1}">{first} UTC</text>'
        '<text x="{w}" y="{h1}" text-anchor="end">{last} UTC</text></svg>',
        w=width,
        h=height,
        label=f"{total_ok} succeeded and {total_bad} failed, one bar per {bucket_label}",
        l=left,
        base=6 + plot_h,
        tx=left - 4,
        top=top,
        body=body,
        h1=height - 3,
        first=first,
        last=last,
    )
