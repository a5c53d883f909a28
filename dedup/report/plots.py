"""The plots dedup draws: the evaluation sweep (a precision-recall curve beside the distance histograms)
and the training curves, each built once as a :class:`~dedup.report.figure.Figure`.

:func:`sweep_figure` and :func:`curves_figure` lay the data out (binning, axis ranges, legends, labels);
:func:`dedup.report.figure.to_svg` and :func:`~dedup.report.figure.to_png` write the same figure as an SVG
document or a PNG image, so ``dedup evaluate --sweep x.svg`` and ``--sweep x.png`` show one drawing. Axis
ticks are round numbers (:func:`dedup.report.figure.nice_ticks`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dedup.report.figure import Circle, Figure, Line, Panel, Rect, Text

PANEL_W, PANEL_H = 440, 340
_POS, _NEG, _MARK = "#1f77b4", "#d62728", "#2ca02c"
#: Opacity of the histogram bars: the two classes overlap, and both must stay visible where they do.
BAR_OPACITY = 0.5
PR_TITLE = "Precision-recall (threshold sweep)"
HISTOGRAM_TITLE = "Pair distances"
SWEEP_TITLE = "dedup evaluate: threshold sweep"


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


def _pr_panel(
    fig: Figure, left: float, precision: npt.ArrayLike, recall: npt.ArrayLike, chosen: tuple[float, float, float] | None
) -> None:
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    lo = pr_floor(p)
    panel = Panel(left, PANEL_W, PANEL_H, (0.0, 1.0), (lo, 1.0))
    fig.add(*panel.axes(PR_TITLE, "recall", "precision"))
    if p.size:
        fig.add(Line(tuple((panel.px(x), panel.py(y)) for x, y in zip(r.tolist(), p.tolist(), strict=True)), _POS, 1.8))
    if chosen is not None:
        cr, cp, _ = chosen
        x, y = panel.px(cr), panel.py(max(lo, cp))
        anchor, dx = ("end", -8) if panel.near_right(x) else ("start", 8)
        fig.add(Circle(x, y, 5, _MARK), Text(x + dx, y + 16, chosen_label(chosen), anchor))


def _histogram_panel(
    fig: Figure,
    left: float,
    positive: npt.ArrayLike,
    negative: npt.ArrayLike,
    threshold: float | None,
    bins: int,
) -> None:
    hist = bin_distances(positive, negative, threshold, bins)
    panel = Panel(left, PANEL_W, PANEL_H, (0.0, hist.x_max), (0.0, hist.y_max))
    fig.add(*panel.axes(HISTOGRAM_TITLE, "distance", "share of pairs in the class"))
    for colour, share in zip((_POS, _NEG), hist.shares, strict=True):
        for k, v in enumerate(share.tolist()):
            if v > 0:
                x0, x1 = panel.px(float(hist.edges[k])), panel.px(float(hist.edges[k + 1]))
                fig.add(Rect(x0, panel.py(v), x1, panel.py(0), fill=colour, opacity=BAR_OPACITY))
    if threshold is not None:
        x = panel.px(threshold)
        fig.add(Line(((x, panel.top), (x, panel.py(0))), _MARK, 2, dash=(5, 3)))
    fig.add(*panel.legend(histogram_legend(hist, threshold)))


def sweep_figure(
    precision: npt.ArrayLike,
    recall: npt.ArrayLike,
    positive: npt.ArrayLike,
    negative: npt.ArrayLike,
    chosen: tuple[float, float, float] | None = None,
    bins: int = 40,
    title: str = SWEEP_TITLE,
) -> Figure:
    """The precision-recall curve (``chosen`` = ``(recall, precision, threshold)`` marked) beside the
    histograms of duplicate and non-duplicate distances (the threshold drawn on them)."""
    fig = Figure(2 * PANEL_W, PANEL_H, title)
    _pr_panel(fig, 0, precision, recall, chosen)
    _histogram_panel(fig, PANEL_W, positive, negative, chosen[2] if chosen else None, bins)
    return fig


#: Colours of the training and validation series of :func:`curves_figure`.
_SERIES = {"": "#1f77b4", "val_": "#ff7f0e"}


def curves_figure(history: Mapping[str, Sequence[float]], metrics: Sequence[str] = ("loss", "pair_acc")) -> Figure:
    """Training curves, one panel a metric: each metric's training (``name``) and validation (``val_name``)
    values per epoch, from a Keras history."""
    fig = Figure(PANEL_W * len(metrics), PANEL_H, "dedup train: training curves")
    for p, key in enumerate(metrics):
        series = {pre: [float(v) for v in history[pre + key]] for pre in _SERIES if history.get(pre + key)}
        values = [v for vs in series.values() for v in vs]
        if not values:
            continue
        epochs = max(len(vs) for vs in series.values())
        lo, hi = min(values), max(values)
        y_range = (lo, hi if hi > lo else lo + 1.0)
        panel = Panel(p * PANEL_W, PANEL_W, PANEL_H, (1.0, float(max(2, epochs))), y_range, integer_x=True)
        fig.add(*panel.axes(key, "epoch", key))
        for pre, vs in series.items():
            points = tuple((panel.px(float(i + 1)), panel.py(v)) for i, v in enumerate(vs))
            if len(points) > 1:
                fig.add(Line(points, _SERIES[pre], 2))
            else:
                fig.add(Circle(*points[0], 3, _SERIES[pre]))
        fig.add(*panel.legend([(_SERIES[pre], f"{'validation' if pre else 'training'} {key}") for pre in series]))
    return fig
