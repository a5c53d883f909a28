"""Safe image decoding and normalisation: the one loader used by ingest, query, training and the API.

Every failure becomes an :class:`~dedup.errors.ImageError` carrying the path and a reason a person
understands; nothing here prints or swallows errors.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dedup.config import MAX_FILE_BYTES, MAX_PIXELS, QueryView
from dedup.errors import ImageError

log = logging.getLogger(__name__)

WHITE = (255, 255, 255)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image, RGB, possibly downscaled, with facts about the original file."""

    image: Image.Image  # RGB, EXIF orientation applied, alpha composited on white
    width: int  # original size after orientation, before any downscale
    height: int
    format: str
    bytes: int
    sha256: str  # of the file bytes

    @property
    def pixel_hash(self) -> str:
        """sha256 of the decoded RGB pixels and their size: equal for the same picture in another container."""
        h = hashlib.sha256(f"{self.image.width}x{self.image.height}:".encode())
        h.update(self.image.tobytes())
        return h.hexdigest()


def read_file(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a file's bytes, refusing empty and oversized files with a clear reason."""
    p = str(path)
    try:
        size = os.path.getsize(p)
        if size == 0:
            raise ImageError(p, "empty", "the file is empty (0 bytes)")
        if size > max_bytes:
            raise ImageError(p, "too_large", f"the file is {size:,} bytes, over the {max_bytes:,}-byte limit")
        with open(p, "rb") as fh:
            return fh.read()
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError(p, "io", f"cannot read the file: {exc.strerror or exc}") from exc


def load_image(path: str | os.PathLike[str], target: int | None = None, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read and decode an image file; see :func:`decode_bytes`."""
    data = read_file(path)
    return decode_bytes(data, str(path), target=target, max_pixels=max_pixels)


def decode_bytes(
    data: bytes,
    name: str = "<upload>",
    target: int | None = None,
    max_pixels: int = MAX_PIXELS,
    sha256: str | None = None,
) -> LoadedImage:
    """Decode image bytes to an RGB :class:`LoadedImage`.

    ``target`` is the smallest side length the caller needs: JPEGs are then decoded at a reduced DCT
    scale (draft mode) and every image is downscaled so its longer side is at most ``2 * target``,
    which keeps memory flat and makes later resizing cheap. ``name`` only labels errors; ``sha256`` is the
    bytes' digest when the caller has it already.
    """
    if not data:
        raise ImageError(name, "empty", "the file is empty (0 bytes)")
    sha = sha256 or hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            # Pillow warns before it errors on bombs; we enforce our own limit below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(io.BytesIO(data))
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                if isinstance(exc, UnidentifiedImageError):
                    raise
                # The header itself is broken (a bad chunk length reads as "truncated" to Pillow).
                raise ImageError(name, "corrupt", f"the image header is corrupt ({exc})") from exc
            fmt = img.format or "unknown"
            w, h = img.size
            if w <= 0 or h <= 0:
                raise ImageError(name, "corrupt", f"the image header gives an invalid size {w}x{h}")
            if w * h > max_pixels:
                raise ImageError(
                    name,
                    "too_large",
                    f"{w}x{h} = {w * h:,} pixels is over the {max_pixels:,}-pixel limit (decompression bomb guard)",
                )
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF/WebP/PNG: the first frame stands for the file
            if target and fmt == "JPEG":
                # The model letterboxes onto a square, so only the long side must reach ``target``: ask the
                # DCT-scaled decode for that, not for both sides (1/8 instead of 1/4 scale for 800x600).
                long_side = max(w, h)
                img.draft("RGB", (max(1, -(-target * w // long_side)), max(1, -(-target * h // long_side))))
            img.load()
            orientation = _orientation(img)
            rgb = _apply_orientation(_to_rgb(img), orientation)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(name, "not_image", "not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(name, "too_large", f"decompression bomb guard: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc)
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            raise ImageError(name, "truncated", f"the image data is truncated ({msg or 'unexpected end'})") from exc
        raise ImageError(name, "corrupt", f"the image data is corrupt ({msg or type(exc).__name__})") from exc
    # Original size after orientation: a 90° EXIF rotation swaps the sides.
    ow, oh = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    if target:
        limit = 2 * target
        if max(rgb.size) > limit:
            rgb.thumbnail((limit, limit), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return LoadedImage(image=rgb, width=ow, height=oh, format=fmt, bytes=len(data), sha256=sha)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not fail an otherwise good image
        return 1


def _apply_orientation(rgb: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation value to the already converted ``rgb``."""
    transpose = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return rgb.transpose(transpose) if transpose is not None else rgb


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit/float grey: stretch to 8 bits rather than clip (Pillow's convert("L") clips at 255).
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode in ("LA", "PA", "La"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", img.size, WHITE)
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


#: A pixel differs from the background when one channel is further than this from it (0–255).
TRIM_TOLERANCE = 28
#: Keep this share of the content box's longer side as a margin around a trimmed picture.
TRIM_MARGIN = 0.04


def trim_background(img: Image.Image, tolerance: int = TRIM_TOLERANCE, margin: float = TRIM_MARGIN) -> Image.Image:
    """Crop a uniform background border (white, tinted, a letterbox) down to the content's box.

    The four corners name the background; when they disagree (a photo, a scene) the image comes back
    as it is. A product shot, its padded copy, its re-tinted copy and most of its crops then trim to
    the same picture, so the model sees the same input for all of them. A border stays when trimming
    would keep almost everything (> 97 % of the area) or leave a sliver (< 10 % of a side).
    """
    w, h = img.size
    if img.mode != "RGB" or min(w, h) < 8:
        return img
    # The corners first, in plain Python: most photos stop here, before the picture becomes an array.
    corners = [img.getpixel(xy) for xy in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]
    bg_values = []
    for channel in zip(*corners, strict=True):
        low, mid_a, mid_b, high = sorted(channel)
        median = (mid_a + mid_b) / 2
        if max(median - low, high - median) > tolerance:
            return img
        bg_values.append(median)
    # Exact in float32 (whole or half values); a reduction over the 3-long channel axis is slow, an OR is not.
    far = np.abs(np.asarray(img, dtype=np.int16) - np.array(bg_values, np.float32)) > tolerance
    content = far[..., 0] | far[..., 1] | far[..., 2]
    # Two differing pixels make a content row/column: one stray JPEG ringing pixel does not.
    rows = np.flatnonzero(content.sum(axis=1) >= 2)
    cols = np.flatnonzero(content.sum(axis=0) >= 2)
    if rows.size == 0 or cols.size == 0:
        return img
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if bottom - top < 0.1 * h or right - left < 0.1 * w:
        return img
    m = round(margin * max(bottom - top, right - left))
    top, bottom, left, right = max(0, top - m), min(h, bottom + m), max(0, left - m), min(w, right + m)
    if (bottom - top) * (right - left) > 0.97 * h * w:
        return img
    return img.crop((left, top, right, bottom))


def to_model_input(img: Image.Image, size: int, trim: bool = False) -> np.ndarray:
    """Letterbox an RGB image onto a white square and resize it: ``(size, size, 3)`` uint8.

    Padding (not stretching) keeps the aspect ratio, so a padded copy of a product shot maps to
    nearly the same input as the original. ``trim`` first crops a uniform background border
    (:func:`trim_background`); a model card says whether its model was trained that way. Training
    and inference both use this function.
    """
    if trim:
        img = trim_background(img)
    w, h = img.size
    side = max(w, h)
    if w != h:
        square = Image.new("RGB", (side, side), WHITE)
        square.paste(img, ((side - w) // 2, (side - h) // 2))
        img = square
    if side != size:
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0 if side > 2 * size else None)
    return np.asarray(img, dtype=np.uint8)


#: Side of the thumbnail the ``central`` keeper rule compares (``dedup.matching.keeper``).
KEEPER_THUMB_SIDE = 32
#: Side of the square on which the ``detail`` keeper rule measures sharpness.
KEEPER_DETAIL_SIDE = 256
#: The smallest side ``keeper_signals`` needs from the decoder (``load_image(target=...)``).
KEEPER_DECODE_TARGET = KEEPER_DETAIL_SIDE


def keeper_signals(img: Image.Image) -> tuple[np.ndarray, float]:
    """The pixel signals of the keeper rules: a 32×32 RGB thumbnail and a detail measure.

    The thumbnail squeezes the whole picture (borders included: a padded copy must look padded). The
    detail is the mean absolute Laplacian of the trimmed picture in grey at 256×256, so it compares
    copies of different sizes on one scale: blur, upscaling and heavy compression lower it.
    """
    thumb = np.asarray(img.resize((KEEPER_THUMB_SIDE, KEEPER_THUMB_SIDE), Image.Resampling.BOX), dtype=np.uint8)
    side = KEEPER_DETAIL_SIDE
    grey = trim_background(img).convert("L").resize((side, side), Image.Resampling.LANCZOS)
    g = np.asarray(grey, dtype=np.float32)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return thumb, float(np.abs(lap).mean())


#: The IJG (libjpeg) standard luminance quantisation table at quality 50, in natural (row-major) order.
_IJG_LUMINANCE = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip


def jpeg_quality(img: Image.Image) -> float | None:
    """The IJG quality (1–100) a JPEG's luminance table was made with, or None for other formats.

    libjpeg scales its standard table by ``50 / q`` below quality 50 and by ``2 - q / 50`` above, so the
    mean ratio of the file's table to the standard one gives ``q`` back; encoders with other tables get
    the quality of the IJG table closest in scale. A copy re-encoded at a lower quality shows it here
    even when its pixels look the same.
    """
    tables = getattr(img, "quantization", None)
    if img.format != "JPEG" or not tables or 0 not in tables:
        return None
    table = np.asarray(tables[0], dtype=np.float64)
    if table.size != 64:
        return None
    # Pillow lists the table in zig-zag order, so compare sorted values: the scale is what matters.
    scale = float(np.mean(np.sort(table) / np.sort(_IJG_LUMINANCE))) * 100.0
    quality = 100.0 - scale / 2.0 if scale <= 100.0 else 5000.0 / scale
    return round(min(100.0, max(1.0, quality)), 1)


@dataclass(frozen=True)
class ModelInput:
    """How a model wants its images: the side of its square input, and whether borders are trimmed first."""

    size: int
    trim: bool = False

    def __call__(self, img: Image.Image) -> np.ndarray:
        """The ``(size, size, 3)`` uint8 input for an RGB image (see :func:`to_model_input`)."""
        return to_model_input(img, self.size, trim=self.trim)


@dataclass(frozen=True)
class DecodedFile:
    """What ingest keeps of a decoded file: the facts for its record and its model input, not its pixels."""

    sha256: str
    pixel_hash: str
    width: int
    height: int
    format: str
    model_input: np.ndarray  # (S, S, 3) uint8


def decode_file(path: str | os.PathLike[str], preprocess: ModelInput) -> DecodedFile | ImageError:
    """Read and decode one file for ingest, or the reason it cannot be used (returned, not raised).

    Runs in ingest's worker threads; it holds no lock and returns nothing shared.
    """
    try:
        loaded = load_image(path, target=preprocess.size)
    except ImageError as exc:
        return exc
    return DecodedFile(
        loaded.sha256, loaded.pixel_hash, loaded.width, loaded.height, loaded.format, preprocess(loaded.image)
    )


def decode_files(paths: Sequence[str | os.PathLike[str]], preprocess: ModelInput) -> list[DecodedFile | ImageError]:
    """:func:`decode_file` of each path, in order (one task for a worker)."""
    return [decode_file(p, preprocess) for p in paths]


def view_images(img: Image.Image, views: Sequence[QueryView]) -> list[Image.Image]:
    """The ``views`` of ``img`` in order: crops keeping each view's fraction of each side around the view's
    centre (moved inwards so the crop stays in the frame), mirrored when the view says so (a whole,
    unmirrored view is ``img`` itself)."""
    w, h = img.size
    out = []
    for view in views:
        if not 0.0 < view.fraction <= 1.0:
            raise ValueError(f"view fractions must be in (0, 1], got {view.fraction}")
        cw, ch = max(1, round(w * view.fraction)), max(1, round(h * view.fraction))
        x0 = (w - cw) // 2 if view.cx == 0.5 else min(max(0, round(w * view.cx - cw / 2)), w - cw)
        y0 = (h - ch) // 2 if view.cy == 0.5 else min(max(0, round(h * view.cy - ch / 2)), h - ch)
        crop = img if (cw, ch) == (w, h) else img.crop((x0, y0, x0 + cw, y0 + ch))
        out.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if view.mirror else crop)
    return out


def thumbnail_jpeg(img: Image.Image, size: int = 160, quality: int = 80) -> bytes:
    """A JPEG thumbnail whose longer side is ``size`` pixels."""
    thumb = img.copy()
    thumb.thumbnail((size, size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=quality)
    return out.getvalue()


def iter_image_files(root: str | os.PathLike[str], extensions: frozenset[str]) -> list[Path]:
    """All files under ``root`` with an image extension, sorted; symlink loops are safe.

    Symlinked folders are followed once: a folder whose real path was already visited is skipped.
    """
    found: list[Path] = []
    seen_dirs: set[str] = set()

    def walk(folder: Path) -> None:
        real = os.path.realpath(folder)
        if real in seen_dirs:
            return
        seen_dirs.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=True):
                    walk(Path(entry.path))
                elif entry.is_file(follow_symlinks=True) and Path(entry.name).suffix.lower() in extensions:
                    found.append(Path(entry.path))
            except OSError as exc:  # a dangling symlink or a permission problem: skip, say so
                log.warning("cannot inspect %s: %s", entry.path, exc.strerror or exc)

    walk(Path(root))
    return found
