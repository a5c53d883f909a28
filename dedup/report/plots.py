"""Evaluation plots as self-contained SVG text: a precision-recall curve and a distance histogram.

Written by hand (no plotting library): a plot is a few axes, a polyline and some bars, and SVG keeps the
output a single small text file that any browser shows offline. The geometry (:class:`_Panel`) and the data
preparation (:func:`pr_floor`, :func:`bin_distances`, :func:`histogram_legend`, :func:`chosen_label`) are
shared with the PNG renderer, :mod:`dedup.report.plots_png`, so both formats draw the same figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
import numpy.typing as npt

PANEL_W, PANEL_H = 440, 340
_M_LEFT, _M_RIGHT, _M_TOP, _M_BOTTOM = 56, 16, 34, 46
_POS, _NEG, _MARK = "#1f77b4", "#d62728", "#2ca02c"
#: Opacity of the histogram bars: the two classes overlap, and both must stay visible where they do.
BAR_OPACITY = 0.5
#: Opacity of the legend's white backing box: the bars stay faintly visible behind it.
LEGEND_OPACITY = 0.85
_FONT = 'font-family="sans-serif" font-size="11"'
_TITLE_FONT = 'font-family="sans-serif" font-size="13"'
PR_TITLE = "Precision-recall (threshold sweep)"
HISTOGRAM_TITLE = "Pair distances"


class _Panel:
    """Maps data coordinates of one plot to SVG coordinates inside a ``PANEL_W`` x ``PANEL_H`` box."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        self.w = PANEL_W - _M_LEFT - _M_RIGHT
        self.h = PANEL_H - _M_TOP - _M_BOTTOM

    @property
    def bottom(self) -> float:
        """The y of the x axis (the bottom edge of the plotting area)."""
        return _M_TOP + self.h

    def px(self, x: float) -> float:
        span = self.x1 - self.x0 or 1.0
        return _M_LEFT + (x - self.x0) / span * self.w

    def py(self, y: float) -> float:
        span = self.y1 - self.y0 or 1.0
        return _M_TOP + self.h - (y - self.y0) / span * self.h

    def x_ticks(self, ticks: int = 5) -> list[tuple[float, str]]:
        """``(position, label)`` of the evenly spaced ticks of the x axis."""
        return [(self.px(v), _num(v)) for v in np.linspace(self.x0, self.x1, ticks + 1).tolist()]

    def y_ticks(self, ticks: int = 5) -> list[tuple[float, str]]:
        """``(position, label)`` of the evenly spaced ticks of the y axis."""
        return [(self.py(v), _num(v)) for v in np.linspace(self.y0, self.y1, ticks + 1).tolist()]

    def legend_rows(self, count: int) -> list[tuple[float, float]]:
        """Top-right ``(x, baseline y)`` of each legend row: the swatch sits left of x, the label after it."""
        return [(_M_LEFT + self.w - 150, _M_TOP + 10 + 15 * k) for k in range(count)]

    def axes(self, title: str, x_label: str, y_label: str, ticks: int = 5) -> list[str]:
        bottom = self.bottom
        out = [
            f'<rect x="{_M_LEFT}" y="{_M_TOP}" width="{self.w}" height="{self.h}" fill="white" stroke="#444"/>',
            f'<text x="{PANEL_W / 2:.1f}" y="20" text-anchor="middle" {_TITLE_FONT}>{escape(title)}</text>',
            f'<text x="{_M_LEFT + self.w / 2:.1f}" y="{PANEL_H - 8}" text-anchor="middle" {_FONT}>'
            f"{escape(x_label)}</text>",
            f'<text x="14" y="{_M_TOP + self.h / 2:.1f}" text-anchor="middle" {_FONT} '
            f'transform="rotate(-90 14 {_M_TOP + self.h / 2:.1f})">{escape(y_label)}</text>',
        ]
        for (x, x_text), (y, y_text) in zip(self.x_ticks(ticks), self.y_ticks(ticks), strict=True):
            out.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#444"/>')
            out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" {_FONT}>{x_text}</text>')
            out.append(f'<line x1="{_M_LEFT - 4}" y1="{y:.1f}" x2="{_M_LEFT}" y2="{y:.1f}" stroke="#444"/>')
            out.append(f'<text x="{_M_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{y_text}</text>')
        return out

    def legend_box(self, count: int) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of the legend's backing box, which keeps its labels readable over the bars."""
        rows = self.legend_rows(count)
        return rows[0][0] - 5, rows[0][1] - 12, _M_LEFT + self.w - 3, rows[-1][1] + 5

    def legend(self, items: Sequence[tuple[str, str]]) -> list[str]:
        x0, y0, x1, y1 = self.legend_box(len(items))
        out = [
            f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="white" '
            f'fill-opacity="{LEGEND_OPACITY}" stroke="#ccc"/>'
        ]
        for (colour, label), (x, y) in zip(items, self.legend_rows(len(items)), strict=True):
            out.append(f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{colour}"/>')
            out.append(f'<text x="{x + 14}" y="{y + 1}" {_FONT}>{escape(label)}</text>')
        return out


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:.0f}"


