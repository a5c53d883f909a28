"""Safe image decoding and normalisation: the one loader used by ingest, query, training and the API.

Every failure becomes an :class:`~dedup.errors.ImageError` carrying the path and a reason a person
understands; nothing here prints or swallows errors.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import logging
import math
import os
import stat
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from dedup.config import MAX_DECODE_BYTES, MAX_FILE_BYTES, MAX_PIXELS, QueryView
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
    quality: float | None = None  # a JPEG's IJG quality (jpeg_quality), None for other formats

    @property
    def pixel_hash(self) -> str:
        """sha256 of the decoded RGB pixels and their size: equal for the same picture in another container."""
        h = hashlib.sha256(f"{self.image.width}x{self.image.height}:".encode())
        h.update(self.image.tobytes())
        return h.hexdigest()


def load_image(path: str | os.PathLike[str], target: int | None = None, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read and decode an image file; see :func:`decode_bytes`.

    The file is hashed and decoded as a stream, never held in memory whole. Anything but a regular file (a
    named pipe, a device behind a symlink) is refused without blocking on it, with reason ``not_regular_file``.
    """
    p = str(path)
    try:
        # O_NONBLOCK: opening a named pipe must not wait for a writer (it is refused just below).
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ImageError(p, *_open_failure(p, exc)) from exc
    with os.fdopen(fd, "rb") as fh:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImageError(p, "not_regular_file", f"not a regular file (a {_file_kind(st.st_mode)})")
            size = st.st_size
            if size == 0:
                raise ImageError(p, "empty", "the file is empty (0 bytes)")
            if size > MAX_FILE_BYTES:
                raise ImageError(p, "too_large", f"the file is {size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit")
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            fh.seek(0)
        except OSError as exc:
            raise ImageError(p, "io", f"cannot read the file: {exc.strerror or exc}") from exc
        return _decode(fh, size, p, target, max_pixels, digest)


def _open_failure(path: str, exc: OSError) -> tuple[str, str]:
    """The kind and reason of a file that cannot be opened: a link loop, a dangling link, or an I/O error."""
    if exc.errno == errno.ELOOP:
        return "link_loop", "a symbolic link loop (the link leads back to itself)"
    if exc.errno == errno.ENOENT and os.path.islink(path):
        try:
            to = os.readlink(path)
        except OSError:
            to = "?"
        return "dangling_link", f"a symbolic link to {to!r}, which does not exist"
    return "io", f"cannot read the file: {exc.strerror or exc}"


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "folder"),
    ):
        if test(mode):
            return kind
    return "special file"


def decode_bytes(
    data: bytes,
    name: str = "<upload>",
    target: int | None = None,
    max_pixels: int = MAX_PIXELS,
    sha256: str | None = None,
) -> LoadedImage:
    """Decode image bytes to an RGB :class:`LoadedImage`.

    ``target`` is the smallest side length the caller needs: JPEGs are then decoded at a reduced DCT
    scale (draft mode), other formats are reduced by whole factors band by band as they are converted,
    and every image ends with its longer side at most ``2 * target`` (as Pillow's ``thumbnail`` would
    make it), which keeps memory flat and makes later resizing cheap. ``name`` only labels errors;
    ``sha256`` is the bytes' digest when the caller has it already.

    Memory: an image whose decoded picture would pass :data:`~dedup.config.MAX_DECODE_BYTES` is refused
    (``too_large``) before it is decoded, and conversion works on bands of rows, so decoding adds at most
    about that much to the process, and all the decodes of a process together hold at most that much at once
    (:data:`DECODE_BUDGET`); a ``MemoryError`` is reported as ``out_of_memory``, not raised.
    """
    if not data:
        raise ImageError(name, "empty", "the file is empty (0 bytes)")
    sha = sha256 or hashlib.sha256(data).hexdigest()
    return _decode(io.BytesIO(data), len(data), name, target, max_pixels, sha)


#: Bytes a pixel takes in Pillow's memory, by mode (the rest, RGB included, take 4).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
#: Decoders that hold a second full copy of the picture while they decode (libwebp hands Pillow its own buffer).
_DOUBLE_BUFFERED = frozenset({"WEBP"})
#: Modes converted to 8 bits by stretching their range (Pillow's ``convert("L")`` would clip at 255).
_WIDE_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
#: Pixels in one band of rows converted at a time: bounds the memory conversion adds (~8 MB for RGB).
BAND_PIXELS = 2 * 1024 * 1024


