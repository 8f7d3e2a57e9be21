"""Small inline SVG charts (no JavaScript, no CDN)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 640, 200, 32


def line_chart(
    labels: Sequence[str], values: Sequence[float], *, unit: str = "%", top: float | None = None
) -> Markup:
    """A line chart of ``values`` (e.g. percent of all customers per day)."""
    if not values:
        return Markup('<p class="text-muted">No data yet.</p>')
    top = top if top is not None else max(max(values), 1e-9)
    step = (WIDTH - 2 * PAD) / max(len(values) - 1, 1)

    def y(v: float) -> float:
        return HEIGHT - PAD - (v / top) * (HEIGHT - 2 * PAD) if top else HEIGHT - PAD

    points = " ".join(f"{PAD + i * step:.1f},{y(v):.1f}" for i, v in enumerate(values))
    dots = "".join(
        f'<circle cx="{PAD + i * step:.1f}" cy="{y(v):.1f}" r="2.5"><title>{escape(labels[i])}: '
        f"{v:g}{unit}</title></circle>"
        for i, v in enumerate(values)
    )
    return Markup(
        f'<svg class="engage-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="size over time">'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        f'class="axis"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" class="axis"/>'
        f'<text x="2" y="{PAD}" class="label">{top:g}{unit}</text>'
        f'<text x="2" y="{HEIGHT - PAD}" class="label">0</text>'
        f'<text x="{PAD}" y="{HEIGHT - 8}" class="label">{escape(labels[0])}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" class="label" text-anchor="end">'
        f"{escape(labels[-1])}</text>"
        f'<polyline class="line" points="{points}"/>{dots}</svg>'
    )


def bar_chart(labels: Sequence[str], values: Sequence[int]) -> Markup:
    """A bar chart of counts (sends per day)."""
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
            f"{escape(label[5:])}</text>"
            f'<text class="label" x="{x + width / 2:.1f}" y="{HEIGHT - PAD - height - 4:.1f}" '
            f'text-anchor="middle">{value}</text>'
        )
    return Markup(
        f'<svg class="engage-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="sends per day">'
        f"{''.join(bars)}</svg>"
    )
