"""Augmentations, data layouts, calibration and a tiny end-to-end training run (real images, no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dedup.embedding import load_encoder
from dedup.errors import InputError
from dedup.training import augment
from dedup.training.calibrate import threshold_at_precision
from dedup.training.data import BatchSampler, add_colour_variants, build_pool, load_identities


def _product(seed: int, size: int = 120) -> Image.Image:
    """A synthetic product shot: coloured shapes on white, different for every seed."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, int(size * rng.uniform(0.7, 1.0))), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(5, size // 2, 2)
        x1, y1 = x0 + rng.integers(15, size // 2), y0 + rng.integers(15, size // 3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return img


@pytest.mark.parametrize("kind", sorted(augment.DUPLICATE_KINDS))
def test_duplicate_transforms_are_seeded_rgb(kind: str) -> None:
    fn = augment.DUPLICATE_KINDS[kind]
    a = fn(_product(1), np.random.default_rng(7))
    b = fn(_product(1), np.random.default_rng(7))
    assert a.mode == "RGB" and min(a.size) >= 8
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_phone_photo_puts_product_on_background() -> None:
    bg = Image.new("RGB", (300, 200), (40, 90, 40))
    out = augment.phone_photo(_product(2), np.random.default_rng(0), [bg])
    assert out.mode == "RGB" and out.size == (256, 256)
    assert np.asarray(out).mean() < 200  # mostly background, not a white page


def test_colour_variant_rotates_hue_and_skips_grey_images() -> None:
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    assert augment.colour_variant(grey, np.random.default_rng(0)) is None
    red = Image.new("RGB", (64, 64), (220, 30, 30))
    out = augment.colour_variant(red, np.random.default_rng(0))
    assert out is not None
    assert np.abs(np.asarray(out, np.int16) - np.asarray(red, np.int16)).mean() > 30


def test_threshold_at_precision_on_toy_distances() -> None:
    pos = np.array([0.1, 0.2, 0.3, 0.6])  # duplicates; the last sits past the first negative
    neg = np.array([0.5, 0.9, 1.2])  # other products
    assert threshold_at_precision(pos, neg, 0.99) == pytest.approx(0.3)
    assert threshold_at_precision(pos, neg, 0.75) == pytest.approx(0.6)
    assert threshold_at_precision(np.array([0.5]), np.array([0.1]), 0.99) == 0.0


def test_layouts_folder_and_subfolders(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(5):
        _product(i).save(flat / f"p{i}.png")
    assert len(load_identities(flat)) == 5
    nested = tmp_path / "nested"
    for i in range(4):
        (nested / f"sku{i}").mkdir(parents=True)
        _product(i).save(nested / f"sku{i}" / "front.png")
        _product(i + 10).save(nested / f"sku{i}" / "back.jpg")
    ids = load_identities(nested)
    assert len(ids) == 4 and all(len(x.files) == 2 for x in ids)
    with pytest.raises(InputError):
        load_identities(tmp_path / "missing")


def test_pool_and_sampler_pair_views_of_one_identity(tmp_path: Path) -> None:
    for i in range(6):
        _product(i).save(tmp_path / f"p{i}.png")
    ids = add_colour_variants(load_identities(tmp_path), 1, seed=0)
    pool = build_pool(ids, views=3, size=32, seed=0, workers=1)
    assert pool.views.shape[1:] == (3, 32, 32, 3) and pool.variant.any()
    x, y = BatchSampler(pool, np.arange(len(pool)), 4, seed=0).sample()
    assert x.shape == (8, 32, 32, 3) and x.dtype == np.uint8
    assert (y[0::2] == y[1::2]).all() and len(set(y.tolist())) == 4


def test_tiny_training_run_writes_a_loadable_model(tmp_path: Path) -> None:
    from dedup.training.trainer import train_model

    data = tmp_path / "data"
    data.mkdir()
    for i in range(10):
        _product(i).save(data / f"p{i}.png")
    out = tmp_path / "model"
    card = train_model(
        data, out, input_size=48, dim=16, steps=4, steps_per_epoch=2, batch_size=8, views=3,
        val_fraction=0.3, workers=1, seed=0,
    )  # fmt: skip
    assert card["dim"] == 16 and card["training"]["steps"] == 4
    enc = load_encoder(out)
    emb = enc.embed_images([_product(0), _product(1)])
    assert emb.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert enc.card["command"]