class DecodeBudget:
    """Memory for decoded pictures, shared by the threads of one process: at most ``limit`` bytes at once.

    A decode takes its picture's size from the budget before it loads it and gives it back after, so four
    uploads of 180 MiB pictures at once take their turns instead of holding 720 MiB, while small pictures
    still decode side by side. A picture larger than the whole budget is refused before it gets here.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Wait until ``nbytes`` fit (or nothing else is held), hold them for the ``with`` block."""
        with self._free:
            while self._used and self._used + nbytes > self.limit:
                self._free.wait()
            self._used += nbytes
        try:
            yield
        finally:
            with self._free:
                self._used -= nbytes
                self._free.notify_all()


#: What converting one band of rows costs at most, on top of the picture: the band, its copy and int64 arithmetic.
BAND_COST = 16 * BAND_PIXELS
#: After a decode this large, freed memory is handed back to the system (glibc keeps it otherwise, and a server's
#: resident size would stay at its largest decode's).
TRIM_AFTER_BYTES = 64 * 1024 * 1024


def _return_freed_memory() -> None:
    """``malloc_trim(0)`` where the C library has it (glibc); elsewhere nothing."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


#: The budget of every decode in this process (worker processes each have their own).
DECODE_BUDGET = DecodeBudget(MAX_DECODE_BYTES)


def decoded_bytes(img: Image.Image) -> int:
    """The memory decoding ``img`` (opened, not loaded; drafted if it will be) takes, in bytes."""
    w, h = img.size
    per_pixel = _PIXEL_BYTES.get(img.mode, 4)
    return w * h * per_pixel * (2 if img.format in _DOUBLE_BUFFERED else 1)


def _decode(fh: BinaryIO, nbytes: int, name: str, target: int | None, max_pixels: int, sha: str) -> LoadedImage:
    """Decode an open image file (see :func:`decode_bytes`)."""
    try:
        with warnings.catch_warnings():
            # Pillow warns before it errors on bombs; we enforce our own limit below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(fh)
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
            quality = jpeg_quality(img)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF/WebP/PNG: the first frame stands for the file
            if target and fmt == "JPEG":
                # The model letterboxes onto a square, so only the long side must reach ``target``: ask the
                # DCT-scaled decode for that, not for both sides (1/8 instead of 1/4 scale for 800x600).
                long_side = max(w, h)
                img.draft("RGB", (max(1, -(-target * w // long_side)), max(1, -(-target * h // long_side))))
            need = decoded_bytes(img)
            if need > MAX_DECODE_BYTES:
                raise ImageError(
                    name,
                    "too_large",
                    f"decoding {w}x{h} ({img.mode}) takes {need / 2**20:,.0f} MiB, over the "
                    f"{MAX_DECODE_BYTES / 2**20:,.0f} MiB decode limit",
                )
            # The budget also counts the bands a conversion works on, so two 16-bit pictures that fit side by
            # side on paper do not overshoot it together.
            cost = min(MAX_DECODE_BYTES, need + (BAND_COST if img.mode != "RGB" else 0))
            with DECODE_BUDGET.hold(cost):
                img.load()
                orientation = _orientation(img)
                rgb = _apply_orientation(_shrink_to_rgb(img, target), orientation)
                del img  # the full-size picture goes before its share of the budget is handed on
            if need >= TRIM_AFTER_BYTES:
                _return_freed_memory()
    except ImageError:
        raise
    except MemoryError as exc:
        raise ImageError(name, "out_of_memory", "not enough memory to decode it") from exc
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
    return LoadedImage(image=rgb, width=ow, height=oh, format=fmt, bytes=nbytes, sha256=sha, quality=quality)


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


def _fit(w: int, h: int, limit: int) -> tuple[int, int] | None:
    """The size ``Image.thumbnail((limit, limit))`` gives a ``w``×``h`` image, or None when it fits already."""
    if w <= limit and h <= limit:
        return None
    aspect = w / h
    if aspect <= 1:  # Pillow's own branches and rounding, so the sizes agree to the pixel
        x = limit * aspect
        return max(min(math.floor(x), math.ceil(x), key=lambda n: abs(aspect - n / limit)), 1), limit
    y = limit / aspect
    return limit, max(min(math.floor(y), math.ceil(y), key=lambda n: 0 if n == 0 else abs(aspect - limit / n)), 1)


def _shrink_to_rgb(img: Image.Image, target: int | None) -> Image.Image:
    """``img`` (loaded) as RGB, its longer side brought down to ``2 * target`` when it is longer.

    The result is the one of converting to RGB and then ``thumbnail((2 * target,) * 2, BILINEAR,
    reducing_gap=2.0)``, but the whole-factor reduction Pillow would do first is done before the
    conversion, band by band (:func:`_convert_reduced`), so a 16-bit, palette or transparent picture is
    never converted at full size.
    """
    w, h = img.size
    final = _fit(w, h, 2 * target) if target else None
    # Pillow's resize with reducing_gap=2.0 reduces by these whole factors first, then resamples the rest.
    factor = (int(w / final[0] / 2) or 1, int(h / final[1] / 2) or 1) if final else (1, 1)
    small = (img.reduce(factor) if factor != (1, 1) else img) if img.mode == "RGB" else _convert_reduced(img, factor)
    if final is None:
        return small
    return small.resize(final, Image.Resampling.BILINEAR, box=(0, 0, w / factor[0], h / factor[1]))


def _convert_reduced(img: Image.Image, factor: tuple[int, int]) -> Image.Image:
    """``_to_rgb(img).reduce(factor)``, computed on bands of rows so no full-size RGB copy is ever made.

    Bands start on multiples of the vertical factor, so each reduces to exactly the rows the whole would.
    Wide grey modes (16-bit, 32-bit, float) are stretched from their range to 0–255 in integer arithmetic
    (the range is found first, band by band).
    """
    fx, fy = factor
    w, h = img.size
    rows = max(fy, (BAND_PIXELS // max(1, w)) // fy * fy)
    bands = [(top, min(h, top + rows)) for top in range(0, h, rows)]
    wide = img.mode in _WIDE_GREY
    lo, hi = _range(img, bands) if wide else (0, 0)
    out = Image.new("L" if wide else "RGB", (-(-w // fx), -(-h // fy)))
    for top, bottom in bands:
        band = img.crop((0, top, w, bottom))
        part = _stretch(band, lo, hi) if wide else _to_rgb(band)
        out.paste(part.reduce(factor) if factor != (1, 1) else part, (0, top // fy))
    return out.convert("RGB") if wide else out


def _range(img: Image.Image, bands: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """The smallest and largest (finite) pixel value of a wide grey image; ``(0, 0)`` when it has none."""
    lo, hi = math.inf, -math.inf
    for top, bottom in bands:
        arr = np.asarray(img.crop((0, top, img.width, bottom)))
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        if finite.size:
            lo, hi = min(lo, finite.min().item()), max(hi, finite.max().item())
    return (lo, hi) if lo <= hi else (0, 0)


def _stretch(band: Image.Image, lo: float, hi: float) -> Image.Image:
    """A wide grey band as 8-bit grey: ``lo`` → 0, ``hi`` → 255 (integer arithmetic for integer modes)."""
    if hi <= lo:
        return Image.new("L", band.size, 0)
    arr = np.asarray(band)
    if arr.dtype.kind == "f":
        grey = np.nan_to_num(arr.astype(np.float32), nan=lo, posinf=hi, neginf=lo)
        return Image.fromarray(np.clip((grey - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8), "L")
    # int64: (v - lo) * 255 cannot overflow for 16- or 32-bit values, and floor division keeps it exact.
    scaled = (arr.astype(np.int64) - int(lo)) * 255 // (int(hi) - int(lo))
    return Image.fromarray(scaled.astype(np.uint8), "L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert a Pillow mode of at most 8 bits a channel to RGB; transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
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
    model_input: np.ndarray  # (S, S, 3) uint8; empty when ``vector`` was computed where the file was decoded
    #: The embedding, when a remote worker embedded the file too (``dedup.service.ray_engine``), and its model's id.
    vector: np.ndarray | None = None
    model_id: str | None = None


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
    """Every entry under ``root`` with an image extension that is not a folder, sorted; symlink loops are safe.

    Symlinked folders are followed once: a folder whose real path was already visited is skipped. Entries that
    are not usable files are listed too (a named pipe, a link to a device, a dangling link, a link loop):
    :func:`load_image` then says what is wrong with each, so ingest records it with its reason instead of
    skipping it silently.
    """
    found: list[Path] = []
    seen_dirs: set[str] = set()

    def walk(folder: Path) -> None:
        real = os.path.realpath(folder)
        if real in seen_dirs:
            log.debug("%s: already visited as %s (a symlinked folder or a loop)", folder, real)
            return
        seen_dirs.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror or exc)
            return
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False  # a link loop or a permission problem: the loader names it below
            if is_dir:
                walk(Path(entry.path))
            elif Path(entry.name).suffix.lower() in extensions:
                found.append(Path(entry.path))
            elif entry.is_symlink() and not os.path.exists(entry.path):
                log.warning("%s: a dangling symbolic link or a link loop (not an image name, skipped)", entry.path)

    walk(Path(root))
    return found
