"""Build the sample catalog in ``catalog_samples/`` from held-out Tux Paint stamps (deterministic).

    PYTHONPATH=. python scripts/make_catalog_samples.py [--out catalog_samples] [--seed 7]

(run from the repository root; ``PYTHONPATH=.`` is not needed once ``pip install -e .`` is done).

Product shots (stamp centred on a white/light-grey canvas), known near-duplicate groups, colour
variants (different SKUs), phone-photo-like queries, files in unusual modes, broken files,
``products.csv`` and ``truth.csv``. Only ``tuxpaint_images('holdout')`` images are used, so no
sample ever comes from the training split. Needs Pillow and numpy only.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import shutil
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from dedup.training.sources import tuxpaint_images

STAMPS = Path("/usr/share/tuxpaint/stamps")
FONT = Path("/usr/share/tuxpaint/fonts/FreeSansBold.ttf")
N_PRODUCTS, N_GROUPS, N_VARIANTS, N_QUERIES = 117, 25, 5, 8
TRANSFORMS = (
    "reencode_q40",
    "resize_50",
    "crop_90",
    "pad",
    "watermark",
    "hflip",
    "rotate_3",
    "tint",
    "png",
    "exact_copy",
    "bright",
)
HUES = {"red": 0, "orange": 30, "yellow": 55, "green": 120, "teal": 175, "blue": 220, "purple": 280}
BRANDS = ("Acme", "Northwind", "Bluebird", "Kestrel & Co", "Lumen", "Oakridge", "Pico", "Tundra")
SELLERS = ("MegaMart", "ShopFast", "BargainHub", "DealDepot")
FORMATS = ("rgba", "rgba", "rgba", "palette", "grey", "16bit", "cmyk", "exif_rotated")


def stamp_pool() -> list[Path]:
    """Held-out stamps that are big enough; mirror copies and outlined letters are left out
    (they would be unlabelled near-duplicates of other stamps)."""
    pool = []
    for p in tuxpaint_images("holdout"):
        if STAMPS not in p.parents or p.stem.endswith("_mirror") or p.stem.endswith("_outline"):
            continue
        with Image.open(p) as im:
            if max(im.size) >= 64 and min(im.size) >= 30:
                pool.append(p)
    return pool


def load_stamp(path: Path) -> Image.Image:
    return Image.open(path).convert("RGBA")


def fit(stamp: Image.Image, box: tuple[int, int]) -> Image.Image:
    scale = min(box[0] / stamp.width, box[1] / stamp.height)
    size = (max(1, round(stamp.width * scale)), max(1, round(stamp.height * scale)))
    return stamp.resize(size, Image.Resampling.LANCZOS)


def product_shot(stamp: Image.Image, grey: bool, mode: str = "RGB") -> Image.Image:
    """The stamp centred on a 600x600 (or 800x600 for wide stamps) canvas with a margin."""
    size = (800, 600) if stamp.width > 1.3 * stamp.height else (600, 600)
    margin = 60
    item = fit(stamp, (size[0] - 2 * margin, size[1] - 2 * margin))
    bg = (0, 0, 0, 0) if mode == "RGBA" else ((244, 244, 244, 255) if grey else (255, 255, 255, 255))
    canvas = Image.new("RGBA", size, bg)
    canvas.alpha_composite(item, ((size[0] - item.width) // 2, (size[1] - item.height) // 2))
    return canvas if mode == "RGBA" else canvas.convert("RGB")


def save_jpeg(img: Image.Image, path: Path, quality: int = 90, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=quality, **kw)


def hue_shift(stamp: Image.Image, target: int) -> Image.Image:
    """Rotate every hue so the stamp's dominant hue lands on ``target`` degrees."""
    hsv = np.asarray(stamp.convert("RGB").convert("HSV")).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + round((target - dominant_hue(stamp)[1]) * 256 / 360)) % 256
    rgb = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
    rgb.putalpha(stamp.getchannel("A"))
    return rgb


def dominant_hue(stamp: Image.Image) -> tuple[float, int]:
    """(saturated fraction, dominant hue in degrees) of the opaque pixels."""
    hsv = np.asarray(stamp.convert("RGB").convert("HSV")).astype(np.int32)
    mask = (np.asarray(stamp.getchannel("A")) > 128) & (hsv[..., 1] > 80) & (hsv[..., 2] > 80)
    frac = mask.sum() / max(1, (np.asarray(stamp.getchannel("A")) > 128).sum())
    hue = int(np.bincount(hsv[..., 0][mask], minlength=256).argmax()) * 360 // 256 if mask.any() else 0
    return float(frac), hue


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.truetype(str(FONT), size) if FONT.exists() else ImageFont.load_default(size)


