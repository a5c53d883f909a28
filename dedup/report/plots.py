"""Evaluation plots as self-contained SVG text: a precision-recall curve and a distance histogram.

Written by hand (no plotting library): a plot is a few axes, a polyline and some bars, and SVG keeps the
output a single small text file that any browser shows offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

import numpy as np
import numpy.typing as npt

PANEL_W, PANEL_H = 440, 340
_M_LEFT, _M_RIGHT, _M_TOP, _M_BOTTOM = 56, 16, 34, 46
_POS, _NEG, _MARK = "#1f77b4", "#d62728", "#2ca02c"
_FONT = 'font-family="sans-serif" font-size="11"'
_TITLE_FONT = 'font-family="sans-serif" font-size="13"'


class _Panel:
    """Maps data coordinates of one plot to SVG coordinates inside a ``PANEL_W`` x ``PANEL_H`` box."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        self.w = PANEL_W - _M_LEFT - _M_RIGHT
        self.h = PANEL_H - _M_TOP - _M_BOTTOM

    def px(self, x: float) -> float:
        span = self.x1 - self.x0 or 1.0
        return _M_LEFT + (x - self.x0) / span * self.w

    def py(self, y: float) -> float:
        span = self.y1 - self.y0 or 1.0
        return _M_TOP + self.h - (y - self.y0) / span * self.h

    def axes(self, title: str, x_label: str, y_label: str, ticks: int = 5) -> list[str]:
        out = [
            f'<rect x="{_M_LEFT}" y="{_M_TOP}" width="{self.w}" height="{self.h}" fill="white" stroke="#444"/>',
            f'<text x="{PANEL_W / 2:.1f}" y="20" text-anchor="middle" {_TITLE_FONT}>{escape(title)}</text>',
            f'<text x="{_M_LEFT + self.w / 2:.1f}" y="{PANEL_H - 8}" text-anchor="middle" {_FONT}>'
            f"{escape(x_label)}</text>",
            f'<text x="14" y="{_M_TOP + self.h / 2:.1f}" text-anchor="middle" {_FONT} '
            f'transform="rotate(-90 14 {_M_TOP + self.h / 2:.1f})">{escape(y_label)}</text>',
        ]
        for k in range(ticks + 1):
            xv = self.x0 + (self.x1 - self.x0) * k / ticks
            yv = self.y0 + (self.y1 - self.y0) * k / ticks
            x, y = self.px(xv), self.py(yv)
            bottom = _M_TOP + self.h
            out.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#444"/>')
            out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" {_FONT}>{_num(xv)}</text>')
            out.append(f'<line x1="{_M_LEFT - 4}" y1="{y:.1f}" x2="{_M_LEFT}" y2="{y:.1f}" stroke="#444"/>')
            out.append(f'<text x="{_M_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{_num(yv)}</text>')
        return out

    def legend(self, items: Sequence[tuple[str, str]]) -> list[str]:
        out = []
        for k, (colour, label) in enumerate(items):
            y = _M_TOP + 10 + 15 * k
            x = _M_LEFT + self.w - 150
            out.append(f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{colour}"/>')
            out.append(f'<text x="{x + 14}" y="{y + 1}" {_FONT}>{escape(label)}</text>')
        return out


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:.0f}"


