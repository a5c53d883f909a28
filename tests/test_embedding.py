"""The shipped default model, the encoder runtimes and the losses: real model, real images, no mocks."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup.config import ENV_MODEL, default_model_dir
from dedup.embedding import Encoder, load_encoder
from dedup.errors import ModelError
from dedup.imaging import load_image, to_model_input
from dedup.training.sources import tuxpaint_images


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return load_encoder()


@pytest.fixture(scope="session")
def holdout() -> list[Image.Image]:
    """Eight held-out tuxpaint images (never trained on), decoded once."""
    paths = tuxpaint_images("holdout")[::20][:8]
    return [load_image(p, target=128).image for p in paths]


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_default_model_loads_with_card(encoder: Encoder) -> None:
    card = encoder.card
    assert encoder.dim == card.dim and encoder.input_size == card.input_size and card.model_input == encoder.preprocess
    assert 0.0 < encoder.threshold < 2.0
    assert encoder.model_id.startswith("tower-v1-") and len(encoder.model_id) == len("tower-v1-") + 12
    total = sum(f.stat().st_size for f in default_model_dir().iterdir() if f.is_file())
    assert total <= 25 * 1024 * 1024  # what the package may carry for its default model


def test_embeddings_are_unit_norm_float32(encoder: Encoder, holdout: list[Image.Image]) -> None:
    emb = encoder.embed_images(holdout)
    assert emb.dtype == np.float32 and emb.shape == (len(holdout), encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert encoder.embed(np.zeros((0, encoder.input_size, encoder.input_size, 3), np.uint8)).shape == (0, encoder.dim)
    assert encoder.embed_images([]).shape == (0, encoder.dim)


def test_embed_rejects_wrong_shape_or_dtype(encoder: Encoder) -> None:
    with pytest.raises(ValueError, match="shape"):
        encoder.embed(np.zeros((1, 10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encoder.embed(np.zeros((1, encoder.input_size, encoder.input_size, 3), np.float32))


def test_identical_images_have_distance_zero(encoder: Encoder, holdout: list[Image.Image]) -> None:
    a = encoder.embed_images(holdout[:2])
    b = encoder.embed_images(holdout[:2])
    assert np.linalg.norm(a - b, axis=1).max() < 1e-5


def test_mirror_image_is_a_duplicate(encoder: Encoder, holdout: list[Image.Image]) -> None:
    # The shipped tower learned mirror invariance (no mirror sum at inference): a mirrored held-out image must
    # fall within the duplicate threshold of its original (measured 0.14-0.38 against 0.61), not at 0.
    mirrored = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in holdout]
    d = np.linalg.norm(encoder.embed_images(holdout) - encoder.embed_images(mirrored), axis=1)
    assert d.max() < encoder.threshold


def test_jpeg_reencode_is_closer_than_another_image(encoder: Encoder, holdout: list[Image.Image]) -> None:
    orig = encoder.embed_images(holdout)
    reenc = encoder.embed_images([_jpeg(im, 20) for im in holdout])
    d_same = np.linalg.norm(orig - reenc, axis=1)  # (n,)
    d_other = np.linalg.norm(orig[:, None] - orig[None, :], axis=2) + 9 * np.eye(len(holdout))  # (n, n)
    assert (d_same < d_other.min(axis=1)).all()
    # Quality 20 at these small sizes (87-256 px) is harsher than the benchmark's jpeg kind: the shipped
    # EfficientNet-Lite0 tower keeps 5 of these 8 within its threshold (0.5297), 7 of 8 at quality 40.
    assert (d_same <= encoder.threshold).mean() >= 0.6


def test_tflite_and_keras_towers_agree(encoder: Encoder, holdout: list[Image.Image]) -> None:
    keras_enc = load_encoder(runtime="keras")
    batch = np.stack([to_model_input(im, encoder.input_size) for im in holdout])
    d = np.linalg.norm(encoder.embed(batch) - keras_enc.embed(batch), axis=1)
    assert d.max() < 0.02  # float16 weights in the .tflite file


def test_litert_and_tf_lite_runtimes_agree(encoder: Encoder, holdout: list[Image.Image]) -> None:
    tf_enc = load_encoder(runtime="tflite")
    batch = np.stack([to_model_input(im, encoder.input_size) for im in holdout[:3]])
    np.testing.assert_allclose(encoder.embed(batch), tf_enc.embed(batch), atol=1e-4)


def test_importing_embedding_does_not_import_tensorflow() -> None:
    code = "import sys, dedup.embedding; sys.exit(1 if 'tensorflow' in sys.modules or 'keras' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_missing_or_corrupt_model_dir_raises_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model card"):
        load_encoder(tmp_path / "nowhere")
    (tmp_path / "model_card.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot be read"):
        load_encoder(tmp_path)
    shutil.copy(default_model_dir() / "model_card.json", tmp_path / "model_card.json")
    with pytest.raises(ModelError, match="missing"):
        load_encoder(tmp_path)
    card = json.loads((tmp_path / "model_card.json").read_text())
    (tmp_path / card["files"]["tflite"]).write_bytes(b"not a flatbuffer")
    (tmp_path / card["files"]["keras"]).write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot load"):
        load_encoder(tmp_path)


# --- losses ---------------------------------------------------------------------------------------

LOSSES = ("infonce", "contrastive", "triplet")


def _batch(spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Four ids × two rows; each pair's second row sits ``spread`` radians from its first."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 8))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    noise = rng.normal(size=(4, 8))
    noise -= (noise * base).sum(axis=1, keepdims=True) * base  # orthogonal to each base row
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    other = np.cos(spread) * base + np.sin(spread) * noise
    emb = np.empty((8, 8), np.float32)
    emb[0::2], emb[1::2] = base, other
    return np.repeat(np.arange(4), 2).astype(np.int32), emb


@pytest.mark.parametrize("name", LOSSES)
def test_loss_pulls_duplicates_together(name: str) -> None:
    from dedup.embedding.losses import get_loss

    loss = get_loss(name)
    ids, near = _batch(0.1)
    _, far = _batch(0.8)
    assert float(loss(ids, near)) < float(loss(ids, far))


def test_contrastive_pair_loss_label_meaning() -> None:
    from dedup.embedding.losses.contrastive import ContrastiveLoss

    loss = ContrastiveLoss(margin=1.0)
    y_dup = np.array([1.0])
    assert float(loss.pair_loss(np.array([0.1]), y_dup)) < float(loss.pair_loss(np.array([0.9]), y_dup))
    y_other = np.array([0.0])
    assert float(loss.pair_loss(np.array([1.5]), y_other)) == 0.0
    assert float(loss.pair_loss(np.array([0.2]), y_other)) > 0.0


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("contrastive", {"margin": 0.0}, "margin"),
        ("contrastive", {"margin": 3.0}, "margin"),
        ("triplet", {"margin": -1.0}, "margin"),
        ("infonce", {"temperature": 0.0}, "temperature"),
        ("infonce", {"temperature": 100.0}, "temperature"),
        ("arcface", {}, "unknown loss"),
    ],
)
def test_loss_constructor_errors(name: str, kwargs: dict[str, float], message: str) -> None:
    from dedup.embedding.losses import get_loss

    with pytest.raises(ValueError, match=message):
        get_loss(name, **kwargs)


def test_a_trimming_card_changes_the_model_id_and_the_inputs(tmp_path: Path, encoder: Encoder) -> None:
    """The preprocessing is part of what a vector means: a card that trims gets its own model id."""
    folder = tmp_path / "model"
    shutil.copytree(default_model_dir(), folder)
    card = json.loads((folder / "model_card.json").read_text())
    card["preprocess"] = {"trim_background": not encoder.trim}
    (folder / "model_card.json").write_text(json.dumps(card))
    other = load_encoder(folder)
    assert other.trim is not encoder.trim
    assert other.model_id != encoder.model_id
    padded = load_image(Path(__file__).resolve().parents[1] / "catalog_samples/catalog/duplicates/balloon360__pad.jpg")
    trimming = other if other.trim else encoder
    assert trimming.model_input(padded.image).shape == (encoder.input_size, encoder.input_size, 3)
    assert not np.array_equal(trimming.model_input(padded.image), to_model_input(padded.image, encoder.input_size))


def test_dedup_model_is_honoured_by_the_library_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``DEDUP_MODEL`` was read only by the command line; ``open_store`` from Python ignored it."""
    from dedup.service import open_store

    other = tmp_path / "model"
    shutil.copytree(default_model_dir(), other)
    card = json.loads((other / "model_card.json").read_text())
    card["threshold"] = 0.4242
    (other / "model_card.json").write_text(json.dumps(card))
    monkeypatch.setenv(ENV_MODEL, str(other))
    with open_store(tmp_path / "s") as store:
        assert store.model_dir == other.resolve() and store.encoder.threshold == pytest.approx(0.4242)
    # An explicit argument wins over the environment; "default" names the shipped model.
    with open_store(tmp_path / "s", model="default") as store:
        assert store.model_dir == default_model_dir() and store.encoder.threshold != pytest.approx(0.4242)


def test_model_card_is_typed_once_and_round_trips(tmp_path: Path) -> None:
    from dedup.embedding.card import CARD_NAME, ModelCard, load_card, read_card

    card = load_card(default_model_dir())
    assert isinstance(card, ModelCard) and card.files["tflite"] and 0 < card.threshold < 2
    assert ModelCard.from_dict(card.as_dict()) == card  # the document round-trips through the typed view
    assert card.as_dict() == read_card(default_model_dir())
    bad = tmp_path / "bad"
    shutil.copytree(default_model_dir(), bad)
    doc = json.loads((bad / CARD_NAME).read_text())
    doc["dim"] = "one hundred"
    (bad / CARD_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="malformed field"):
        load_encoder(bad)
