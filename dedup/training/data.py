"""Training data: identities from a folder layout, a pre-generated pool of augmented views, batch sampling.

CPU training is bound by augmentation if every view is made on the fly (~70 img/s measured), so each
identity gets ``views`` augmented model inputs made once, in parallel, into one uint8 array; batches
are then drawn from that pool at memory speed.

Layouts (see :func:`load_identities`):

* ``None``: the tuxpaint training split (``dedup.training.sources``), one identity per image;
* an unlabelled folder of images: one identity per image, positives are two transforms of it;
* a folder of sub-folders: one identity per sub-folder, positives are any two of its images, transformed.

Hue-rotated colour variants are added as identities of their own (another SKU), sharing a ``group``
with their original so validation can keep them together and batches can hold both.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dedup.config import IMAGE_EXTENSIONS
from dedup.errors import ImageError, InputError
from dedup.imaging import iter_image_files, load_image, to_model_input
from dedup.training import augment
from dedup.training.sources import tuxpaint_images

log = logging.getLogger(__name__)

#: Working resolution of augmentation: the longer side of each source image is at most this.
WORK_SIDE = 256
#: Share of views made as phone photos; the rest are duplicate edits, drawn by these weights.
PHONE_SHARE = 0.2
KIND_WEIGHTS = {
    "jpeg": 1.0,
    "resize": 0.7,
    "format": 0.5,
    "crop": 1.0,
    "pad": 1.0,
    "rotate": 1.0,
    "colour": 1.0,
    "watermark": 1.0,
    "tint": 0.7,
    "mirror": 1.0,
    "blur": 0.7,
    "combo": 3.0,
}
#: Every kind a pool view can have; index into this is stored per view. ``clean`` is the untouched input.
ALL_KINDS = ("clean", *KIND_WEIGHTS, "phone")


@dataclass(frozen=True)
class Identity:
    """One product: its source files, the group it belongs to and, for a colour variant, its hue seed."""

    files: tuple[Path, ...]
    group: int  # identities in one group share a design (an original and its colour variants)
    variant_seed: int | None = None  # None: the original colours


@dataclass
class Pool:
    """``views[i, v]`` is view ``v`` of identity ``i``; view 0 is the clean input, ``kinds`` name the rest."""

    views: np.ndarray  # (n, V, S, S, 3) uint8
    kinds: np.ndarray  # (n, V) int8, index into ALL_KINDS
    groups: np.ndarray  # (n,) int64
    variant: np.ndarray  # (n,) bool
    identities: list[Identity] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.views.shape[0])


def load_identities(data_dir: Path | None) -> list[Identity]:
    """Identities of a data folder in one of the layouts of this module (None: tuxpaint training split)."""
    if data_dir is None:
        files = tuxpaint_images("train")
        return [Identity((p,), group=i) for i, p in enumerate(files)]
    if not data_dir.is_dir():
        raise InputError(f"training data folder {data_dir} does not exist or is not a folder")
    subdirs = sorted(p for p in data_dir.iterdir() if p.is_dir())
    top_files = [p for p in sorted(data_dir.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if subdirs and not top_files:
        ids: list[Identity] = []
        for d in subdirs:
            found = tuple(iter_image_files(d, IMAGE_EXTENSIONS))
            if found:
                ids.append(Identity(found, group=len(ids)))
        layout = "one sub-folder per identity"
    else:
        ids = [Identity((p,), group=i) for i, p in enumerate(iter_image_files(data_dir, IMAGE_EXTENSIONS))]
        layout = "unlabelled images"
    if len(ids) < 4:
        raise InputError(f"{data_dir} holds {len(ids)} identities; training needs at least 4 ({layout})")
    log.info("%s: %d identities (%s)", data_dir, len(ids), layout)
    return ids


def background_files() -> list[Path]:
    """Real backgrounds for phone photos: the tuxpaint templates of the training split only."""
    return [p for p in tuxpaint_images("train") if "templates" in p.parts]


def add_colour_variants(ids: Sequence[Identity], per_image: int, seed: int) -> list[Identity]:
    """Append ``per_image`` hue-rotated variants of every identity (skipped later if it lacks colour)."""
    out = list(ids)
    rng = np.random.default_rng(seed)
    for ident in ids:
        for _ in range(per_image):
            out.append(Identity(ident.files, ident.group, variant_seed=int(rng.integers(2**31))))
    return out


def build_pool(ids: Sequence[Identity], views: int, size: int, seed: int, workers: int | None = None) -> Pool:
    """Make ``views`` model inputs per identity in ``workers`` processes; drops unusable identities.

    A colour variant whose source has too little colour, or a file that cannot be decoded, is dropped
    (the latter with a warning).
    """
    workers = workers or os.cpu_count() or 1
    tasks = [(ident, views, size, seed * 1_000_003 + i) for i, ident in enumerate(ids)]
    if workers > 1 and len(tasks) > 8:
        with mp.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
            results = pool.map(_make_views, tasks, chunksize=8)
    else:
        _init_worker()
        results = [_make_views(t) for t in tasks]
    keep = [(ident, r) for ident, r in zip(ids, results, strict=True) if r is not None]
    if not keep:
        raise InputError("no usable training images")
    return Pool(
        views=np.stack([r[0] for _, r in keep]),
        kinds=np.stack([r[1] for _, r in keep]),
        groups=np.array([ident.group for ident, _ in keep], dtype=np.int64),
        variant=np.array([ident.variant_seed is not None for ident, _ in keep]),
        identities=[ident for ident, _ in keep],
    )


_BACKGROUNDS: list[Image.Image] = []


def _init_worker() -> None:
    if not _BACKGROUNDS:
        for p in background_files():
            try:
                _BACKGROUNDS.append(load_image(p, target=WORK_SIDE).image)
            except ImageError as exc:
                log.warning("background skipped: %s", exc)


def _make_views(task: tuple[Identity, int, int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    ident, views, size, seed = task
    rng = np.random.default_rng(seed)
    sources = []
    for p in ident.files:
        try:
            img = load_image(p, target=WORK_SIDE // 2).image
        except ImageError as exc:
            log.warning("training image skipped: %s", exc)
            continue
        if min(img.size) < 16:
            continue
        if ident.variant_seed is not None:
            var = augment.colour_variant(img, np.random.default_rng(ident.variant_seed))
            if var is None:
                return None
            img = var
        sources.append(img)
    if not sources:
        return None
    kind_names = list(KIND_WEIGHTS)
    weights = np.array([KIND_WEIGHTS[k] for k in kind_names])
    weights = weights / weights.sum()
    out = np.empty((views, size, size, 3), np.uint8)
    kinds = np.zeros(views, np.int8)
    out[0] = to_model_input(sources[0], size)
    for v in range(1, views):
        src = sources[int(rng.integers(len(sources)))]
        if rng.random() < PHONE_SHARE:
            name = "phone"
            img = augment.phone_photo(src, rng, _BACKGROUNDS)
        else:
            name = kind_names[int(rng.choice(len(kind_names), p=weights))]
            img = augment.DUPLICATE_KINDS[name](src, rng)
        out[v] = to_model_input(img, size)
        kinds[v] = ALL_KINDS.index(name)
    return out, kinds


def split_groups(pool: Pool, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Identity indices for training and validation; a design and its colour variants stay together."""
    groups = np.unique(pool.groups)
    rng = np.random.default_rng(seed)
    n_val = max(1, round(len(groups) * val_fraction)) if val_fraction > 0 else 0
    val_groups = set(rng.choice(groups, size=n_val, replace=False).tolist()) if n_val else set()
    is_val = np.array([g in val_groups for g in pool.groups])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class BatchSampler:
    """Batches of ``P`` identities × 2 views, drawn from a pool; labels are identity indices.

    About ``hard_share`` of each batch is made of designs present with a colour variant too, so the
    model sees the hardest negatives (same design, other colour) side by side.
    """

    def __init__(
        self, pool: Pool, index: np.ndarray, identities_per_batch: int, seed: int, hard_share: float = 0.5
    ) -> None:
        if identities_per_batch < 2:
            raise ValueError("identities_per_batch must be at least 2 for in-batch negatives")
        self.pool = pool
        self.index = np.asarray(index)
        self.p = min(identities_per_batch, len(self.index))
        self.rng = np.random.default_rng(seed)
        self.hard_share = hard_share
        by_group: dict[int, list[int]] = {}
        for i in self.index:
            by_group.setdefault(int(pool.groups[i]), []).append(int(i))
        self.families = [v for v in by_group.values() if len(v) > 1]

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch: ``x`` (2P, S, S, 3) uint8 with the two views of identity ``k`` at 2k and 2k+1, ``y`` (2P,)."""
        chosen: list[int] = []
        seen: set[int] = set()
        n_hard = int(self.p * self.hard_share)
        if self.families and n_hard:
            for f in self.rng.permutation(len(self.families)):
                for i in self.families[int(f)]:
                    if len(chosen) < n_hard and i not in seen:
                        chosen.append(i)
                        seen.add(i)
                if len(chosen) >= n_hard:
                    break
        for i in self.rng.permutation(self.index):
            if len(chosen) >= self.p:
                break
            if int(i) not in seen:
                chosen.append(int(i))
                seen.add(int(i))
        ids = np.array(chosen)
        n_views = self.pool.views.shape[1]
        a = self.rng.integers(0, n_views, len(ids))
        b = (a + self.rng.integers(1, n_views, len(ids))) % n_views  # a different view of the same identity
        x = np.empty((2 * len(ids), *self.pool.views.shape[2:]), np.uint8)
        x[0::2] = self.pool.views[ids, a]
        x[1::2] = self.pool.views[ids, b]
        y = np.repeat(ids, 2).astype(np.int32)
        return x, y