def _document(panels: Sequence[list[str]], title: str) -> str:
    width = PANEL_W * len(panels)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{PANEL_H}" viewBox="0 0 {width} {PANEL_H}">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{width}" height="{PANEL_H}" fill="#fafafa"/>',
    ]
    for k, body in enumerate(panels):
        parts.append(f'<g transform="translate({k * PANEL_W},0)">')
        parts.extend(body)
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _pr_panel(precision: npt.ArrayLike, recall: npt.ArrayLike, chosen: tuple[float, float, float] | None) -> list[str]:
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    lo = float(min(0.9, np.floor(p.min() * 10) / 10)) if p.size else 0.0
    panel = _Panel((0.0, 1.0), (lo, 1.0))
    body = panel.axes("Precision-recall (threshold sweep)", "recall", "precision")
    if p.size:
        points = " ".join(f"{panel.px(x):.1f},{panel.py(y):.1f}" for x, y in zip(r, p, strict=True))
        body.append(f'<polyline points="{points}" fill="none" stroke="{_POS}" stroke-width="1.8"/>')
    if chosen is not None:
        cr, cp, ct = chosen
        x, y = panel.px(cr), panel.py(max(lo, cp))
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{_MARK}" stroke="black"/>')
        label = f"threshold {ct:.4g}: P {cp:.3f}, R {cr:.3f}"
        anchor = "end" if x > _M_LEFT + panel.w * 0.6 else "start"
        dx = -8 if anchor == "end" else 8
        body.append(f'<text x="{x + dx:.1f}" y="{y + 16:.1f}" text-anchor="{anchor}" {_FONT}>{escape(label)}</text>')
    return body


def _histogram_panel(
    positive: npt.ArrayLike, negative: npt.ArrayLike, threshold: float | None, bins: int, x_label: str
) -> list[str]:
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    both = np.concatenate([pos, neg])
    hi = float(both.max()) if both.size else 1.0
    hi = max(hi, threshold or 0.0, 1e-9)
    edges = np.linspace(0.0, hi, bins + 1)
    # Shares per class, not counts: negatives outnumber duplicates by orders of magnitude.
    shares = [np.histogram(x, edges)[0] / max(1, x.size) for x in (pos, neg)]
    top = float(max(s.max() for s in shares)) if both.size else 1.0
    panel = _Panel((0.0, hi), (0.0, top or 1.0))
    body = panel.axes("Pair distances", x_label, "share of pairs in the class")
    width = panel.w / bins
    for colour, share in zip((_POS, _NEG), shares, strict=True):
        for k, s in enumerate(share):
            if s <= 0:
                continue
            x, y = panel.px(edges[k]), panel.py(s)
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{panel.py(0) - y:.1f}" '
                f'fill="{colour}" fill-opacity="0.5"/>'
            )
    legend = [(_POS, f"duplicates ({pos.size:,})"), (_NEG, f"not duplicates ({neg.size:,})")]
    if threshold is not None:
        x = panel.px(threshold)
        body.append(
            f'<line x1="{x:.1f}" y1="{_M_TOP}" x2="{x:.1f}" y2="{panel.py(0):.1f}" stroke="{_MARK}" '
            'stroke-width="2" stroke-dasharray="5,3"/>'
        )
        legend.append((_MARK, f"threshold {threshold:.4g}"))
    body.extend(panel.legend(legend))
    return body


def pr_curve_svg(
    precision: npt.ArrayLike, recall: npt.ArrayLike, chosen: tuple[float, float, float] | None = None
) -> str:
    """A precision-recall curve; ``chosen`` = ``(recall, precision, threshold)`` is marked on it."""
    return _document([_pr_panel(precision, recall, chosen)], "precision-recall curve")


def distance_histogram_svg(
    positive: npt.ArrayLike,
    negative: npt.ArrayLike,
    threshold: float | None = None,
    bins: int = 40,
    x_label: str = "distance",
) -> str:
    """Histograms of duplicate and non-duplicate pair distances (each as shares of its class), threshold marked."""
    return _document([_histogram_panel(positive, negative, threshold, bins, x_label)], "pair distances")


def sweep_svg(
    precision: npt.ArrayLike,
    recall: npt.ArrayLike,
    positive: npt.ArrayLike,
    negative: npt.ArrayLike,
    chosen: tuple[float, float, float] | None = None,
    bins: int = 40,
    title: str = "dedup evaluate: threshold sweep",
) -> str:
    """One SVG with the precision-recall curve (``chosen`` marked) beside the distance histogram.

    ``chosen`` is ``(recall, precision, threshold)`` of the threshold in use; its threshold is also
    drawn on the histogram.
    """
    threshold = chosen[2] if chosen is not None else None
    return _document(
        [_pr_panel(precision, recall, chosen), _histogram_panel(positive, negative, threshold, bins, "distance")],
        title,
    )