@dataclass(frozen=True)
class Histogram:
    """Duplicate and non-duplicate distances binned on shared edges, as shares of their class."""

    edges: np.ndarray  # bins + 1 edges from 0 to x_max
    shares: tuple[np.ndarray, np.ndarray]  # (duplicates, not duplicates): share of the class per bin
    counts: tuple[int, int]  # pairs per class
    x_max: float
    y_max: float


def bin_distances(positive: npt.ArrayLike, negative: npt.ArrayLike, threshold: float | None, bins: int) -> Histogram:
    """Bin both classes on ``bins`` equal bins from 0 to the largest distance (or the threshold, if beyond)."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    both = np.concatenate([pos, neg])
    hi = float(both.max()) if both.size else 1.0
    hi = max(hi, threshold or 0.0, 1e-9)
    edges = np.linspace(0.0, hi, bins + 1)
    # Shares per class, not counts: negatives outnumber duplicates by orders of magnitude.
    pos_share, neg_share = (np.histogram(x, edges)[0] / max(1, x.size) for x in (pos, neg))
    top = float(max(pos_share.max(), neg_share.max())) if both.size else 1.0
    return Histogram(edges, (pos_share, neg_share), (int(pos.size), int(neg.size)), hi, top or 1.0)


def histogram_legend(hist: Histogram, threshold: float | None) -> list[tuple[str, str]]:
    """``(colour, label)`` rows of the histogram's legend: both classes with their sizes, then the threshold."""
    n_pos, n_neg = hist.counts
    items = [(_POS, f"duplicates ({n_pos:,})"), (_NEG, f"not duplicates ({n_neg:,})")]
    if threshold is not None:
        items.append((_MARK, f"threshold {threshold:.4g}"))
    return items


def pr_floor(precision: np.ndarray) -> float:
    """Lower end of the precision axis: a tenth below the lowest precision, but never above 0.9."""
    # Precision rarely drops far on a sweep; starting the axis at 0 would flatten the curve into the top edge.
    return float(min(0.9, np.floor(precision.min() * 10) / 10)) if precision.size else 0.0


def chosen_label(chosen: tuple[float, float, float]) -> str:
    """The text beside the marked point of the PR curve: ``chosen`` = ``(recall, precision, threshold)``."""
    cr, cp, ct = chosen
    return f"threshold {ct:.4g}: P {cp:.3f}, R {cr:.3f}"


def label_on_left(panel: _Panel, x: float) -> bool:
    """Whether a label beside a point at ``x`` goes to its left (the point is near the right edge)."""
    return x > _M_LEFT + panel.w * 0.6


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
    lo = pr_floor(p)
    panel = _Panel((0.0, 1.0), (lo, 1.0))
    body = panel.axes(PR_TITLE, "recall", "precision")
    if p.size:
        points = " ".join(f"{panel.px(x):.1f},{panel.py(y):.1f}" for x, y in zip(r, p, strict=True))
        body.append(f'<polyline points="{points}" fill="none" stroke="{_POS}" stroke-width="1.8"/>')
    if chosen is not None:
        cr, cp, _ = chosen
        x, y = panel.px(cr), panel.py(max(lo, cp))
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{_MARK}" stroke="black"/>')
        anchor, dx = ("end", -8) if label_on_left(panel, x) else ("start", 8)
        label = escape(chosen_label(chosen))
        body.append(f'<text x="{x + dx:.1f}" y="{y + 16:.1f}" text-anchor="{anchor}" {_FONT}>{label}</text>')
    return body


def _histogram_panel(
    positive: npt.ArrayLike, negative: npt.ArrayLike, threshold: float | None, bins: int, x_label: str
) -> list[str]:
    hist = bin_distances(positive, negative, threshold, bins)
    panel = _Panel((0.0, hist.x_max), (0.0, hist.y_max))
    body = panel.axes(HISTOGRAM_TITLE, x_label, "share of pairs in the class")
    width = panel.w / bins
    for colour, share in zip((_POS, _NEG), hist.shares, strict=True):
        for k, s in enumerate(share):
            if s <= 0:
                continue
            x, y = panel.px(hist.edges[k]), panel.py(s)
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{panel.py(0) - y:.1f}" '
                f'fill="{colour}" fill-opacity="{BAR_OPACITY}"/>'
            )
    if threshold is not None:
        x = panel.px(threshold)
        body.append(
            f'<line x1="{x:.1f}" y1="{_M_TOP}" x2="{x:.1f}" y2="{panel.py(0):.1f}" stroke="{_MARK}" '
            'stroke-width="2" stroke-dasharray="5,3"/>'
        )
    body.extend(panel.legend(histogram_legend(hist, threshold)))
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
