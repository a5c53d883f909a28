"""The embedding tower: a compact residual CNN mapping uint8 RGB images to unit vectors.

The tower is saved alone (``tower.keras``) and exported to TensorFlow Lite; the siamese training
wrapper in :mod:`dedup.embedding.siamese` only holds it. Importing this module imports Keras.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

#: Stage widths and strides after the stem: (filters, stride, repeats).
DEFAULT_STAGES: tuple[tuple[int, int, int], ...] = ((48, 2, 1), (96, 2, 2), (192, 2, 2), (320, 2, 1))
#: Block kinds: plain 3×3 convolutions train ~5× faster than depthwise-separable ones with TensorFlow
#: on CPU (measured 104 vs 21 img/s at 96 px, batch 128, 2 cores), at equal inference speed class.
BLOCKS = ("conv", "separable")


@keras.saving.register_keras_serializable(package="dedup")
class HorizontalFlip(layers.Layer):
    """Mirror images left-right (axis 2 of NHWC); used to make the tower mirror-invariant by construction."""

    def call(self, x: Any) -> Any:
        return ops.flip(x, axis=2)


def build_backbone(
    input_size: int, stages: tuple[tuple[int, int, int], ...], stem: int = 24, block: str = "conv"
) -> keras.Model:
    """Float input in [-1, 1] → pooled feature vector (global average and max pooling, concatenated)."""
    inp = keras.Input((input_size, input_size, 3), name="pixels")
    x = layers.Conv2D(stem, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    for s, (filters, stride, repeats) in enumerate(stages):
        for r in range(repeats):
            make = _conv_block if block == "conv" else _separable_block
            x = make(x, filters, stride if r == 0 else 1, f"s{s}b{r}")
    # Average pooling keeps global colour/texture statistics; max pooling keeps small distinctive parts.
    avg = layers.GlobalAveragePooling2D(name="gap")(x)
    mx = layers.GlobalMaxPooling2D(name="gmp")(x)
    return keras.Model(inp, layers.Concatenate(name="pooled")([avg, mx]), name="backbone")


@keras.saving.register_keras_serializable(package="dedup")
class GeMPooling(layers.Layer):
    """Generalised-mean pooling: ``(mean over h, w of max(x, eps)^p)^(1/p)`` (Radenović 2018).

    ``p = 1`` is average pooling and ``p → ∞`` max pooling; retrieval and copy detection models settle
    around 3, which weighs the strongest local responses (the product) above the background.

    ``p`` is fixed unless ``learn_p``. A learned ``p`` drifts to a non-integer (2.94 in the shipped
    model's fine-tune), and the exported graph then raises every feature-map value to that power with
    LiteRT's generic ``POW`` kernel, outside XNNPACK: whole-tower throughput fell to 170 from 370 images/s
    on 2 cores. With an integer ``p`` the converter writes the power as multiplications, so training
    rounds a learned ``p`` before export (:func:`round_gem_exponent`; the shipped model's pair and query
    figures on three benchmark families did not move at the third decimal).
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learn_p: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.p_init = float(p)
        self.eps = float(eps)
        self.learn_p = bool(learn_p)

    def build(self, input_shape: Any) -> None:
        self.p = self.add_weight(
            name="p", shape=(), initializer=keras.initializers.Constant(self.p_init), trainable=self.learn_p
        )

    def call(self, x: Any) -> Any:
        p = ops.maximum(self.p, 1.0)
        pooled = ops.mean(ops.power(ops.maximum(x, self.eps), p), axis=(1, 2))  # (n, c)
        return ops.power(pooled, 1.0 / p)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "p": self.p_init, "eps": self.eps, "learn_p": self.learn_p}


def round_gem_exponent(tower: keras.Model) -> tuple[float, float] | None:
    """Round the ``p`` of the tower's :class:`GeMPooling` to the nearest integer ≥ 1 and fix it, so the export
    runs on XNNPACK (see :class:`GeMPooling`). Returns ``(learned, rounded)``; None when the tower has no GeM."""
    gem = next((layer for layer in tower.layers if isinstance(layer, GeMPooling)), None)
    if gem is None:
        return None
    learned = float(np.asarray(gem.p))
    rounded = float(max(1, round(learned)))
    gem.p.assign(rounded)
    gem.p.trainable = False
    gem.learn_p = False
    return learned, rounded


