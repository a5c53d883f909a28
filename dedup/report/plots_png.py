"""The evaluation sweep figure as a PNG drawn with Pillow: the same two panels as :func:`plots.sweep_svg`.

Pillow is already a dependency (no plotting library). The layout is the SVG's: every shape is placed in the
SVG's panel coordinates (:class:`dedup.report.plots._Panel`) and scaled, and the data preparation (binning,
axis ranges, legend and label texts) comes from :mod:`dedup.report.plots`, so the two formats cannot drift
apart.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageColor, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from dedup.report.plots import (
    _M_LEFT,
    _M_TOP,
    _MARK,
    _NEG,
    _POS,
    BAR_OPACITY,
    HISTOGRAM_TITLE,
    LEGEND_OPACITY,
    PANEL_H,
    PANEL_W,
    PR_TITLE,
    _Panel,
    bin_distances,
    chosen_label,
    histogram_legend,
    label_on_left,
    pr_floor,
)

log = logging.getLogger(__name__)

#: Pixels per SVG unit. Pillow draws without anti-aliasing, so twice the SVG's size keeps lines and text smooth.
SCALE = 2
_BACKGROUND, _AXES, _TEXT, _LEGEND_EDGE = "#fafafa", "#444444", "#000000", "#cccccc"
_FONT_SIZE, _TITLE_SIZE = 11, 13
_ANCHORS = {"start": "ls", "middle": "ms", "end": "rs"}  # SVG text-anchor -> Pillow anchor, on the baseline

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]


def _rgb(colour: str) -> RGB:
    r, g, b = ImageColor.getrgb(colour)[:3]
    return r, g, b


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled scalable font needs FreeType; without it the fixed bitmap font is still readable
    # (it ignores the size and the anchors, so text sits slightly off).
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):
        return ImageFont.load_default()


class _Canvas:
    """Draws one panel onto the figure: takes the SVG's panel coordinates, scales and shifts them into the image."""

    def __init__(self, img: Image.Image, index: int, scale: int) -> None:
        self.img = img
        # RGBA drawing on an RGB image blends fills with their alpha: the overlapping histogram bars.
        self.draw = ImageDraw.Draw(img, "RGBA")
        self.dx = index * PANEL_W
        self.scale = scale

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return (x + self.dx) * self.scale, y * self.scale

    def line(self, points: Sequence[tuple[float, float]], colour: str, width: float = 1.0) -> None:
        pixels = [self.xy(x, y) for x, y in points]
        self.draw.line(pixels, fill=_rgb(colour), width=max(1, round(width * self.scale)), joint="curve")

    def dashed_vline(self, x: float, y0: float, y1: float, colour: str, width: float, dash: float, gap: float) -> None:
        y = y0
        while y < y1:
            self.line([(x, y), (x, min(y + dash, y1))], colour, width)
            y += dash + gap

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: RGB | RGBA | None, outline: str | None) -> None:
        (a, b), (c, d) = self.xy(x0, y0), self.xy(x1, y1)
        # Pillow includes both corners; stop a pixel short so side-by-side bars do not blend twice on their seam.
        box = (round(a), round(b), max(round(a), round(c) - 1), max(round(b), round(d) - 1))
        self.draw.rectangle(box, fill=fill, outline=_rgb(outline) if outline else None, width=self.scale)

    def circle(self, x: float, y: float, r: float, fill: str) -> None:
        cx, cy = self.xy(x, y)
        s = r * self.scale
        self.draw.ellipse((cx - s, cy - s, cx + s, cy + s), fill=_rgb(fill), outline=(0, 0, 0), width=self.scale)

    def text(self, x: float, y: float, text: str, anchor: str = "start", size: int = _FONT_SIZE) -> None:
        """Text with its baseline at ``y`` and aligned on ``x`` as SVG's ``text-anchor`` (start, middle, end)."""
        self.draw.text(self.xy(x, y), text, fill=_rgb(_TEXT), font=_font(size * self.scale), anchor=_ANCHORS[anchor])

    def vertical_text(self, x: float, y: float, text: str, size: int = _FONT_SIZE) -> None:
        """Text read bottom to top, centred on ``(x, y)``: the y-axis label."""
        font = _font(size * self.scale)
        left, top, right, bottom = font.getbbox(text)
        strip = Image.new("RGBA", (int(right - left) + 2, int(bottom - top) + 2), (0, 0, 0, 0))
        ImageDraw.Draw(strip).text((1 - left, 1 - top), text, fill=_rgb(_TEXT), font=font)
        strip = strip.rotate(90, expand=True)
        cx, cy = self.xy(x, y)
        self.img.paste(strip, (round(cx - strip.width / 2), round(cy - strip.height / 2)), strip)

    def axes(self, panel: _Panel, title: str, x_label: str, y_label: str) -> None:
        """The same frame, ticks, tick labels, title and axis labels as :meth:`_Panel.axes`."""
        bottom = panel.bottom
        self.rect(_M_LEFT, _M_TOP, _M_LEFT + panel.w, bottom, _rgb("#ffffff"), _AXES)
        self.text(PANEL_W / 2, 20, title, "middle", _TITLE_SIZE)
        self.text(_M_LEFT + panel.w / 2, PANEL_H - 8, x_label, "middle")
        self.vertical_text(12, _M_TOP + panel.h / 2, y_label)
        for x, label in panel.x_ticks():
            self.line([(x, bottom), (x, bottom + 4)], _AXES)
            self.text(x, bottom + 16, label, "middle")
        for y, label in panel.y_ticks():
            self.line([(_M_LEFT - 4, y), (_M_LEFT, y)], _AXES)
            self.text(_M_LEFT - 6, y + 4, label, "end")

    def legend(self, panel: _Panel, items: Sequence[tuple[str, str]]) -> None:
        """The same backing box, swatches and labels as :meth:`_Panel.legend`."""
        self.rect(*panel.legend_box(len(items)), (255, 255, 255, round(255 * LEGEND_OPACITY)), _LEGEND_EDGE)
        for (colour, label), (x, y) in zip(items, panel.legend_rows(len(items)), strict=True):
            self.rect(x, y - 8, x + 10, y + 2, _rgb(colour), None)
            self.text(x + 14, y + 1, label)


