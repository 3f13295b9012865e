"""Bar charts drawn on the server as inline SVG: no script and no third-party library, so they pass the
workspace's Content-Security-Policy (no script, styles only from its own stylesheet — the bars are coloured by
class) and print as they are shown.

Accessibility (WCAG 2.1 1.1.1, 1.4.1): each chart is `role="img"` with a `<title>` and a `<desc>` that states
what it shows; each bar has its own `<title>` with its numbers; the two series differ by pattern position
(stacked, with a legend) as well as by colour; and the page gives the same numbers as a table.

`stacked_columns` and `stacked_bars` only compute geometry: the template draws it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    series: int  # 0 = disclosures, 1 = denials: the CSS class of the bar
    x: float
    y: float
    width: float
    height: float
    value: int


@dataclass(frozen=True)
class Group:
    label: str
    title: str  # the bar's tooltip and accessible name: the label and its numbers
    segments: tuple[Segment, ...]
    label_x: float
    label_y: float
    show_label: bool


@dataclass(frozen=True)
class Tick:
    value: int
    position: float  # y for columns, x for bars


@dataclass(frozen=True)
class Chart:
    width: float
    height: float
    groups: tuple[Group, ...]
    ticks: tuple[Tick, ...]
    plot_left: float
    plot_top: float
    plot_right: float
    plot_bottom: float
    maximum: int
    extra: dict[str, float] = field(default_factory=dict)


def nice_maximum(value: int) -> int:
    """The axis' top: at least the largest value, rounded up to 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _ticks(maximum: int, count: int = 4) -> list[int]:
    step = max(1, maximum // count)
    return list(range(0, maximum + 1, step))


def stacked_columns(
    labels: Sequence[str],
    values: Sequence[tuple[int, int]],
    titles: Sequence[str],
    *,
    width: float = 720,
    height: float = 260,
    every_label: int = 5,
) -> Chart:
    """Vertical stacked columns, one per label (a day), the first series at the bottom."""
    left, right, top, bottom = 44.0, 8.0, 12.0, 36.0
    plot_width, plot_height = width - left - right, height - top - bottom
    maximum = nice_maximum(max((a + b for a, b in values), default=0))
    slot = plot_width / max(len(labels), 1)
    bar = max(slot * 0.7, 1.0)
    groups = []
    for i, (label, (first, second), title) in enumerate(zip(labels, values, titles, strict=True)):
        x = left + i * slot + (slot - bar) / 2
        segments = []
        base = top + plot_height
        for series, value in ((0, first), (1, second)):
            h = plot_height * value / maximum
            if value:
                segments.append(Segment(series, round(x, 2), round(base - h, 2), round(bar, 2), round(h, 2), value))
            base -= h
        groups.append(
            Group(
                label=label,
                title=title,
                segments=tuple(segments),
                label_x=round(x + bar / 2, 2),
                label_y=top + plot_height + 16,
                show_label=i % every_label == 0 or i == len(labels) - 1,
            )
        )
    ticks = tuple(Tick(v, round(top + plot_height - plot_height * v / maximum, 2)) for v in _ticks(maximum))
    return Chart(width, height, tuple(groups), ticks, left, top, left + plot_width, top + plot_height, maximum)


def stacked_bars(
    labels: Sequence[str],
    values: Sequence[tuple[int, int]],
    titles: Sequence[str],
    *,
    width: float = 720,
    row: float = 26,
    label_width: float = 240,
) -> Chart:
    """Horizontal stacked bars, one per label (an organisation), with the label to the left of its bar."""
    right, top, bottom = 16.0, 8.0, 28.0
    left = label_width
    plot_width = width - left - right
    height = top + bottom + row * max(len(labels), 1)
    maximum = nice_maximum(max((a + b for a, b in values), default=0))
    groups = []
    for i, (label, (first, second), title) in enumerate(zip(labels, values, titles, strict=True)):
        y = top + i * row + row * 0.15
        thickness = row * 0.7
        segments = []
        start = left
        for series, value in ((0, first), (1, second)):
            w = plot_width * value / maximum
            if value:
                segments.append(Segment(series, round(start, 2), round(y, 2), round(w, 2), round(thickness, 2), value))
            start += w
        groups.append(
            Group(
                label=label,
                title=title,
                segments=tuple(segments),
                label_x=left - 6,
                label_y=round(y + thickness * 0.75, 2),
                show_label=True,
            )
        )
    plot_bottom = top + row * max(len(labels), 1)
    ticks = tuple(Tick(v, round(left + plot_width * v / maximum, 2)) for v in _ticks(maximum))
    return Chart(width, height, tuple(groups), ticks, left, top, left + plot_width, plot_bottom, maximum)
