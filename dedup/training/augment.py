"""Duplicate-making and phone-photo transforms, and colour variants, on PIL images with a seeded rng.

Every transform takes an RGB image and a :class:`numpy.random.Generator` and returns a new RGB image;
the same seed gives the same output. ``DUPLICATE_KINDS`` are edits a shop or a re-upload makes to a
product picture (the result is a duplicate); ``phone`` imitates a customer photographing the product;
:func:`colour_variant` makes a *different* product (the same design in another colour).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

log = logging.getLogger(__name__)

Transform = Callable[[Image.Image, np.random.Generator], Image.Image]
WHITE = (255, 255, 255)


def jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Re-encode as a low-quality JPEG (quality 8–40)."""
    return _reencode(img, "JPEG", quality=int(rng.integers(8, 41)))


def resize(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Downscale to 25–70 % of the side (the model input is then upscaled again)."""
    f = rng.uniform(0.25, 0.7)
    w, h = img.size
    return img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.BILINEAR)


def format_change(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Another container: WebP at medium quality, or a GIF-like palette of 32–256 colours."""
    if rng.random() < 0.5:
        return _reencode(img, "WEBP", quality=int(rng.integers(30, 81)))
    colours = int(rng.integers(32, 257))
    return img.quantize(colours, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")


def crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep 80–95 % of the area, anywhere in the frame."""
    w, h = img.size
    area = rng.uniform(0.80, 0.95)
    aspect = np.exp(rng.uniform(-0.1, 0.1))
    cw = min(w, max(8, round(w * np.sqrt(area) * aspect)))
    ch = min(h, max(8, round(h * np.sqrt(area) / aspect)))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    return img.crop((x0, y0, x0 + cw, y0 + ch))


def pad(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """White padding on some sides (letterbox or a wider canvas), 5–35 % of the side."""
    w, h = img.size
    left, top, right, bottom = (round(s * rng.uniform(0.05, 0.35)) * int(rng.random() < 0.7) for s in (w, h, w, h))
    out = Image.new("RGB", (w + left + right, h + top + bottom), WHITE)
    out.paste(img, (left, top))
    return out


def rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate by 1–8 degrees either way, white fill, canvas kept or expanded."""
    angle = float(rng.uniform(1, 8) * rng.choice([-1, 1]))
    return img.rotate(angle, Image.Resampling.BILINEAR, expand=bool(rng.random() < 0.5), fillcolor=WHITE)


def colour_shift(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation shifts (no hue change: hue makes another product)."""
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.75, 1.25))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Color(img).enhance(rng.uniform(0.65, 1.35))


def watermark(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A semi-transparent text or logo mark somewhere on the picture."""
    w, h = img.size
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3)) + (int(rng.integers(70, 180)),)
    if rng.random() < 0.6:
        size = max(8, int(min(w, h) * rng.uniform(0.06, 0.16)))
        font = ImageFont.load_default(size=size)
        text = "".join(rng.choice(list("ABCDEFGHKLMNPRSTUVWXYZ0123456789©.® ")) for _ in range(rng.integers(4, 14)))
        x, y = int(rng.uniform(0, w * 0.6)), int(rng.uniform(0, h * 0.85))
        draw.text((x, y), text, fill=colour, font=font)
    else:
        s = int(min(w, h) * rng.uniform(0.08, 0.22))
        x, y = int(rng.uniform(0, max(1, w - s))), int(rng.uniform(0, max(1, h - s)))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + s, y + s), fill=colour)
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")


