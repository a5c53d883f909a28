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
from dedup.imaging import (
    DecodedFile,
    ModelInput,
    decode_bytes,
    decode_files,
    iter_image_files,
    load_image,
    to_model_input,
    trim_background,
)


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


def test_decode_files_returns_each_files_facts_or_its_error_in_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    good = tmp_path / "good.jpg"
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(good, "JPEG")
    (tmp_path / "text.png").write_bytes(b"not an image at all\n" * 10)
    preprocess = ModelInput(48, trim=True)
    first, broken, again = decode_files([good, tmp_path / "text.png", good], preprocess)
    assert isinstance(first, DecodedFile) and isinstance(again, DecodedFile) and first.sha256 == again.sha256
    loaded = load_image(good, target=48)
    assert (first.sha256, first.pixel_hash, first.width, first.height, first.format) == (
        loaded.sha256, loaded.pixel_hash, 400, 300, "JPEG",
    )  # fmt: skip
    np.testing.assert_array_equal(first.model_input, preprocess(loaded.image))
    assert isinstance(broken, ImageError) and broken.kind == "not_image" and "text.png" in broken.path


def test_walk_survives_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "b" / "x.png")
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    files = iter_image_files(tmp_path, frozenset({".png"}))
    assert [f.name for f in files] == ["x.png"]


SAMPLES = Path(__file__).resolve().parents[1] / "catalog_samples"


def _input_gap(a: Image.Image, b: Image.Image, trim: bool) -> float:
    """Mean absolute pixel difference of two images' model inputs."""
    x, y = (to_model_input(im, 96, trim=trim).astype(np.int16) for im in (a, b))
    return float(np.abs(x - y).mean())


def test_trim_maps_a_padded_copy_onto_its_original() -> None:
    a = load_image(SAMPLES / "catalog" / "products" / "vehicles" / "balloon360.jpg", target=96).image
    b = load_image(SAMPLES / "catalog" / "duplicates" / "balloon360__pad.jpg", target=96).image
    assert trim_background(b).size != b.size  # the copy's white border is cut
    # Trimmed, the copy's model input is close to the original's; letterboxed alone it is not.
    assert _input_gap(a, b, trim=True) < 0.5 * _input_gap(a, b, trim=False)


def test_trim_cuts_a_tinted_background_to_the_same_box_as_the_original() -> None:
    a = load_image(SAMPLES / "catalog" / "products" / "symbols" / "V_filled.jpg", target=96).image
    b = load_image(SAMPLES / "catalog" / "duplicates" / "V_filled__tint.jpg", target=96).image
    ta, tb = trim_background(a), trim_background(b)
    assert tb.size != b.size
    # Same content box, as a share of each picture (the copy may be stored at another size).
    share_a = np.array(ta.size) / np.array(a.size)
    share_b = np.array(tb.size) / np.array(b.size)
    assert np.abs(share_a - share_b).max() < 0.05


def test_trim_leaves_a_photo_and_a_blank_or_full_picture_alone() -> None:
    photo = load_image(SAMPLES / "queries" / "chick__phone.jpg", target=96).image
    assert trim_background(photo) is photo  # a scene: the corners disagree
    blank = Image.new("RGB", (80, 60), (255, 255, 255))
    blank.putpixel((40, 30), (0, 0, 0))
    assert trim_background(blank) is blank  # a speck is not content worth zooming into
    full = Image.new("RGB", (80, 60), (255, 255, 255))
    full.paste((200, 30, 30), (1, 1, 79, 59))
    assert trim_background(full) is full  # nothing worth cutting
    grey = photo.convert("L")
    assert trim_background(grey) is grey  # only RGB pictures are trimmed


def test_trim_keeps_a_margin_around_the_content() -> None:
    img = Image.new("RGB", (200, 100), (250, 250, 250))
    img.paste((20, 90, 160), (60, 20, 140, 80))  # an 80 x 60 box
    out = trim_background(img)
    assert out.size == (80 + 2 * 3, 60 + 2 * 3)  # 4 % of the longer side on each side
    assert np.asarray(out)[0, 0].tolist() == [250, 250, 250]