def build_tower(
    input_size: int = 96,
    dim: int = 128,
    *,
    backbone: str = "residual-cnn",
    pretrained: bool = False,
    stages: tuple[tuple[int, int, int], ...] = DEFAULT_STAGES,
    block: str = "conv",
    mirror_invariant: bool = False,
    dropout: float = 0.0,
    learn_gem_p: bool = False,
) -> keras.Model:
    """The embedding tower: ``(n, S, S, 3)`` uint8 RGB → ``(n, dim)`` float32 L2-normalised rows.

    ``backbone`` names the trunk (:data:`dedup.embedding.backbones.BACKBONES`); ``pretrained`` loads its
    ImageNet weights (ModelError where it has none, or their package is not installed). The residual
    CNN pools with global average and max pooling inside its trunk (``stages`` and ``block`` shape it);
    other trunks end in a feature map, pooled here with :class:`GeMPooling` (``p = 3``, learned from
    there with ``learn_gem_p``).

    With ``mirror_invariant`` the pooled features of the image and of its mirror image are summed
    before the projection, so a mirrored copy gets exactly the same embedding; it costs twice the
    convolutions in training too (3× slower measured), so the default trains a single-path tower
    with mirrored positives and makes it exactly invariant afterwards with :func:`mirror_wrap`.
    Colour is kept: nothing here discards channels, so colour variants can stay apart.
    """
    from dedup.embedding.backbones import get_backbone, trunk_name

    if input_size < 32 or dim < 8:
        raise ValueError(f"input_size must be ≥ 32 and dim ≥ 8 (got {input_size}, {dim})")
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS} (got {block!r})")
    spec = get_backbone(backbone)
    inp = keras.Input((input_size, input_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(spec.scale, offset=spec.offset, name="rescale")(ops.cast(inp, "float32"))
    if spec.name == "residual-cnn":
        trunk = build_backbone(input_size, stages, block=block)  # named "backbone": older towers load as before
        pool: Any = None
    else:
        trunk = spec.build(input_size)
        pool = GeMPooling(learn_p=learn_gem_p, name="gem")
    if pretrained:
        if spec.load_pretrained is None:
            from dedup.errors import ConfigError

            raise ConfigError(f"backbone {spec.name!r} has no pretrained weights; train it from scratch")
        spec.load_pretrained(trunk)
    if trunk.name != "backbone" and trunk.name != trunk_name(spec):
        raise ValueError(f"trunk of {spec.name} must be named {trunk_name(spec)} (got {trunk.name})")

    def features(t: Any) -> Any:
        y = trunk(t)
        return pool(y) if pool is not None else y

    feats = features(x)
    if mirror_invariant:
        feats = layers.Add(name="mirror_sum")([feats, features(HorizontalFlip(name="mirror")(x))])
    if dropout:
        feats = layers.Dropout(dropout, name="dropout")(feats)
    emb = layers.Dense(dim, name="project")(feats)
    out = layers.UnitNormalization(axis=-1, name="l2")(emb)
    tag = "" if spec.name == "residual-cnn" else f"{spec.name}_"
    return keras.Model(inp, out, name=f"tower_{tag}{input_size}_{dim}")


def freeze_leading_blocks(model: keras.Model, blocks: int) -> int:
    """Freeze the stem and the first ``blocks`` blocks of a pretrained trunk (layers ``stem_*``, ``b{i}_*``).

    Their gradients are then never computed, which is where a CPU step spends most of its time (the
    high-resolution early layers), and the low-level ImageNet features stay as they were. Returns the
    number of layers frozen.
    """
    frozen = 0
    for layer in layers_of(model):
        head, _, _ = layer.name.partition("_")
        early = head == "stem" or (head[:1] == "b" and head[1:].isdigit() and int(head[1:]) < blocks)
        if early and layer.weights:
            layer.trainable = False
            frozen += 1
    return frozen


def freeze_batchnorm(model: keras.Model) -> int:
    """Make every BatchNorm layer of ``model`` non-trainable (it then runs on its stored statistics); returns count.

    Fine-tuning a pretrained trunk with small CPU batches of near-duplicates would otherwise replace
    ImageNet's statistics with those of a few dozen look-alike images a step.
    """
    frozen = 0
    for layer in layers_of(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


def mirror_wrap(tower: keras.Model) -> keras.Model:
    """An exactly mirror-invariant tower: ``normalise(tower(x) + tower(mirror(x)))``, sharing ``tower``'s weights.

    Used at export: the trained tower already maps mirror images close, and the sum makes the
    distance of a mirrored copy exactly 0 at twice the inference cost.
    """
    size = tower.input_shape[1]
    inp = keras.Input((size, size, 3), dtype="uint8", name="image")
    both = layers.Add(name="mirror_sum")([tower(inp), tower(HorizontalFlip(name="mirror")(inp))])
    out = layers.UnitNormalization(axis=-1, name="l2_sym")(both)
    return keras.Model(inp, out, name=f"{tower.name}_sym")


def _conv_block(x: Any, filters: int, stride: int, name: str) -> Any:
    """3×3 convolution → BN → ReLU6, residual when the shape is kept."""
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    y = layers.BatchNormalization(name=f"{name}_bn")(y)
    if stride == 1 and x.shape[-1] == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return layers.ReLU(6.0, name=f"{name}_relu")(y)


def _separable_block(x: Any, filters: int, stride: int, name: str) -> Any:
    """Depthwise 3×3 → BN → ReLU6 → pointwise 1×1 → BN (→ ReLU6), residual when the shape is kept."""
    shortcut = x
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(y)
    y = layers.BatchNormalization(name=f"{name}_pw_bn")(y)
    if stride == 1 and shortcut.shape[-1] == filters:
        y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(6.0, name=f"{name}_relu")(y)


def stages_of(tower: keras.Model) -> tuple[tuple[int, int, int], ...]:
    """The ``(filters, stride, blocks)`` stages of a tower made by :func:`build_tower` (read from its layer names)."""
    stages: dict[int, list[int]] = {}
    for layer in layers_of(tower):
        name = layer.name  # s{stage}b{block}_conv
        if name.startswith("s") and name.endswith("_conv") and "b" in name:
            stage, block = (int(v) for v in name[1:-5].split("b"))
            entry = stages.setdefault(stage, [layer.filters, layer.strides[0], 0])
            entry[2] = max(entry[2], block + 1)
    return tuple((f, st, n) for _, (f, st, n) in sorted(stages.items()))


def copy_weights(src: keras.Model, dst: keras.Model) -> int:
    """Set each layer of ``dst`` from the layer of ``src`` of the same name and weight shapes; returns tensors set."""
    by_name = {layer.name: layer for layer in layers_of(src)}
    copied = 0
    for layer in layers_of(dst):
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        w = other.get_weights()
        if [a.shape for a in w] == [tuple(x.shape) for x in layer.weights]:
            layer.set_weights(w)
            copied += len(w)
    return copied


def at_input_size(tower: keras.Model, size: int) -> keras.Model:
    """The same single-path tower, weights and all, taking ``size`` × ``size`` inputs.

    Every layer is convolutional or pooled, so the weights fit any input size; a smaller input costs
    fewer multiply-adds (~27 % fewer at 80 px than at 96) and sees less detail, which a fine-tune at the
    new size wins back.
    """
    if tower.input_shape[1] == size:
        return tower
    from dedup.embedding.backbones import backbone_of

    dim = int(tower.output_shape[-1])
    spec = backbone_of(tower)
    kwargs: dict[str, Any] = {"stages": stages_of(tower)} if spec.name == "residual-cnn" else {}
    resized = build_tower(size, dim, backbone=spec.name, **kwargs)
    copied = copy_weights(tower, resized)
    if copied != len(resized.weights):
        raise ValueError(f"only {copied} of {len(resized.weights)} weight tensors fit the {size} px tower")
    return resized


def layers_of(model: keras.Model) -> list[Any]:
    """All layers of a model, nested models (the backbone) opened up."""
    out = []
    for layer in model.layers:
        out.extend(layers_of(layer) if isinstance(layer, keras.Model) else [layer])
    return out