def background_tint(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Replace the (near-)white background with a light tint, as some shops do."""
    arr = np.asarray(img, dtype=np.float32)
    white = (arr.min(axis=2, keepdims=True) > 235).astype(np.float32)
    tint = rng.uniform(200, 250, size=3).astype(np.float32)
    out = arr * (1 - white) + tint * white
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def mirror(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Horizontal mirror image (the same product, photographed or laid out the other way)."""
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Slight Gaussian blur (radius 0.4–1.4 px at 256 px)."""
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.4))))


def combo(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Two to four of the single edits in random order, ending with a re-encode half of the time."""
    singles = [crop, pad, rotate, colour_shift, watermark, background_tint, mirror, blur, resize]
    picks = rng.choice(len(singles), size=int(rng.integers(2, 5)), replace=False)
    for i in picks:
        img = singles[int(i)](img, rng)
    if rng.random() < 0.5:
        img = jpeg(img, rng) if rng.random() < 0.6 else format_change(img, rng)
    return img


DUPLICATE_KINDS: dict[str, Transform] = {
    "jpeg": jpeg,
    "resize": resize,
    "format": format_change,
    "crop": crop,
    "pad": pad,
    "rotate": rotate,
    "colour": colour_shift,
    "watermark": watermark,
    "tint": background_tint,
    "mirror": mirror,
    "blur": blur,
    "combo": combo,
}


def phone_photo(img: Image.Image, rng: np.random.Generator, backgrounds: Sequence[Image.Image]) -> Image.Image:
    """The product smaller in frame on a real background, mild perspective, lighting, noise, JPEG.

    Half of the time the product is cut out along its non-white pixels (a stamp on a surface), otherwise
    the whole picture is placed like a printed card.
    """
    side = 256
    if backgrounds:
        bg = backgrounds[int(rng.integers(len(backgrounds)))]
        bw, bh = bg.size
        cs = int(min(bw, bh) * rng.uniform(0.4, 1.0))
        x0, y0 = int(rng.integers(0, bw - cs + 1)), int(rng.integers(0, bh - cs + 1))
        canvas = bg.crop((x0, y0, x0 + cs, y0 + cs)).resize((side, side), Image.Resampling.BILINEAR)
    else:
        canvas = Image.new("RGB", (side, side), tuple(int(c) for c in rng.integers(60, 230, 3)))
    if rng.random() < 0.5:
        img = mirror(img, rng)
    scale = rng.uniform(0.5, 0.85)
    w, h = img.size
    f = scale * side / max(w, h)
    prod = img.resize((max(4, round(w * f)), max(4, round(h * f))), Image.Resampling.BILINEAR)
    pw, ph = prod.size
    if rng.random() < 0.5:
        mask = Image.fromarray(((np.asarray(prod).min(axis=2) < 240) * 255).astype(np.uint8))
        mask = mask.filter(ImageFilter.MaxFilter(3))
    else:
        mask = None
    px, py = int(rng.integers(0, side - pw + 1)), int(rng.integers(0, side - ph + 1))
    canvas.paste(prod, (px, py), mask)
    canvas = _perspective(canvas, rng, strength=0.06)
    arr = np.asarray(canvas, dtype=np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    gx, gy = rng.uniform(-0.3, 0.3, 2)
    light = rng.uniform(0.8, 1.15) * (1 + gx * (xx - 0.5) + gy * (yy - 0.5))
    warm = rng.uniform(0.93, 1.07, 3).astype(np.float32)
    arr = arr * light[..., None] * warm + rng.normal(0, rng.uniform(2, 8), arr.shape)
    out = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    return _reencode(out, "JPEG", quality=int(rng.integers(55, 90)))


def collage(parts: Sequence[Image.Image], rng: np.random.Generator, side: int = 256) -> Image.Image:
    """A new picture made of ``parts`` (RGB on white) laid out at random on a plain or gradient background.

    Two collages of the same parts with different layouts are different products that share every
    detail: the hard negatives that teach the model layout, not only content (look-alike stamps such
    as hand signs differ the same way).
    """
    aspect = float(np.exp(rng.uniform(-0.3, 0.3)))
    w, h = (side, round(side / aspect)) if aspect >= 1 else (round(side * aspect), side)
    roll = rng.random()
    if roll < 0.6:
        canvas = Image.new("RGB", (w, h), WHITE)
    elif roll < 0.85:
        canvas = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(170, 256, 3)))
    else:
        a, b = rng.integers(150, 256, (2, 3)).astype(np.float32)
        t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        canvas = Image.fromarray(np.broadcast_to(a * (1 - t) + b * t, (h, w, 3)).astype(np.uint8))
    for part in parts:
        f = rng.uniform(0.3, 0.65) * min(w, h) / max(part.size)
        piece = part.resize((max(4, round(part.width * f)), max(4, round(part.height * f))), Image.Resampling.BILINEAR)
        if rng.random() < 0.3:
            piece = mirror(piece, rng)
        mask = Image.fromarray(((np.asarray(piece).min(axis=2) < 245) * 255).astype(np.uint8))
        x = int(rng.integers(0, max(1, w - piece.width + 1)))
        y = int(rng.integers(0, max(1, h - piece.height + 1)))
        canvas.paste(piece, (x, y), mask)
    return canvas


def colour_variant(img: Image.Image, rng: np.random.Generator) -> Image.Image | None:
    """The same design in another colour (hue rotated 60–300°), or None if the image has too little colour.

    A hue-rotated copy is another product (another SKU), so it is a hard negative, never a positive.
    """
    hsv = np.asarray(img.convert("HSV"), dtype=np.int16)
    coloured = (hsv[..., 1] > 70) & (hsv[..., 2] > 50)
    if coloured.mean() < 0.08:
        return None
    shift = int(rng.uniform(60, 300) / 360 * 256)
    hsv[..., 0] = (hsv[..., 0] + shift) % 256
    out = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
    before = np.asarray(img, dtype=np.float32)[coloured]
    after = np.asarray(out, dtype=np.float32)[coloured]
    if float(np.abs(before - after).mean()) < 30:
        return None  # e.g. a design whose colours all sit on one hue family the shift barely moves
    return out


def _reencode(img: Image.Image, fmt: str, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, fmt, quality=quality)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


def _perspective(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """A mild random perspective warp (corners moved by up to ``strength`` of the side)."""
    w, h = img.size
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    dst = src + rng.uniform(-strength, strength, src.shape) * np.array([w, h])
    coeffs = _perspective_coeffs(dst, src)
    return img.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR, fillcolor=WHITE)


def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> tuple[float, ...]:
    """The 8 coefficients mapping output points ``src`` to input points ``dst`` (PIL's convention)."""
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.array(rows, dtype=np.float64)
    b = dst.reshape(8)
    return tuple(float(c) for c in np.linalg.solve(a, b))
