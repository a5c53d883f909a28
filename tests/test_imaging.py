"""The safe loader on real files of every mode, and on broken ones."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup.errors import ImageError
from dedup.imaging import decode_bytes, iter_image_files, load_image, to_model_input


def _png_bytes(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def test_alpha_is_composited_on_white() -> None:
    img = Image.new("RGBA", (20, 10), (255, 0, 0, 0))  # fully transparent red
    img.paste((0, 0, 255, 255), (0, 0, 5, 5))  # an opaque blue corner
    loaded = decode_bytes(_png_bytes(img))
    arr = np.asarray(loaded.image)
    assert loaded.image.mode == "RGB"
    assert tuple(arr[8, 15]) == (255, 255, 255)
    assert tuple(arr[1, 1]) == (0, 0, 255)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "LA", "1"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    img = Image.new("RGB", (16, 16), (40, 120, 200))
    if mode == "I;16":
        src = Image.fromarray((np.arange(256, dtype=np.uint16).reshape(16, 16) * 200).astype(np.uint16))
    else:
        src = img.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = io.BytesIO()
    src.save(out, fmt)
    loaded = decode_bytes(out.getvalue())
    assert loaded.image.mode == "RGB" and loaded.image.size == (16, 16)
    if mode == "I;16":  # 16-bit grey is stretched, not clipped to white
        arr = np.asarray(loaded.image)[..., 0]
        assert arr.min() == 0 and arr.max() == 255


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 10, 20))  # black strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif, quality=95)
    loaded = decode_bytes(out.getvalue())
    assert (loaded.width, loaded.height) == (20, 40)
    assert loaded.image.size == (20, 40)
    arr = np.asarray(loaded.image).mean(axis=2)
    assert arr[:8].mean() < 60  # the strip is now at the top
    assert arr[-8:].mean() > 200


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("P", (8, 8), c) for c in (1, 2, 3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    assert decode_bytes(out.getvalue()).image.size == (8, 8)


def test_jpeg_draft_downscale_keeps_original_size() -> None:
    out = io.BytesIO()
    Image.new("RGB", (2000, 1000), (10, 200, 30)).save(out, "JPEG")
    loaded = decode_bytes(out.getvalue(), target=96)
    assert (loaded.width, loaded.height) == (2000, 1000)
    assert max(loaded.image.size) <= 192
    assert to_model_input(loaded.image, 96).shape == (96, 96, 3)


def _bomb_png(width: int, height: int) -> bytes:
    data = bytearray(_png_bytes(Image.new("L", (4, 4))))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "payload", "kind"),
    [
        ("empty.jpg", b"", "empty"),
        ("not_image.jpg", b"hello, this is text\n" * 20, "not_image"),
        ("bomb.png", _bomb_png(40000, 40000), "too_large"),
        ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 30, "corrupt"),
    ],
)
def test_broken_files_raise_typed_errors(tmp_path: Path, name: str, payload: bytes, kind: str) -> None:
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert info.value.kind == kind
    assert str(path) in info.value.message and info.value.reason


def test_truncated_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(out, "JPEG")
    path = tmp_path / "truncated.jpg"
    path.write_bytes(out.getvalue()[: len(out.getvalue()) // 3])
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert info.value.kind == "truncated"


def test_walk_survives_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "b" / "x.png")
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    files = iter_image_files(tmp_path, frozenset({".png"}))
    assert [f.name for f in files] == ["x.png"]
