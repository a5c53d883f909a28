"""Training data: identities from a folder layout, a pre-generated pool of augmented views, batch sampling.

CPU training is bound by augmentation if every view is made on the fly (~70 img/s measured), so each
identity gets ``views`` augmented model inputs made once, in parallel, into one uint8 array; batches
are then drawn from that pool at memory speed.

Layouts (see :func:`load_identities`):

* ``None``: the tuxpaint training split (``dedup.training.sources``), one identity per image;
* an unlabelled folder of images: one identity per image, positives are two transforms of it;
* a folder of sub-folders: one identity per sub-folder, positives are any two of its images, transformed;
* a CSV file of labelled pairs (``path_a,path_b,label``, 1 = duplicate, paths relative to the file):
  images joined by duplicate pairs form one identity; images of a non-duplicate pair are kept in one
  group, so they meet in batches as hard negatives.

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
from dedup.training.options import PHONE_SHARE
from dedup.training.sources import training_sources, tuxpaint_images
from dedup.workers import init_worker

log = logging.getLogger(__name__)

#: Working resolution of augmentation: the longer side of each source image is at most this.
WORK_SIDE = 256
#: Duplicate edits are drawn by these weights (the phone-photo share is ``options.PHONE_SHARE``).
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
    collage_seed: int | None = None  # set: a collage of ``files`` laid out by this seed


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
        files = [p for found in training_sources().values() for p in found]
        return [Identity((p,), group=i) for i, p in enumerate(files)]
    if data_dir.is_file() and data_dir.suffix.lower() == ".csv":
        return load_pair_identities(data_dir)
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


#: A group made from non-duplicate pairs larger than this is split back into its identities: a chain of
#: negatives across a whole catalog would otherwise make one family too big to fit in a batch.
MAX_PAIR_GROUP = 8


def load_pair_identities(csv_path: Path) -> list[Identity]:
    """Identities from a CSV of labelled pairs (see the module docstring); InputError on a bad file."""
    import csv

    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = {"path_a", "path_b", "label"} - set(reader.fieldnames or [])
            if missing:
                raise InputError(
                    f"{csv_path}: missing column(s) {', '.join(sorted(missing))} (need path_a,path_b,label)"
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read pairs file {csv_path}: {exc}") from None
    pairs: list[tuple[Path, Path, bool]] = []
    for n, row in enumerate(rows, start=2):
        label = (row.get("label") or "").strip().lower()
        if label not in ("0", "1", "true", "false"):
            raise InputError(f"{csv_path}:{n}: label must be 1 (duplicate) or 0 (not), got {row.get('label')!r}")
        a, b = (base / (row[k] or "").strip() for k in ("path_a", "path_b"))
        for f in (a, b):
            if not f.is_file():
                raise InputError(f"{csv_path}:{n}: image {f} does not exist")
        pairs.append((a, b, label in ("1", "true")))
    files = sorted({f for a, b, _ in pairs for f in (a, b)})
    identity_of = _components(files, [(a, b) for a, b, dup in pairs if dup])
    roots = sorted(set(identity_of.values()))
    near = _components(roots, [(identity_of[a], identity_of[b]) for a, b, dup in pairs if not dup])
    size: dict[Path, int] = {}
    for r in roots:
        size[near[r]] = size.get(near[r], 0) + 1
    members: dict[Path, list[Path]] = {}
    for f in files:
        members.setdefault(identity_of[f], []).append(f)
    group_ids: dict[Path, int] = {}
    ids: list[Identity] = []
    for r in roots:
        key = near[r] if size[near[r]] <= MAX_PAIR_GROUP else r
        group = group_ids.setdefault(key, len(group_ids))
        ids.append(Identity(tuple(members[r]), group=group))
    if len(ids) < 4:
        raise InputError(f"{csv_path} describes {len(ids)} identities; training needs at least 4")
    log.info("%s: %d pairs, %d images, %d identities", csv_path, len(pairs), len(files), len(ids))
    return ids


def _components(nodes: Sequence[Path], edges: Sequence[tuple[Path, Path]]) -> dict[Path, Path]:
    """Union-find: each node → the smallest node of its connected component."""
    parent = {n: n for n in nodes}

    def find(n: Path) -> Path:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {n: find(n) for n in nodes}


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


def offset_groups(ids: Sequence[Identity], after: Sequence[Identity]) -> list[Identity]:
    """``ids`` with group numbers moved past every group of ``after`` (to join two identity lists)."""
    shift = max((ident.group for ident in after), default=-1) + 1
    return [Identity(i.files, i.group + shift, i.variant_seed, i.collage_seed) for i in ids]


def add_collages(ids: Sequence[Identity], n_groups: int, seed: int, per_group: int = 2) -> list[Identity]:
    """Append ``n_groups`` × ``per_group`` collage identities made of 2–3 single-file identities each.

    The collages of one group share their parts and differ in layout: each is its own product, and
    the group keeps them together in batches (hard negatives) and in the validation split.
    """
    out = list(ids)
    singles = [ident for ident in ids if len(ident.files) == 1 and ident.variant_seed is None]
    if len(singles) < 3 or n_groups <= 0:
        return out
    rng = np.random.default_rng(seed + 7919)
    next_group = max((ident.group for ident in ids), default=-1) + 1
    for g in range(n_groups):
        picks = rng.choice(len(singles), size=int(rng.integers(2, 4)), replace=False)
        files = tuple(singles[int(i)].files[0] for i in picks)
        for _ in range(per_group):
            out.append(Identity(files, next_group + g, collage_seed=int(rng.integers(2**31))))
    return out


def build_pool(
    ids: Sequence[Identity],
    views: int,
    size: int,
    seed: int,
    workers: int | None = None,
    trim: bool = False,
    phone_share: float = PHONE_SHARE,
) -> Pool:
    """Make ``views`` model inputs per identity in ``workers`` processes; drops unusable identities.

    ``trim`` crops uniform background borders from every view (see :func:`dedup.imaging.to_model_input`);
    ``phone_share`` of the views after the first are phone photos of the product, the rest duplicates.
    A colour variant whose source has too little colour, or a file that cannot be decoded, is dropped
    (the latter with a warning).
    """
    workers = workers or os.cpu_count() or 1
    tasks = [(ident, views, size, seed * 1_000_003 + i, trim, phone_share) for i, ident in enumerate(ids)]
    if workers > 1 and len(tasks) > 8:
        with mp.get_context("fork").Pool(workers, initializer=_init_pool_worker) as pool:
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


def _init_pool_worker() -> None:
    """Pool initializer: die with the training process and leave Ctrl-C to it, then load the backgrounds."""
    init_worker()
    _init_worker()


def _init_worker() -> None:
    if not _BACKGROUNDS:
        for p in background_files():
            try:
                _BACKGROUNDS.append(load_image(p, target=WORK_SIDE).image)
            except ImageError as exc:
                log.warning("background skipped: %s", exc)


def _make_views(task: tuple[Identity, int, int, int, bool, float]) -> tuple[np.ndarray, np.ndarray] | None:
    ident, views, size, seed, trim, phone_share = task
    rng = np.random.default_rng(seed)
    sources = []
    if ident.collage_seed is not None:
        parts = []
        for p in ident.files:
            try:
                parts.append(load_image(p, target=WORK_SIDE // 2).image)
            except ImageError as exc:
                log.warning("collage part skipped: %s", exc)
        if len(parts) < 2:
            return None
        sources.append(augment.collage(parts, np.random.default_rng(ident.collage_seed), side=WORK_SIDE // 2))
    for p in () if ident.collage_seed is not None else ident.files:
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
    out[0] = to_model_input(sources[0], size, trim=trim)
    for v in range(1, views):
        src = sources[int(rng.integers(len(sources)))]
        if rng.random() < phone_share:
            name = "phone"
            img = augment.phone_photo(src, rng, _BACKGROUNDS)
        else:
            name = kind_names[int(rng.choice(len(kind_names), p=weights))]
            img = augment.DUPLICATE_KINDS[name](src, rng)
        out[v] = to_model_input(img, size, trim=trim)
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
    model sees the hardest negatives (same design, other colour) side by side. Once
    :meth:`set_neighbours` has been given each identity's current nearest identities, ``nn_share`` of
    each batch is made of small clusters of look-alikes (an identity and its neighbours): the
    negatives an in-batch loss learns most from and random batches almost never hold.
    """

    def __init__(
        self,
        pool: Pool,
        index: np.ndarray,
        identities_per_batch: int,
        seed: int,
        hard_share: float = 0.5,
        nn_share: float = 0.5,
        cluster: int = 4,
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
        self.nn_share = nn_share
        self.cluster = max(2, cluster)
        self.neighbours: dict[int, list[int]] = {}

    def set_neighbours(self, neighbours: dict[int, list[int]]) -> None:
        """Each identity's nearest other identities (pool indices), nearest first."""
        self.neighbours = neighbours

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch: ``x`` (2P, S, S, 3) uint8 with the two views of identity ``k`` at 2k and 2k+1, ``y`` (2P,)."""
        ids, cols = self.sample_views()
        return self.pool.views[ids, cols], ids.astype(np.int32)

    def sample_views(self) -> tuple[np.ndarray, np.ndarray]:
        """Where :meth:`sample`'s views come from: pool identity and view index of each, both ``(2P,)``."""
        chosen: list[int] = []
        seen: set[int] = set()
        if self.neighbours:
            n_nn = int(self.p * self.nn_share)
            for seed_id in self.rng.permutation(self.index):
                if len(chosen) >= n_nn:
                    break
                group = [int(seed_id), *self.neighbours.get(int(seed_id), [])]
                fresh = [i for i in group if i not in seen][: min(self.cluster, n_nn - len(chosen))]
                if len(fresh) >= 2:
                    chosen.extend(fresh)
                    seen.update(fresh)
        n_hard = len(chosen) + int(self.p * self.hard_share * (1 - self.nn_share if self.neighbours else 1))
        if self.families and n_hard > len(chosen):
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
        cols = np.empty(2 * len(ids), np.int64)
        cols[0::2], cols[1::2] = a, b
        return np.repeat(ids, 2), cols
