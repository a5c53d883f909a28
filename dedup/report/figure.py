"""One plot renderer: a figure is a list of shapes, drawn once, then written as SVG text or as a PNG.

Every plot dedup makes (the evaluation sweep of :mod:`dedup.report.plots`, the training curves) is
built as a :class:`Figure` of a few primitive shapes (:class:`Line`, :class:`Rect`, :class:`Circle`,
:class:`Text`) in figure units, with the axes, ticks and legends laid out by :class:`Panel`. Two small
encoders turn the same figure into a file: :func:`to_svg` (self-contained text any browser shows offline)
and :func:`to_png` (Pillow, already a dependency, at ``scale`` pixels a unit). So the two formats cannot
drift apart, and no plotting library is needed.

Axis ticks are round numbers (:func:`nice_ticks`: steps of 1, 2 or 5 times a power of ten), and an axis
range is widened to the ticks around it, so a histogram reaching 1.37 gets ticks 0, 0.2, ... 1.4 rather
than 0, 0.274, 0.548, ....
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from xml.sax.saxutils import escape

#: Pixels per figure unit of :func:`to_png`. Pillow draws without anti-aliasing, so twice the size keeps
#: lines and text smooth.
PNG_SCALE = 2
FONT_SIZE, TITLE_SIZE = 11, 13
AXES_COLOUR, TEXT_COLOUR, LEGEND_EDGE = "#444444", "#000000", "#cccccc"
#: Opacity of a legend's white backing box: what it covers stays faintly visible.
LEGEND_OPACITY = 0.85
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 34, 46


@dataclass(frozen=True)
class Line:
    """A polyline through ``points``; ``dash`` = ``(on, off)`` lengths for a dashed line."""

    points: tuple[tuple[float, float], ...]
    colour: str
    width: float = 1.0
    dash: tuple[float, float] | None = None


@dataclass(frozen=True)
class Rect:
    """An axis-aligned box; ``fill`` None leaves it empty."""

    x0: float
    y0: float
    x1: float
    y1: float
    fill: str | None = None
    opacity: float = 1.0
    outline: str | None = None


@dataclass(frozen=True)
class Circle:
    """A filled disc with a black edge."""

    x: float
    y: float
    r: float
    fill: str


@dataclass(frozen=True)
class Text:
    """Text with its baseline at ``y``, aligned on ``x`` by ``anchor`` (start, middle, end); ``vertical``
    text reads bottom to top, centred on ``(x, y)``."""

    x: float
    y: float
    text: str
    anchor: str = "start"
    size: int = FONT_SIZE
    vertical: bool = False
    colour: str = TEXT_COLOUR


Shape = Line | Rect | Circle | Text


@dataclass
class Figure:
    """A ``width`` × ``height`` drawing (figure units) and its shapes, in drawing order."""

    width: float
    height: float
    title: str
    background: str = "#fafafa"
    shapes: list[Shape] = field(default_factory=list)

    def add(self, *shapes: Shape) -> None:
        self.shapes.extend(shapes)


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` + 1 round tick values covering ``[lo, hi]``: a step of 1, 2 or 5 × 10^k, the first
    tick at or below ``lo`` and the last at or above ``hi``; ``integer`` steps are whole numbers (epochs)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        raise ValueError(f"axis range must be finite, got {lo}..{hi}")
    if hi <= lo:
        hi = lo + 1.0
    power = 10.0 ** math.floor(math.log10((hi - lo) / max(1, count)))

    def span(step: float) -> tuple[float, float, int]:
        first = math.floor(lo / step + 1e-9) * step
        last = math.ceil(hi / step - 1e-9) * step
        return first, last, round((last - first) / step)

    # The round step whose number of intervals is closest to count (the finer one on a tie).
    steps = [m * power for m in (1, 2, 5, 10)]
    if integer:
        steps = [s for s in steps if s >= 1] or [1.0]
    step = min(steps, key=lambda s: (abs(span(s)[2] - count), s))
    first, _, n = span(step)
    # Rounded to the step's digits: 0.1 + 0.2 must print as 0.3.
    digits = max(0, -math.floor(math.log10(step)) + 1)
    return [round(first + k * step, digits) for k in range(n + 1)]


def tick_label(v: float) -> str:
    """A tick value as short text: no trailing zeros, no ``-0``."""
    if v == 0:
        return "0"
    return f"{v:.6g}" if abs(v) < 1e5 else f"{v:.3g}"


class Panel:
    """One plot of a figure: maps data coordinates into a ``width`` × ``height`` box at ``(left, 0)``.

    ``x_range`` and ``y_range`` are widened to the round ticks around them; ``integer_x`` keeps the x ticks
    whole numbers (epochs).
    """

    def __init__(
        self,
        left: float,
        width: float,
        height: float,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        ticks: int = 5,
        integer_x: bool = False,
    ) -> None:
        self.left = left
        self.width, self.height = width, height
        self.xt = nice_ticks(*x_range, ticks, integer=integer_x)
        self.yt = nice_ticks(*y_range, ticks)
        self.x0, self.x1 = self.xt[0], self.xt[-1]
        self.y0, self.y1 = self.yt[0], self.yt[-1]
        self.w = width - MARGIN_LEFT - MARGIN_RIGHT
        self.h = height - MARGIN_TOP - MARGIN_BOTTOM

    @property
    def plot_left(self) -> float:
        return self.left + MARGIN_LEFT

    @property
    def top(self) -> float:
        return MARGIN_TOP

    @property
    def bottom(self) -> float:
        """The y of the x axis (the bottom edge of the plotting area)."""
        return MARGIN_TOP + self.h

    def px(self, x: float) -> float:
        return self.plot_left + (x - self.x0) / ((self.x1 - self.x0) or 1.0) * self.w

    def py(self, y: float) -> float:
        return MARGIN_TOP + self.h - (y - self.y0) / ((self.y1 - self.y0) or 1.0) * self.h

    def near_right(self, x: float) -> bool:
        """Whether a label beside a point at figure ``x`` should go to its left."""
        return x > self.plot_left + self.w * 0.6

    def axes(self, title: str, x_label: str, y_label: str) -> list[Shape]:
        """Frame, round ticks with their labels, title and axis labels."""
        bottom, left = self.bottom, self.plot_left
        out: list[Shape] = [
            Rect(left, MARGIN_TOP, left + self.w, bottom, fill="#ffffff", outline=AXES_COLOUR),
            Text(self.left + self.width / 2, 20, title, "middle", TITLE_SIZE),
            Text(left + self.w / 2, self.height - 8, x_label, "middle"),
            Text(self.left + 14, MARGIN_TOP + self.h / 2, y_label, vertical=True),
        ]
        for v in self.xt:
            x = self.px(v)
            out += [Line(((x, bottom), (x, bottom + 4)), AXES_COLOUR), Text(x, bottom + 16, tick_label(v), "middle")]
        for v in self.yt:
            y = self.py(v)
            out += [Line(((left - 4, y), (left, y)), AXES_COLOUR), Text(left - 6, y + 4, tick_label(v), "end")]
        return out

    def legend(self, items: Sequence[tuple[str, str]]) -> list[Shape]:
        """``(colour, label)`` rows at the top right, on a white backing box that keeps them readable."""
        right = self.plot_left + self.w
        rows = [(right - 150, MARGIN_TOP + 10 + 15 * k) for k in range(len(items))]
        out: list[Shape] = [
            Rect(
                rows[0][0] - 5,
                rows[0][1] - 12,
                right - 3,
                rows[-1][1] + 5,
                fill="#ffffff",
                opacity=LEGEND_OPACITY,
                outline=LEGEND_EDGE,
            )
        ]
        for (colour, label), (x, y) in zip(items, rows, strict=True):
            out += [Rect(x, y - 8, x + 10, y + 2, fill=colour), Text(x + 14, y + 1, label)]
        return out


# -- SVG -------------------------------------------------------------------------------------------------


def _svg_shape(s: Shape) -> str:
    if isinstance(s, Line):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in s.points)
        dash = f' stroke-dasharray="{s.dash[0]:g},{s.dash[1]:g}"' if s.dash else ""
        return f'<polyline points="{pts}" fill="none" stroke="{s.colour}" stroke-width="{s.width:g}"{dash}/>'
    if isinstance(s, Rect):
        fill = s.fill or "none"
        opacity = f' fill-opacity="{s.opacity:g}"' if s.opacity < 1 else ""
        stroke = f' stroke="{s.outline}"' if s.outline else ""
        return (
            f'<rect x="{s.x0:.1f}" y="{s.y0:.1f}" width="{s.x1 - s.x0:.1f}" height="{s.y1 - s.y0:.1f}" '
            f'fill="{fill}"{opacity}{stroke}/>'
        )
    if isinstance(s, Circle):
        return f'<circle cx="{s.x:.1f}" cy="{s.y:.1f}" r="{s.r:g}" fill="{s.fill}" stroke="black"/>'
    font = f'font-family="sans-serif" font-size="{s.size}"'
    if s.vertical:
        return (
            f'<text x="{s.x:.1f}" y="{s.y:.1f}" text-anchor="middle" {font} fill="{s.colour}" '
            f'transform="rotate(-90 {s.x:.1f} {s.y:.1f})">{escape(s.text)}</text>'
        )
    return (
        f'<text x="{s.x:.1f}" y="{s.y:.1f}" text-anchor="{s.anchor}" {font} fill="{s.colour}">{escape(s.text)}</text>'
    )


def to_svg(fig: Figure) -> str:
    """The figure as one self-contained SVG document."""
    w, h = fig.width, fig.height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:g}" height="{h:g}" viewBox="0 0 {w:g} {h:g}">',
        f"<title>{escape(fig.title)}</title>",
        f'<rect width="{w:g}" height="{h:g}" fill="{fig.background}"/>',
        *(_svg_shape(s) for s in fig.shapes),
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


# -- PNG -------------------------------------------------------------------------------------------------

_ANCHORS = {"start": "ls", "middle": "ms", "end": "rs"}  # text-anchor -> Pillow anchor, on the baseline


@lru_cache(maxsize=8)
def _font(size: int):  # type: ignore[no-untyped-def]  # Pillow's two font classes
    from PIL import ImageFont

    # Pillow's bundled scalable font needs FreeType; without it the fixed bitmap font is still readable
    # (it ignores the size and the anchors, so text sits slightly off).
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def _rgb(colour: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    r, g, b = ImageColor.getrgb(colour)[:3]
    return r, g, b


def to_png(fig: Figure, scale: int = PNG_SCALE) -> bytes:
    """The figure as PNG bytes, ``scale`` pixels a figure unit; the title goes into the ``Title`` text chunk."""
    from PIL import Image, ImageDraw
    from PIL.PngImagePlugin import PngInfo

    img = Image.new("RGB", (round(fig.width * scale), round(fig.height * scale)), fig.background)
    # RGBA drawing on an RGB image blends fills with their alpha: overlapping bars stay visible.
    draw = ImageDraw.Draw(img, "RGBA")

    def xy(x: float, y: float) -> tuple[float, float]:
        return x * scale, y * scale

    for s in fig.shapes:
        if isinstance(s, Line):
            width = max(1, round(s.width * scale))
            if s.dash is None:
                draw.line([xy(*p) for p in s.points], fill=_rgb(s.colour), width=width, joint="curve")
                continue
            on, off = s.dash
            for (ax, ay), (bx, by) in zip(s.points, s.points[1:], strict=False):
                length = math.hypot(bx - ax, by - ay)
                t = 0.0
                while t < length:
                    u0, u1 = t / length, min(t + on, length) / length
                    seg = [xy(ax + (bx - ax) * u, ay + (by - ay) * u) for u in (u0, u1)]
                    draw.line(seg, fill=_rgb(s.colour), width=width)
                    t += on + off
        elif isinstance(s, Rect):
            (a, b), (c, d) = xy(s.x0, s.y0), xy(s.x1, s.y1)
            # Pillow includes both corners; stop a pixel short so side-by-side bars do not blend twice on a seam.
            box = (round(a), round(b), max(round(a), round(c) - 1), max(round(b), round(d) - 1))
            fill = (*_rgb(s.fill), round(255 * s.opacity)) if s.fill else None
            draw.rectangle(box, fill=fill, outline=_rgb(s.outline) if s.outline else None, width=scale)
        elif isinstance(s, Circle):
            (cx, cy), r = xy(s.x, s.y), s.r * scale
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_rgb(s.fill), outline=(0, 0, 0), width=scale)
        elif s.vertical:
            font = _font(s.size * scale)
            left, top, right, bottom = font.getbbox(s.text)
            strip = Image.new("RGBA", (int(right - left) + 2, int(bottom - top) + 2), (0, 0, 0, 0))
            ImageDraw.Draw(strip).text((1 - left, 1 - top), s.text, fill=_rgb(s.colour), font=font)
            strip = strip.rotate(90, expand=True)
            cx, cy = xy(s.x, s.y)
            img.paste(strip, (round(cx - strip.width / 2), round(cy - strip.height / 2)), strip)
        else:
            draw.text(xy(s.x, s.y), s.text, fill=_rgb(s.colour), font=_font(s.size * scale), anchor=_ANCHORS[s.anchor])
    info = PngInfo()
    info.add_text("Title", fig.title)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, optimize=True)
    return buf.getvalue()
