"""The one plot renderer: round ticks, and one figure written as SVG and as PNG."""

from __future__ import annotations

import io
import math
import xml.dom.minidom
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup.report.figure import PNG_SCALE as SCALE
from dedup.report.figure import Figure, Line, Text, nice_ticks, tick_label, to_png, to_svg
from dedup.report.plots import PANEL_H, PANEL_W, curves_figure, sweep_figure
from dedup.training.callbacks import plot_curves


def _is_round_step(step: float) -> bool:
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(abs(mantissa - m) < 1e-6 for m in (1, 2, 5))


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.37), (0.0, 0.0123), (0.8, 1.0), (1.0, 40.0), (0.274, 0.9), (3.0, 3.0)])
def test_ticks_are_round_and_cover_the_range(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 3 <= len(ticks) <= 11
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0]) and _is_round_step(float(steps[0])), ticks
    assert all(len(tick_label(t).lstrip("-").replace(".", "").lstrip("0")) <= 3 for t in ticks), ticks


def test_old_ticks_would_have_been_ragged() -> None:
    """The histogram axis to 1.37 used to get ticks 0, 0.274, 0.548...: now 0, 0.2, ... 1.4."""
    assert nice_ticks(0.0, 1.37) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4]
    assert [tick_label(t) for t in nice_ticks(0.0, 1.0)] == ["0", "0.2", "0.4", "0.6", "0.8", "1"]
    assert nice_ticks(1.0, 4.0, integer=True) == [1.0, 2.0, 3.0, 4.0]  # epochs: no 1.5


def _sweep() -> Figure:
    return sweep_figure(*_sweep_args())


def test_sweep_svg_tick_labels_are_round_numbers() -> None:
    doc = xml.dom.minidom.parseString(to_svg(_sweep()))
    labels = [t.firstChild.data for t in doc.getElementsByTagName("text") if t.firstChild]
    numeric = []
    for label in labels:
        try:
            numeric.append(float(label))
        except ValueError:
            continue
    assert numeric, labels
    assert all(len(label.replace(".", "").lstrip("0")) <= 2 for label in labels if _is_number(label)), labels
    assert "1.4" in labels and "0.274" not in labels  # the histogram's x axis reaches past 1.37 in round steps


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sweep_args() -> tuple:
    rng = np.random.default_rng(0)
    pos, neg = rng.uniform(0, 0.6, 200), rng.uniform(0.4, 1.37, 2000)
    return np.linspace(1.0, 0.83, 50), np.linspace(0.0, 1.0, 50), pos, neg, (0.9, 0.95, 0.53)


def test_one_figure_two_formats() -> None:
    fig = _sweep()
    svg = xml.dom.minidom.parseString(to_svg(fig))
    # Every shape is one SVG element (plus the background rectangle).
    elements = sum(len(svg.getElementsByTagName(t)) for t in ("polyline", "rect", "circle", "text"))
    assert elements == len(fig.shapes) + 1
    texts = [s.text for s in fig.shapes if isinstance(s, Text)]
    assert [t.firstChild.data for t in svg.getElementsByTagName("text")] == texts
    with Image.open(io.BytesIO(to_png(fig))) as img:
        assert img.size == (2 * PANEL_W * SCALE, PANEL_H * SCALE) and img.info["Title"] == fig.title
        # The dashed threshold line is drawn in its colour.
        assert (0x2C, 0xA0, 0x2C) in {c for _, c in img.convert("RGB").getcolors(1 << 20) or []}
    assert any(isinstance(s, Line) and s.dash for s in fig.shapes)


def test_training_curves_use_the_same_renderer(tmp_path: Path) -> None:
    history = {"loss": [2.0, 1.2, 0.9], "val_loss": [2.1, 1.5, 1.3], "pair_acc": [0.5, 0.7, 0.8]}
    fig = curves_figure(history)
    assert fig.width == 2 * PANEL_W
    labels = {s.text for s in fig.shapes if isinstance(s, Text)}
    assert {"training loss", "validation loss", "training pair_acc"} <= labels
    out = plot_curves(history, tmp_path / "curves.png")
    assert out is not None
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (2 * PANEL_W * SCALE, PANEL_H * SCALE)
    assert plot_curves({}, tmp_path / "none.png") is None
