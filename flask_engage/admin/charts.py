"""Small inline SVG charts (no JavaScript, no CDN) that stay readable on a phone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 640, 220, 40
#: The x axis, along the bottom.
X_AXIS = (
    f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" class="axis"/>'
)


def _svg(label: str, content: str) -> Markup:
    """A chart: ``content`` in the chart's box, ``label`` for screen readers."""
    return Markup(
        f'<svg class="engage-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}">{content}</svg>'
    )
#: Days after sending in the charts of opens and clicks.
CHART_DAYS = 7


def line_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    unit: str = "%",
    top: float | None = None,
    rebuilt: Sequence[bool] = (),
) -> Markup:
    """A line chart of ``values`` (e.g. percent of all customers per day).

    Points flagged in ``rebuilt`` were reconstructed from today's data rather than
    recorded on their day: drawn hollow on a dashed line, and said so in their title.
    """
    if not values:
        return Markup('<p class="text-muted">No data yet.</p>')
    flags = list(rebuilt) + [False] * (len(values) - len(rebuilt))
    top = top if top is not None else max(max(values), 1e-9)
    step = (WIDTH - 2 * PAD) / max(len(values) - 1, 1)

    def x(i: int) -> float:
        return PAD + i * step

    def y(v: float) -> float:
        return HEIGHT - PAD - (v / top) * (HEIGHT - 2 * PAD) if top else HEIGHT - PAD

    def path(indexes: range) -> str:
        return " ".join(f"{x(i):.1f},{y(values[i]):.1f}" for i in indexes)

    # The whole series is one polyline (dashed when part of it is rebuilt); the
    # recorded days are drawn solid over it.
    first = len(values) - next((n for n, flag in enumerate(reversed(flags)) if flag), len(values))
    style = "line rebuilt" if first else "line"
    lines = [f'<polyline class="{style}" points="{path(range(len(values)))}"/>']
    if first and first < len(values) - 1:
        lines.append(f'<path class="line" d="M {path(range(first, len(values)))}"/>')
    hollow, note = ' class="rebuilt"', " (rebuilt from today’s data)"
    dots = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3"{hollow if flags[i] else ""}>'
        f"<title>{escape(labels[i])}: {v:g}{unit}{note if flags[i] else ''}</title></circle>"
        for i, v in enumerate(values)
    )
    return _svg(
        "size over time",
        f"{X_AXIS}"
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" class="axis"/>'
        f'<text x="2" y="{PAD - 8}" class="label">{top:g}{unit}</text>'
        f'<text x="2" y="{HEIGHT - PAD}" class="label">0</text>'
        f'<text x="{PAD}" y="{HEIGHT - 10}" class="label">{escape(labels[0])}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 10}" class="label" text-anchor="end">'
        f"{escape(labels[-1])}</text>"
        f"{''.join(lines)}{dots}",
    )


def bar_chart(labels: Sequence[str], values: Sequence[int]) -> Markup:
    """A bar chart of counts (sends per day); labels are ``YYYY-MM-DD``."""
    top = max(values) if values and max(values) > 0 else 1
    width = (WIDTH - 2 * PAD) / max(len(values), 1)
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = value / top * (HEIGHT - 2 * PAD)
        x = PAD + i * width
        bars.append(
            f'<rect class="bar" x="{x + 4:.1f}" y="{HEIGHT - PAD - height:.1f}" '
            f'width="{width - 8:.1f}" '
            f'height="{height:.1f}"><title>{escape(label)}: {value}</title></rect>'
            f'<text class="label" x="{x + width / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle">'
            f"{escape(label[8:])}</text>"
            f'<text class="label" x="{x + width / 2:.1f}" y="{HEIGHT - PAD - height - 6:.1f}" '
            f'text-anchor="middle">{value}</text>'
        )
    return _svg("sends per day", "".join(bars))


def grouped_bar_chart(
    labels: Sequence[str], series: Mapping[str, Sequence[int]], *, label: str
) -> Markup:
    """Bars of several counts side by side per label (opens and clicks per day), with a
    legend; ``label`` describes the chart for screen readers. Each bar's title says its
    series, label and count."""
    names = list(series)
    top = max((max(values, default=0) for values in series.values()), default=0) or 1
    group = (WIDTH - 2 * PAD) / max(len(labels), 1)
    bar = (group - 8) / max(len(names), 1)
    parts = []
    for i, text in enumerate(labels):
        x = PAD + i * group
        for n, name in enumerate(names):
            value = series[name][i]
            height = value / top * (HEIGHT - 2 * PAD)
            parts.append(
                f'<rect class="bar series-{n}" data-series="{escape(name)}" '
                f'x="{x + 4 + n * bar:.1f}" y="{HEIGHT - PAD - height:.1f}" '
                f'width="{max(bar - 2, 1):.1f}" height="{height:.1f}">'
                f"<title>{escape(name)}, {escape(text)}: {value}</title></rect>"
            )
            if value:
                parts.append(
                    f'<text class="label" x="{x + 4 + n * bar + bar / 2:.1f}" '
                    f'y="{HEIGHT - PAD - height - 4:.1f}" text-anchor="middle">{value}</text>'
                )
        parts.append(
            f'<text class="label" x="{x + group / 2:.1f}" y="{HEIGHT - 18}" '
            f'text-anchor="middle">{escape(text)}</text>'
        )
    legend = "".join(
        f'<rect class="bar series-{n}" x="{PAD + n * 130}" y="8" width="12" height="12"/>'
        f'<text class="label" x="{PAD + n * 130 + 16}" y="19">{escape(name)}</text>'
        for n, name in enumerate(names)
    )
    return _svg(label, f"{X_AXIS}{legend}{''.join(parts)}")


def engagement_chart(points: Sequence[Mapping[str, int]]) -> Markup:
    """First opens and clicks on each day after sending (``engage.engagement_by_day``'s
    points): by people, and (when there are any) by machines such as privacy proxies
    and link scanners."""
    series = {
        "opened": [p["opened"] for p in points],
        "clicked": [p["clicked"] for p in points],
    }
    machines = [p["machine_opened"] + p["machine_clicked"] for p in points]
    if any(machines):
        series["by machines"] = machines
    return grouped_bar_chart(
        ["day sent" if p["day"] == 0 else f"+{p['day']} d" for p in points],
        series,
        label="opens and clicks per day after sending",
    )