def apply_transform(name: str, src: Path, img: Image.Image, dest_stem: Path, rng: random.Random) -> Path:
    """Write one named near-duplicate of ``img`` (read from ``src``); returns the written path."""
    out = dest_stem.with_name(f"{dest_stem.name}__{name}.{'png' if name == 'png' else 'jpg'}")
    w, h = img.size
    if name == "exact_copy":
        shutil.copyfile(src, out)
        return out
    if name == "reencode_q40":
        save_jpeg(img, out, quality=40)
        return out
    if name == "png":
        img.save(out, "PNG")
        return out
    if name == "resize_50":
        img = img.resize((w // 2, h // 2), Image.Resampling.LANCZOS)
    elif name == "crop_90":
        dx, dy = rng.randint(0, w // 10), rng.randint(0, h // 10)
        img = img.crop((dx, dy, dx + w * 9 // 10, dy + h * 9 // 10))
    elif name == "pad":
        canvas = Image.new("RGB", (w, w) if w > h else (w + w // 3, h), (255, 255, 255))
        canvas.paste(img, ((canvas.width - w) // 2, (canvas.height - h) // 2))
        img = canvas
    elif name == "watermark":
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        text = f"© {rng.choice(SELLERS)}"
        draw.text((w // 2, h // 2), text, font=font(w // 9), fill=(90, 90, 90, 110), anchor="mm")
        draw.text((w - 12, h - 12), "www.example.shop", font=font(20), fill=(0, 0, 0, 140), anchor="rd")
        img = Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")
    elif name == "hflip":
        img = ImageOps.mirror(img)
    elif name == "rotate_3":
        img = img.rotate(3, Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    elif name == "tint":
        arr = np.asarray(img, dtype=np.float32) * np.array([1.0, 0.96, 0.88]) + np.array([0, 2, 6])
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    elif name == "bright":
        img = ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(1.18)).enhance(0.92)
    save_jpeg(img, out)
    return out


def perspective_coeffs(dst: Sequence[tuple[float, float]], src: Sequence[tuple[float, float]]) -> list[float]:
    """Coefficients for ``Image.transform(PERSPECTIVE)`` mapping output points ``dst`` to input ``src``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64)).tolist()


def wood(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A procedural wooden table top."""
    w, h = size
    nrng = np.random.default_rng(rng.randrange(2**32))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    wobble = 9 * np.sin(x / rng.uniform(60, 120)) + 4 * np.sin(x / 23 + rng.uniform(0, 6))
    grain = 0.5 + 0.5 * np.sin((y + wobble) / rng.uniform(3, 6))
    grain = grain * 0.6 + 0.4 * nrng.random((h, 1)).repeat(w, 1)
    base = np.array(rng.choice([(150, 100, 60), (120, 80, 50), (185, 140, 95)]), dtype=np.float32)
    arr = base * (0.75 + 0.35 * grain[..., None]) + nrng.normal(0, 4, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))


def phone_photo(stamp: Image.Image, background: Image.Image, rng: random.Random) -> Image.Image:
    """The product small in frame on a real background, seen at a slant, with light fall-off and noise."""
    W, H = 800, 600
    scene = ImageOps.fit(background.convert("RGB"), (W, H)).convert("RGBA")
    item = fit(stamp, (int(W * rng.uniform(0.3, 0.42)), int(H * rng.uniform(0.4, 0.5))))
    x = (W - item.width) // 2 + rng.randint(-80, 80)
    y = (H - item.height) // 2 + rng.randint(-50, 50)
    shadow = Image.new("RGBA", scene.size, (0, 0, 0, 0))
    shadow.paste((0, 0, 0, 110), (x + 10, y + 14), item.getchannel("A"))
    scene = Image.alpha_composite(scene, shadow.filter(ImageFilter.GaussianBlur(9)))
    scene.alpha_composite(item, (x, y))
    corners = [(0, 0), (W, 0), (W, H), (0, H)]  # each moved inwards: a slanted view, no empty edges
    inward = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
    src = [
        (cx + sx * rng.uniform(0, 70), cy + sy * rng.uniform(0, 50))
        for (cx, cy), (sx, sy) in zip(corners, inward, strict=True)
    ]
    img = scene.convert("RGB").transform(
        (W, H), Image.Transform.PERSPECTIVE, perspective_coeffs(corners, src), Image.Resampling.BICUBIC
    )
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    lx, ly = rng.uniform(0, W), rng.uniform(0, H)
    light = 1.15 - 0.45 * np.hypot(xx - lx, yy - ly) / np.hypot(W, H)
    warm = np.array([1.05, 1.0, 0.9]) if rng.random() < 0.5 else np.array([0.95, 1.0, 1.07])
    nrng = np.random.default_rng(rng.randrange(2**32))
    arr = np.asarray(img, np.float32) * light[..., None] * warm + nrng.normal(0, 6, (H, W, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def png_with_header(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A small valid PNG whose IHDR then claims ``width`` x ``height`` (CRC fixed); optional garbage IDAT."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    if idat is not None:
        i = data.find(b"IDAT")
        n = struct.unpack(">I", data[i - 4 : i])[0]
        data[i + 4 : i + 4 + n] = idat[:n].ljust(n, b"\x00")
        data[i + 4 + n : i + 8 + n] = struct.pack(">I", zlib.crc32(bytes(data[i : i + 4 + n])))
    return bytes(data)


def write_broken(folder: Path, good_jpeg: Path, rng: random.Random) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    garbage = bytes(rng.randrange(256) for _ in range(2048))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "not_an_image.jpg").write_text("This is a text file with a .jpg name, not a picture.\n")
    real = good_jpeg.read_bytes()
    (folder / "truncated.jpg").write_bytes(real[: len(real) * 4 // 10])
    (folder / "corrupt_header.png").write_bytes(b"\x89PNG\r\n\x1a\n" + garbage)
    (folder / "corrupt_data.png").write_bytes(png_with_header(64, 64, idat=garbage))
    (folder / "bomb.png").write_bytes(png_with_header(30000, 30000))


def humanise(stem: str) -> str:
    return " ".join(stem.replace("-", " ").replace("_", " ").split()).title()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("catalog_samples"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    # The catalog to ingest lives in <out>/catalog; phone-photo queries beside it in <out>/queries.
    rng, top = random.Random(args.seed), args.out
    out = top / "catalog"
    for sub in ("products", "duplicates", "variants", "broken"):
        shutil.rmtree(out / sub, ignore_errors=True)
    shutil.rmtree(top / "queries", ignore_errors=True)

    pool = stamp_pool()
    rng.shuffle(pool)
    stamps = {p: load_stamp(p) for p in pool}
    rgba_ok = [p for p in pool if Image.open(p).mode == "RGBA" and "symbols" not in p.parts]
    formats = rgba_ok[: len(FORMATS)]
    products = [p for p in pool if p not in formats][:N_PRODUCTS]
    rows: list[dict[str, str]] = []  # products.csv
    truth: list[tuple[str, str, str]] = []
    sku = iter(range(1, 100_000))

    def add(
        path: Path,
        stem: str,
        category: str,
        kind: str,
        group: str,
        pid: str | None = None,
        title: str | None = None,
        brand: str | None = None,
    ) -> str:
        pid = pid or f"SKU-{next(sku):05d}"
        digest = int(hashlib.sha1(stem.encode()).hexdigest(), 16)
        rel = path.relative_to(out).as_posix()
        price = f"{4.99 + digest % 9000 / 100:.2f}"
        rows.append(
            {
                "path": rel,
                "product_id": pid,
                "title": title or humanise(stem),
                "category": category,
                "brand": brand or BRANDS[digest % len(BRANDS)],
                "price": price,
            }
        )
        truth.append((rel, group, kind))
        return pid

    shots: dict[Path, tuple[Path, str, str, str]] = {}  # stamp -> (file, stem, product id, category)
    for p in products:
        category = p.relative_to(STAMPS).parts[0]
        dest = out / "products" / category / f"{p.stem}.jpg"
        save_jpeg(product_shot(stamps[p], grey=rng.random() < 0.2), dest)
        shots[p] = (dest, p.stem, add(dest, p.stem, category, "original", p.stem), category)

    fmt_dir = out / "products" / "formats"
    fmt_dir.mkdir(parents=True, exist_ok=True)
    for i, (p, kind) in enumerate(zip(formats, FORMATS, strict=True)):
        category, shot = p.relative_to(STAMPS).parts[0], product_shot(stamps[p], grey=False)
        name = {"rgba": "png", "palette": "gif", "16bit": "png"}.get(kind, "jpg")
        dest = fmt_dir / f"{p.stem}_{kind}.{name}"
        if kind == "rgba":
            product_shot(stamps[p], grey=False, mode="RGBA").save(dest, "PNG")
        elif kind == "palette":
            shot.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(dest, "GIF")
        elif kind == "grey":
            save_jpeg(shot.convert("L"), dest)
        elif kind == "16bit":
            Image.fromarray(np.asarray(shot.convert("L"), np.uint16) * 257).save(dest, "PNG")
        elif kind == "cmyk":
            save_jpeg(shot.convert("CMYK"), dest)
        else:  # stored turned 90° anticlockwise; EXIF orientation 6 says "rotate 90° clockwise to view"
            exif = Image.Exif()
            exif[0x0112] = 6
            wide = ImageOps.pad(shot, (800, 600), color=(255, 255, 255))
            save_jpeg(wide.transpose(Image.Transpose.ROTATE_90), dest, exif=exif.tobytes())
        add(dest, p.stem, category, "original", p.stem, title=f"{humanise(p.stem)} #{i + 1}")

    # Near-duplicate groups: 2-4 transformed copies; every third copy is listed by another seller.
    sources = products[:N_GROUPS]
    copies = 0
    for i, p in enumerate(sources):
        dest, stem, pid, category = shots[p]
        img = Image.open(dest).convert("RGB")
        for j in range(2 + i % 3):
            name = TRANSFORMS[(i * 3 + j) % len(TRANSFORMS)]
            path = apply_transform(name, dest, img, out / "duplicates" / stem, rng)
            copies += 1
            other = copies % 3 == 0
            add(
                path,
                stem,
                category,
                name,
                stem,
                pid=None if other else pid,
                brand=rng.choice(SELLERS) if other else None,
            )

    # Colour variants: strongly hue-shifted colourful stamps, each its own SKU and group.
    colourful = [p for p in products[N_GROUPS:] if dominant_hue(stamps[p])[0] > 0.4][:N_VARIANTS]
    used: set[str] = set()
    for p in colourful:
        hue = dominant_hue(stamps[p])[1]
        far = [c for c, hh in HUES.items() if min(abs(hh - hue), 360 - abs(hh - hue)) >= 100]
        colour = min(far, key=lambda c: (c in used, rng.random()))
        used.add(colour)
        dest = out / "variants" / f"{p.stem}__variant_{colour}.jpg"
        save_jpeg(product_shot(hue_shift(stamps[p], HUES[colour]), grey=False), dest)
        add(
            dest,
            p.stem,
            p.relative_to(STAMPS).parts[0],
            f"variant_{colour}",
            f"{p.stem}__variant_{colour}",
            title=f"{humanise(p.stem)} ({colour.title()})",
        )

    # Phone-photo queries (not in products.csv or truth.csv: the stem in the name is the answer).
    backgrounds = [p for p in tuxpaint_images("holdout") if p.parent.name == "templates"]
    big = [p for p in products if min(stamps[p].size) >= 100 and "symbols" not in p.parts][:N_QUERIES]
    for k, p in enumerate(big):
        bg = Image.open(backgrounds[k // 2]) if k % 2 == 0 and k // 2 < len(backgrounds) else None
        photo = phone_photo(stamps[p], bg or wood((800, 600), rng), rng)
        save_jpeg(photo, top / "queries" / f"{p.stem}__phone.jpg", quality=85)

    write_broken(out / "broken", shots[products[-1]][0], rng)

    with open(out / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "product_id", "title", "category", "brand", "price"])
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["path"]))
    with open(out / "truth.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "group", "kind"), *sorted(truth)])

    total = 0
    for sub in ("catalog/products", "catalog/duplicates", "catalog/variants", "queries", "catalog/broken"):
        files = [f for f in (top / sub).rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
        total += size
        print(f"{sub:11s} {len(files):4d} files {size / 1e6:6.2f} MB")
    print(f"total       {total / 1e6:.2f} MB; {len(rows)} rows in products.csv, {len(truth)} in truth.csv")


if __name__ == "__main__":
    main()