def _pr_panel(
    canvas: _Canvas, precision: npt.ArrayLike, recall: npt.ArrayLike, chosen: tuple[float, float, float] | None
) -> None:
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    lo = pr_floor(p)
    panel = _Panel((0.0, 1.0), (lo, 1.0))
    canvas.axes(panel, PR_TITLE, "recall", "precision")
    if p.size:
        canvas.line([(panel.px(x), panel.py(y)) for x, y in zip(r.tolist(), p.tolist(), strict=True)], _POS, 1.8)
    if chosen is not None:
        cr, cp, _ = chosen
        x, y = panel.px(cr), panel.py(max(lo, cp))
        canvas.circle(x, y, 5, _MARK)
        anchor, dx = ("end", -8) if label_on_left(panel, x) else ("start", 8)
        canvas.text(x + dx, y + 16, chosen_label(chosen), anchor)


def _histogram_panel(
    canvas: _Canvas, positive: npt.ArrayLike, negative: npt.ArrayLike, threshold: float | None, bins: int
) -> None:
    hist = bin_distances(positive, negative, threshold, bins)
    panel = _Panel((0.0, hist.x_max), (0.0, hist.y_max))
    canvas.axes(panel, HISTOGRAM_TITLE, "distance", "share of pairs in the class")
    alpha = round(255 * BAR_OPACITY)
    for colour, share in zip((_POS, _NEG), hist.shares, strict=True):
        fill = (*_rgb(colour), alpha)
        for k, s in enumerate(share.tolist()):
            if s > 0:
                canvas.rect(panel.px(hist.edges[k]), panel.py(s), panel.px(hist.edges[k + 1]), panel.py(0), fill, None)
    if threshold is not None:
        canvas.dashed_vline(panel.px(threshold), _M_TOP, panel.py(0), _MARK, 2, 5, 3)
    canvas.legend(panel, histogram_legend(hist, threshold))


def sweep_png(
    precision: npt.ArrayLike,
    recall: npt.ArrayLike,
    positive: npt.ArrayLike,
    negative: npt.ArrayLike,
    chosen: tuple[float, float, float] | None = None,
    bins: int = 40,
    title: str = "dedup evaluate: threshold sweep",
    scale: int = SCALE,
) -> bytes:
    """PNG bytes of the precision-recall curve (``chosen`` marked) beside the distance histogram.

    The arguments are :func:`dedup.report.plots.sweep_svg`'s; ``chosen`` is ``(recall, precision, threshold)``
    of the threshold in use. The image is ``2 * PANEL_W * scale`` by ``PANEL_H * scale`` pixels; ``title`` goes
    into the PNG's ``Title`` text chunk.
    """
    img = Image.new("RGB", (2 * PANEL_W * scale, PANEL_H * scale), _BACKGROUND)
    threshold = chosen[2] if chosen is not None else None
    _pr_panel(_Canvas(img, 0, scale), precision, recall, chosen)
    _histogram_panel(_Canvas(img, 1, scale), positive, negative, threshold, bins)
    info = PngInfo()
    info.add_text("Title", title)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, optimize=True)
    log.debug("sweep PNG: %dx%d pixels, %d bytes", img.width, img.height, buf.tell())
    return buf.getvalue()
