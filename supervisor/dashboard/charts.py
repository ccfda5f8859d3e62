"""Time series for the overview's plots, from the supervisors' histories, drawn as inline SVG (no JS library).

Rates come from consecutive samples of one supervisor (its counters only go up); each rate lands in the bucket of
the later sample, is averaged within a bucket per supervisor, and summed across supervisors. Queue depth (due
jobs) and pickup lag are queue-wide values every supervisor measures: a bucket shows the largest seen in it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .fleet import HOUR_MS, rate

BUCKETS = 60
MIN_BUCKET_MS = 2000
MIN_WINDOW_MS = 600_000


@dataclass(frozen=True)
class Series:
    start_ms: int
    bucket_ms: int
    jobs_per_s: list[float | None]
    failures_per_s: list[float | None]
    depth: list[float | None]
    lag_s: list[float | None]


def build_series(histories: Iterable[Sequence[dict[str, Any]]], now_ms: int) -> Series:
    histories = [h for h in histories if h]
    earliest = min((int(h[0]['t']) for h in histories), default=now_ms)
    start = max(now_ms - HOUR_MS, min(earliest, now_ms - MIN_WINDOW_MS))  # grows from 10 min to the last hour
    bucket_ms = max((now_ms - start) // BUCKETS + 1, MIN_BUCKET_MS)
    n = (now_ms - start) // bucket_ms + 1

    def index(t: int) -> int | None:
        i = (t - start) // bucket_ms
        return i if 0 <= i < n else None

    jobs: list[float | None] = [None] * n
    failures: list[float | None] = [None] * n
    depth: list[float | None] = [None] * n
    lag: list[float | None] = [None] * n
    for samples in histories:
        _add_rates(samples, index, jobs, ('c', 'f', 'r'))
        _add_rates(samples, index, failures, ('f',))
        for s in samples:
            i = index(int(s['t']))
            if i is not None:
                depth[i] = max(depth[i] or 0.0, float(s.get('d', 0)))
                lag[i] = max(lag[i] or 0.0, float(s.get('lag', 0)) / 1000)
    return Series(start, bucket_ms, jobs, failures, depth, lag)


def _add_rates(samples: Sequence[dict[str, Any]], index: Any, out: list[float | None], fields: tuple[str, ...]) -> None:
    per_bucket: dict[int, list[float]] = {}
    for a, b in zip(samples, samples[1:], strict=False):
        r = rate(a, b, fields)
        i = index(int(b['t']))
        if r is not None and i is not None:
            per_bucket.setdefault(i, []).append(r)
    for i, rates in per_bucket.items():
        out[i] = (out[i] or 0.0) + sum(rates) / len(rates)


W, H, PAD_L, PAD_B, PAD_T = 320, 110, 38, 18, 8


def svg_chart(values: Sequence[float | None], *, title: str, unit: str, bucket_ms: int, css_class: str) -> str:
    """A small line chart; gaps where no supervisor reported. Only numbers and the given constant labels go in."""
    known = [v for v in values if v is not None]
    top = _nice_max(max(known, default=0.0))
    plot_w, plot_h = W - PAD_L - 4, H - PAD_B - PAD_T
    step = plot_w / max(len(values) - 1, 1)
    paths: list[list[str]] = []
    current: list[str] = []
    for i, v in enumerate(values):
        if v is None:
            if current:
                paths.append(current)
            current = []
            continue
        current.append(f'{PAD_L + i * step:.1f},{PAD_T + plot_h - (v / top) * plot_h:.1f}')
    if current:
        paths.append(current)
    lines = ''.join(f'<polyline points="{" ".join(p)}"/>' if len(p) > 1 else _dot(p[0]) for p in paths)
    span_min = round(len(values) * bucket_ms / 60000)
    last = f'{known[-1]:.3g}' if known else 'no data'
    label = html.escape(title)
    return (
        f'<svg class="chart {html.escape(css_class)}" viewBox="0 0 {W} {H}" role="img" aria-label="{label}">'
        f'<title>{label}: {last} {html.escape(unit)} now</title>'
        f'<line class="axis" x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{W - 4}" y2="{PAD_T + plot_h}"/>'
        f'<line class="grid" x1="{PAD_L}" y1="{PAD_T}" x2="{W - 4}" y2="{PAD_T}"/>'
        f'<text x="{PAD_L - 4}" y="{PAD_T + 4}" text-anchor="end">{top:.3g}</text>'
        f'<text x="{PAD_L - 4}" y="{PAD_T + plot_h}" text-anchor="end">0</text>'
        f'<text x="{PAD_L}" y="{H - 3}">−{span_min} min</text>'
        f'<text x="{W - 4}" y="{H - 3}" text-anchor="end">now</text>'
        f'<g class="line">{lines}</g></svg>'
    )


def _dot(point: str) -> str:
    x, y = point.split(',')
    return f'<circle cx="{x}" cy="{y}" r="2"/>'


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `value` (at least 1), so the axis reads well."""
    if value <= 1:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for m in (1, 2, 5, 10):
        if value <= m * magnitude:
            return float(m * magnitude)
    return float(10 * magnitude)
