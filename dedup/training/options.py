"""The options of the three training jobs, each default written once.

``dedup train``, ``dedup train-query`` and ``dedup distill`` (and ``scripts/train_default.py``) each take
many knobs. They live here as frozen dataclasses, one per job, and nowhere else: the CLI reads its
option defaults from these fields, the training functions take an options object (or keyword overrides
of the defaults), and the model card records ``as_dict()`` of what ran.

- :class:`FitOptions` holds what every job's fit loop shares (budget, batch, views, validation, seed).
- :class:`TrainOptions` adds the catalog tower's recipe. Its defaults are the recipe of the shipped
  model, so ``dedup train DATA --out M`` trains what ships, on other data.
- :class:`QueryTowerOptions` and :class:`DistillOptions` add the query-tower and student knobs.

Values a default cannot know (the input size of a fine-tune's start model, the learning rate that suits
a backbone) are ``None`` here and resolved by the job, which documents the rule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dedup.errors import ConfigError

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; annotations stay unevaluated on 3.10

#: Share of augmented views made as phone photos of the product when training a catalog tower.
PHONE_SHARE = 0.2
#: The same share for the query tower, which learns mostly from phone photos.
QUERY_PHONE_SHARE = 0.5
#: The distillation student's stages: the residual CNN's widths and strides, one block per stage.
STUDENT_STAGES: tuple[tuple[int, int, int], ...] = ((48, 2, 1), (96, 2, 1), (192, 2, 1), (320, 2, 1))
#: Loss names a catalog tower can train with (:func:`dedup.embedding.losses.get_loss`).
LOSSES: tuple[str, ...] = ("infonce", "contrastive", "triplet")
#: TFLite export kinds (:func:`dedup.embedding.export.export_tflite`).
QUANTISATIONS: tuple[str, ...] = ("float16", "int8", "float32")


def _check_one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)} (got {value!r})")


@dataclass(frozen=True)
class FitOptions:
    """What every training job's fit loop takes.

    Training stops after ``steps`` steps, after ``minutes`` of fitting (None: no time budget; building the
    pool of augmented views comes first and is not counted), or when the validation score has not
    improved for ``patience`` epochs. ``batch_size`` counts images; ``views`` augmented views are made
    per product; ``val_fraction`` of the products are held out for validation; ``phone_share`` of the
    views are phone photos. ``workers`` processes build the pool (None: one per core). ``command`` is
    written into the card (None: the process's own command line).
    """

    minutes: float | None = 30.0
    steps: int = 100_000
    steps_per_epoch: int = 50
    batch_size: int = 128
    learning_rate: float | None = 1e-3
    views: int = 16
    phone_share: float | None = PHONE_SHARE
    val_fraction: float = 0.1
    patience: int = 10
    seed: int = 0
    workers: int | None = None
    command: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 8:
            raise ConfigError(f"batch_size must be at least 8 (got {self.batch_size})")
        if self.steps < 1 or self.steps_per_epoch < 1:
            raise ConfigError(f"steps and steps_per_epoch must be ≥ 1 (got {self.steps}, {self.steps_per_epoch})")
        if self.minutes is not None and self.minutes <= 0:
            raise ConfigError(f"minutes must be > 0 (got {self.minutes})")
        if self.views < 2:
            raise ConfigError(f"views must be at least 2: a positive pair needs two (got {self.views})")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in [0, 0.5) (got {self.val_fraction})")
        if self.phone_share is not None and not 0.0 <= self.phone_share <= 1.0:
            raise ConfigError(f"phone_share must be in [0, 1] (got {self.phone_share})")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0 (got {self.learning_rate})")

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied; a name that is not an option is a ConfigError, not a silent no-op."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"{type(self).__name__} has no option {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (paths as strings, stages as lists), for the model card."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[f.name] = value
        return out


@dataclass(frozen=True)
class TrainOptions(FitOptions):
    """A catalog tower's training recipe; the defaults made the shipped model.

    ``backbone`` None means the ``from_model``'s, else :data:`dedup.config.DEFAULT_BACKBONE` (stages
    given without a backbone mean the residual CNN, the one trunk they shape). ``learning_rate`` None
    means the backbone's (:attr:`dedup.embedding.backbones.BackboneSpec.default_learning_rate`), ``input_size``
    None the ``from_model``'s, else the backbone's; ``trim_background`` None the ``from_model``'s
    preprocessing, else on. ``pretrained`` starts a backbone from its ImageNet weights where it has them;
    ``freeze_bn`` keeps their BatchNorm statistics and ``frozen_blocks`` leading blocks (and the stem)
    fixed. ``learn_gem_p`` learns the GeM exponent (rounded to an integer before export, which keeps the
    exported tower on XNNPACK; see :class:`dedup.embedding.tower.GeMPooling`). ``colour_variants``
    hue-rotated variants per source become hard negatives; ``collages`` groups of same-parts,
    other-layout collages are added; ``hard_negatives`` N > 0 refreshes look-alike
    batches every N epochs. ``mirror_pass`` exports the exactly mirror-invariant wrapper (twice the
    inference cost). ``margin``/``margin_start`` shape a margin loss, ``temperature`` InfoNCE.
    ``val_dir`` is a validation folder in place of ``val_fraction``; ``init`` a ``.weights.h5`` of the
    same tower to start from; ``from_model`` a model folder to fine-tune.
    """

    minutes: float | None = 40.0
    batch_size: int = 96
    learning_rate: float | None = None
    phone_share: float = PHONE_SHARE
    patience: int = 12
    input_size: int | None = None
    dim: int = 128
    backbone: str | None = None
    pretrained: bool = True
    freeze_bn: bool = True
    frozen_blocks: int = 5
    learn_gem_p: bool = True
    stages: tuple[tuple[int, int, int], ...] | None = None
    loss: str = "infonce"
    temperature: float = 0.1
    margin: float | None = None
    margin_start: float | None = None
    colour_variants: int = 1
    collages: int = 300
    hard_negatives: int = 2
    mirror_pass: bool = False
    trim_background: bool | None = None
    val_dir: Path | None = None
    quantisation: str = "float16"
    init: Path | None = None
    from_model: Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size % 2:
            raise ConfigError(f"batch_size must be even: two views per product (got {self.batch_size})")
        _check_one_of("loss", self.loss, LOSSES)
        if self.loss == "infonce" and self.margin_start is not None:
            raise ConfigError("--margin-start needs a margin loss (contrastive or triplet)")
        _check_one_of("quantisation", self.quantisation, QUANTISATIONS)
        if self.frozen_blocks < 0 or self.collages < 0 or self.hard_negatives < 0 or self.colour_variants < 0:
            raise ConfigError("frozen_blocks, collages, hard_negatives and colour_variants must be ≥ 0")


@dataclass(frozen=True)
class QueryTowerOptions(FitOptions):
    """A query tower's training (:func:`dedup.training.query_tower.train_query_tower`).

    ``temperature`` scales its InfoNCE against the catalog vectors of every training product;
    ``input_size`` None means the catalog tower's; ``init`` is a query tower (``.keras``) to go on from.
    Exported as int8 by default: half the size of float16 and no slower for one-image query batches.
    """

    learning_rate: float = 3e-4
    phone_share: float = QUERY_PHONE_SHARE
    temperature: float = 0.05
    colour_variants: int = 1
    collages: int = 600
    input_size: int | None = None
    init: Path | None = None
    quantisation: str = "int8"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.val_fraction:
            raise ConfigError(
                f"val_fraction must be in (0, 0.5): validation picks the weights (got {self.val_fraction})"
            )
        _check_one_of("quantisation", self.quantisation, QUANTISATIONS)


@dataclass(frozen=True)
class DistillOptions(FitOptions):
    """A distillation student's training (:func:`dedup.training.distill.distil_tower`).

    ``stages`` shape the student (an ``init`` student's own stages win); ``phone_share`` None means the
    teacher's; ``target_precision`` sets the student's threshold; ``pair_weight`` > 0 adds the relational
    term and look-alike batches.
    """

    learning_rate: float = 1e-3
    phone_share: float | None = None
    stages: tuple[tuple[int, int, int], ...] = STUDENT_STAGES
    target_precision: float = 0.99
    pair_weight: float = 0.0
    init: Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.target_precision <= 1.0:
            raise ConfigError(f"target_precision must be in (0, 1] (got {self.target_precision})")
        if self.pair_weight < 0:
            raise ConfigError(f"pair_weight must be ≥ 0 (got {self.pair_weight})")


def resolve(kind: type[FitOptions], options: FitOptions | None, overrides: dict[str, Any]) -> Any:
    """``options`` (default: ``kind()``) with keyword ``overrides`` applied; ConfigError on a wrong kind or name."""
    base = kind() if options is None else options
    if not isinstance(base, kind):
        raise ConfigError(f"expected {kind.__name__}, got {type(base).__name__}")
    return base.replace(**overrides) if overrides else base
