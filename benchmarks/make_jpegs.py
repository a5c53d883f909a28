"""Generate N distinct, realistic ~0.5 MP JPEGs for throughput benchmarks (deterministic).

    PYTHONPATH=. python benchmarks/make_jpegs.py OUT_DIR [-n 5000] [--size 800] [--seed 0] [--workers 2]

Each picture is a background (a recoloured crop of a held-out Tux Paint template photo, or a noisy
gradient, or a procedural fabric), one to four held-out Tux Paint stamps at random scale, angle and
position, a few translucent shapes and a price label; ``size`` x ``size * 3 / 4`` pixels, JPEG quality
85 (roughly 60-150 KB each). Image ``i`` depends only on ``(seed, i)``, so the output is the same
whatever the number of workers. Only ``tuxpaint_images('holdout')`` is used.
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps

from dedup.training.sources import tuxpaint_images

FONT = Path("/usr/share/tuxpaint/fonts/FreeSansBold.ttf")
WORDS = ("Sale", "New", "Deluxe", "Classic", "Mini", "Pro", "Eco", "Kids", "Home", "Gift", "Set", "XL")

# Per-process state filled by _init (stamps and backgrounds are decoded once per worker).
_STATE: dict[str, Any] = {}


def _init(out_dir: str, width: int, height: int, seed: int) -> None:
    stamps: list[Image.Image] = []
    photos: list[Image.Image] = []
    for p in tuxpaint_images("holdout"):
        with Image.open(p) as im:
            if p.parent.name == "templates":
                photo = im.convert("RGB")
                photo.thumbnail((1400, 1400))
                photos.append(photo)
            elif "stamps" in p.parts and min(im.size) >= 40:
                stamps.append(im.convert("RGBA"))
    grain = np.random.default_rng(seed).normal(0, 1, (height + 64, width + 64, 3))
    noise = [Image.fromarray(np.clip(128 + s * grain, 0, 255).astype(np.uint8)) for s in (6, 12)]
    _STATE.update(out=Path(out_dir), w=width, h=height, seed=seed, stamps=stamps, photos=photos, noise=noise)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.truetype(str(FONT), size) if FONT.exists() else ImageFont.load_default(size)


def _add_noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Add a random crop of the worker's pre-computed noise field (sensor-like grain)."""
    noise: Image.Image = _STATE["noise"][rng.integers(2)]
    x, y = int(rng.integers(noise.width - img.width + 1)), int(rng.integers(noise.height - img.height + 1))
    return ImageChops.add(img, noise.crop((x, y, x + img.width, y + img.height)), offset=-128)


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    kind = rng.integers(3)
    if kind == 0:  # a recoloured crop of a photo
        photo: Image.Image = _STATE["photos"][rng.integers(len(_STATE["photos"]))]
        cw = int(photo.width * rng.uniform(0.35, 0.9))
        ch = min(photo.height, int(cw * h / w))
        x0, y0 = int(rng.integers(photo.width - cw + 1)), int(rng.integers(photo.height - ch + 1))
        img = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        gain, bias = rng.uniform(0.6, 1.3, 3), rng.uniform(-30, 30, 3)
        lut = np.clip(np.arange(256)[None] * gain[:, None] + bias[:, None], 0, 255).astype(np.uint8)
        return img.point(lut.ravel().tolist())
    if kind == 1:  # two-colour gradient with sensor-like noise
        n = w if rng.random() < 0.5 else h
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        ramp = (c0 + np.linspace(0, 1, n)[:, None] * (c1 - c0)).astype(np.uint8)
        strip = Image.fromarray(ramp[None] if n == w else ramp[:, None])
        return _add_noise(strip.resize((w, h), Image.Resampling.NEAREST), rng)
    # fabric: crossing sinusoids, coloured between two random colours
    y, x = np.ogrid[0:h, 0:w]
    f1, f2 = rng.uniform(0.05, 0.4, 2)
    weave = np.sin(x * f1 + rng.uniform(0, 6)) * np.sin(y * f2 + rng.uniform(0, 6))
    grey = Image.fromarray(((weave + 1) * 127.5).astype(np.uint8))
    dark, light = rng.integers(0, 140, 3), rng.integers(100, 256, 3)
    return _add_noise(ImageOps.colorize(grey, tuple(dark.tolist()), tuple(light.tolist())), rng)


def make_one(i: int) -> int:
    """Write image ``i``; returns its size in bytes."""
    w, h, seed = _STATE["w"], _STATE["h"], _STATE["seed"]
    rng = np.random.default_rng([seed, i])
    img = _background(rng, w, h).convert("RGBA")
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for _ in range(rng.integers(0, 5)):
        box = sorted(rng.integers(0, w, 2).tolist()), sorted(rng.integers(0, h, 2).tolist())
        fill = (*rng.integers(0, 256, 3).tolist(), int(rng.integers(60, 160)))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((box[0][0], box[1][0], box[0][1], box[1][1]), fill=fill)
    img = Image.alpha_composite(img, overlay)
    stamps: list[Image.Image] = _STATE["stamps"]
    for _ in range(rng.integers(1, 5)):
        stamp = stamps[rng.integers(len(stamps))]
        scale = rng.uniform(0.2, 0.7) * h / max(stamp.size)
        stamp = stamp.resize(
            (max(1, int(stamp.width * scale)), max(1, int(stamp.height * scale))), Image.Resampling.BILINEAR
        )
        if rng.random() < 0.4:
            stamp = stamp.rotate(float(rng.uniform(-25, 25)), Image.Resampling.BILINEAR, expand=True)
        x = int(rng.integers(-stamp.width // 4, max(1, w - stamp.width * 3 // 4)))
        y = int(rng.integers(-stamp.height // 4, max(1, h - stamp.height * 3 // 4)))
        img.alpha_composite(stamp, (max(0, x), max(0, y)))
    draw = ImageDraw.Draw(img)
    label = f"{WORDS[rng.integers(len(WORDS))]} #{i}  ${rng.uniform(1, 300):.2f}"
    xy = (int(rng.integers(10, w // 2)), int(rng.integers(10, h - 60)))
    draw.text(xy, label, font=_font(int(rng.integers(18, 48))), fill=(*rng.integers(0, 256, 3).tolist(), 255))
    path: Path = _STATE["out"] / f"img_{i:06d}.jpg"
    img.convert("RGB").save(path, "JPEG", quality=85)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("-n", type=int, default=5000, help="number of images (default 5000)")
    parser.add_argument("--size", type=int, default=800, help="width in pixels; height is 3/4 of it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    init_args = (str(args.out_dir), args.size, args.size * 3 // 4, args.seed)
    with Pool(args.workers, initializer=_init, initargs=init_args) as pool:
        total = sum(pool.imap_unordered(make_one, range(args.n), chunksize=16))
    secs = time.perf_counter() - start
    print(
        f"{args.n} JPEGs in {args.out_dir}: {total / 1e6:.1f} MB "
        f"(mean {total / max(1, args.n) / 1e3:.0f} KB) in {secs:.1f} s"
    )


if __name__ == "__main__":
    main()
