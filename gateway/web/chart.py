"""A small inline SVG chart of one sensor's recent activity, drawn by the gateway itself (no
charting library, no script): the people count as a line, people in and out per interval as bars.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from markupsafe import Markup, escape

from gateway.web.records import TREND_SPAN_S, Sample

WIDTH = 720
HEIGHT = 220
LEFT = 44
RIGHT = 12
TOP = 18
SPLIT = 118  # bottom of the count panel
BARS_TOP = 142
BOTTOM = 196
BUCKETS = 36
MIN_SPAN_S = 600.0


def _nice_max(v: float) -> float:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if v <= step:
            return float(step)
    return float(int(v) + 1)


def _span_text(span: float) -> str:
    if span < 60:
        return f"{span:.0f} s"
    return f"{span / 60:.3g} minutes" if span < 3600 else f"{span / 3600:.3g} hours"


def _label(x: float, y: float, text: str, anchor: str) -> str:
    return f'<text class="axis" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{text}</text>'


def _clock(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


def span_for(samples: Sequence[Sample], now: float) -> float:
    """The window shown: the last hours, or less while the gateway has not been up that long
    (so a fresh start does not squeeze its first minutes into one edge)."""
    if not samples:
        return MIN_SPAN_S
    seen = now - samples[0].at
    for step in (MIN_SPAN_S, 1800.0, 3600.0, 7200.0):
        if seen <= step:
            return step
    return TREND_SPAN_S


def render(
    samples: Sequence[Sample], *, now: float | None = None, span: float | None = None
) -> Markup:
    now = time.time() if now is None else now
    span = span_for(samples, now) if span is None else span
    start = now - span
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + (t - start) / span * plot_w

    people = [(s.at, s.people) for s in samples if s.people is not None]
    peak = _nice_max(max((p for _, p in people), default=1.0) or 1.0)

    def y(v: float) -> float:
        return SPLIT - v / peak * (SPLIT - TOP)

    # In/out per bucket from the growth of the gateway's totals (a reset shows as no growth).
    bucket_w = span / BUCKETS
    ins = [0.0] * BUCKETS
    outs = [0.0] * BUCKETS
    prev: Sample | None = None
    for s in samples:
        if prev is not None and s.total_in is not None and prev.total_in is not None:
            b = min(BUCKETS - 1, max(0, int((s.at - start) / bucket_w)))
            ins[b] += max(0.0, s.total_in - prev.total_in)
            if s.total_out is not None and prev.total_out is not None:
                outs[b] += max(0.0, s.total_out - prev.total_out)
        prev = s
    flow_peak = _nice_max(max([*ins, *outs, 1.0]))

    label = (
        f"People count and people in/out over the last {_span_text(span)}: "
        f"{len(people)} samples, highest count {max((p for _, p in people), default=0):g}, "
        f"{sum(ins):g} in and {sum(outs):g} out."
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(label)}</title>",
    ]
    # Grid and axes.
    for frac in (0.0, 0.5, 1.0):
        gy = y(peak * frac)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}"/>'
        )
        parts.append(_label(LEFT - 6, gy + 4, f"{peak * frac:g}", "end"))
    parts.append(
        f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{BOTTOM}" y2="{BOTTOM}"/>'
    )
    parts.append(_label(LEFT - 6, BARS_TOP + 4, f"{flow_peak:g}", "end"))
    parts.append(
        f'<text class="legend" x="{WIDTH - RIGHT}" y="{BARS_TOP - 4}" text-anchor="end">'
        f"in and out per {_span_text(bucket_w)}</text>"
    )
    for i in range(7):
        t = start + span * i / 6
        anchor = "start" if i == 0 else ("end" if i == 6 else "middle")
        parts.append(_label(x(t), HEIGHT - 6, _clock(t), anchor))
    parts.append(f'<text class="legend people" x="{LEFT + 4}" y="{TOP - 2}">people</text>')
    parts.append(f'<text class="legend in" x="{LEFT + 64}" y="{TOP - 2}">in</text>')
    parts.append(f'<text class="legend out" x="{LEFT + 90}" y="{TOP - 2}">out</text>')
    parts.append(
        f'<text class="legend" x="{WIDTH - RIGHT}" y="{TOP - 2}" text-anchor="end">'
        f"last {_span_text(span)}</text>"
    )
    # Bars: in to the left half of a bucket, out to the right half.
    scale = (BOTTOM - BARS_TOP) / flow_peak
    slot = plot_w / BUCKETS
    for b in range(BUCKETS):
        bx = LEFT + b * slot
        for value, cls, offset in ((ins[b], "in", 1.0), (outs[b], "out", slot / 2)):
            if value > 0:
                h = value * scale
                parts.append(
                    f'<rect class="bar {cls}" x="{bx + offset:.1f}" y="{BOTTOM - h:.1f}" '
                    f'width="{slot / 2 - 1.5:.1f}" height="{h:.1f}"/>'
                )
    # The count as a step line: a value holds until the next sample.
    if people:
        points = []
        last_y = None
        for t, v in people:
            px, py = x(max(t, start)), y(v)
            if last_y is not None:
                points.append(f"{px:.1f},{last_y:.1f}")
            points.append(f"{px:.1f},{py:.1f}")
            last_y = py
        points.append(f"{x(now):.1f},{last_y:.1f}")
        parts.append(f'<polyline class="line people" points="{" ".join(points)}"/>')
    else:
        parts.append(
            f'<text class="empty" x="{WIDTH / 2}" y="{(TOP + SPLIT) / 2}" text-anchor="middle">'
            "no reports in this window yet</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every interpolated text is escaped above)
