"""The evaluate job: score a store's model and clusters against a labelled ground truth.

Ground truth is a CSV in one of two forms, with paths relative to the CSV's folder:

- ``path,group[,kind]``: every pair within a group is a duplicate, every pair across groups is not.
  ``kind`` names how a member was made from its group's reference (``crop``, ``pad``, ...); a blank
  kind or ``original`` marks the reference itself. Scores per kind are over the pairs joining a member
  of that kind to a reference (:func:`dedup.matching.metrics.kind_masks`).
- ``path_a,path_b,label[,kind]``: labelled pairs, 1 = duplicate, 0 = not.

Pairs are scored by the distance between the images' vectors: the catalog's own vector when the file
is in the catalog under the current model, else the file is embedded now. An optional queries CSV
(``path,group`` or ``path,product_id``) measures retrieval through :func:`query_paths`.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dedup.config import BATCH_SIZE, DEFAULT_KEEP
from dedup.errors import ConfigError, ImageError, InputError
from dedup.fsutil import atomic_write_bytes, atomic_write_text
from dedup.matching import metrics
from dedup.report.figure import to_png, to_svg
from dedup.report.plots import sweep_figure
from dedup.service.evaluation_result import (
    ClusterScores,
    EvaluationResult,
    ImageCounts,
    KeeperScores,
    QueryMiss,
    QueryScores,
    ThresholdChoice,
    UnusableFile,
)
from dedup.service.reporting import build_report
from dedup.service.search import query_paths
from dedup.service.store import Store
from dedup.types import Report

log = logging.getLogger(__name__)

#: Precision that the ``at_precision`` section of the result aims at (the model card's calibration target).
TARGET_PRECISION = 0.99
#: Catalog images fetched per query: enough distinct products for Recall@5 even when duplicates crowd the top.
QUERY_DEPTH = 50
#: Group truths are scored on all pairs (n² / 2): beyond this many images, give labelled pairs instead.
MAX_GROUP_IMAGES = 20_000
#: Suffixes of the sweep plot file and the format each one writes.
SWEEP_FORMATS = (".png", ".svg")
_TRUE = {"1", "true", "yes", "duplicate", "dup"}
_FALSE = {"0", "false", "no", "not_duplicate", "different"}


@dataclass
class Truth:
    """A parsed ground truth: unique image paths, and either their groups or labelled pairs of them."""

    form: str  # "groups" or "pairs"
    paths: list[Path]  # absolute, first appearance order
    groups: list[str] = field(default_factory=list)  # per path (groups form)
    kinds: list[str] = field(default_factory=list)  # per path (groups form), "" when none
    pair_a: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # pairs form: positions in paths
    pair_b: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pair_label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    pair_kind: list[str] = field(default_factory=list)


def _read_rows(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not csv_path.is_file():
        raise InputError(f"{csv_path} does not exist or is not a file")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {csv_path}: {exc}") from exc
    return columns, rows


def _resolve(base: Path, text: str, csv_path: Path, line: int) -> Path:
    if not text:
        raise InputError(f"{csv_path}, line {line}: the path is empty")
    p = Path(text).expanduser()
    # Ingest stores paths under the resolved folder it walked, so resolve the same way.
    return (p if p.is_absolute() else base / p).resolve()


def read_truth(csv_path: str | os.PathLike[str]) -> Truth:
    """Parse a ground-truth CSV (``path,group[,kind]`` or ``path_a,path_b,label[,kind]``); InputError if malformed."""
    path = Path(csv_path)
    columns, rows = _read_rows(path)
    base = path.resolve().parent
    if {"path", "group"} <= set(columns):
        truth = Truth(form="groups", paths=[])
        seen: dict[Path, int] = {}
        for line, row in enumerate(rows, start=2):
            p = _resolve(base, row.get("path", ""), path, line)
            group = row.get("group", "")
            if not group:
                raise InputError(f"{path}, line {line}: the group is empty")
            if p in seen:
                if truth.groups[seen[p]] != group:
                    raise InputError(f"{path}, line {line}: {p} is listed in two groups")
                continue
            seen[p] = len(truth.paths)
            truth.paths.append(p)
            truth.groups.append(group)
            truth.kinds.append(row.get("kind", ""))
        if len(truth.paths) > MAX_GROUP_IMAGES:
            raise InputError(
                f"{path} lists {len(truth.paths):,} images; group truths are scored on all pairs, so give at most "
                f"{MAX_GROUP_IMAGES:,} or use labelled pairs (path_a,path_b,label)"
            )
        return truth
    if {"path_a", "path_b", "label"} <= set(columns):
        truth = Truth(form="pairs", paths=[])
        pos: dict[Path, int] = {}
        a, b, labels = [], [], []
        for line, row in enumerate(rows, start=2):
            pa = _resolve(base, row.get("path_a", ""), path, line)
            pb = _resolve(base, row.get("path_b", ""), path, line)
            label = row.get("label", "").lower()
            if label not in _TRUE | _FALSE:
                raise InputError(f"{path}, line {line}: label must be 1 (duplicate) or 0 (not), got {label!r}")
            for p in (pa, pb):
                if p not in pos:
                    pos[p] = len(truth.paths)
                    truth.paths.append(p)
            a.append(pos[pa])
            b.append(pos[pb])
            labels.append(1 if label in _TRUE else 0)
            truth.pair_kind.append(row.get("kind", ""))
        truth.pair_a = np.asarray(a, np.int64)
        truth.pair_b = np.asarray(b, np.int64)
        truth.pair_label = np.asarray(labels, np.int8)
        return truth
    raise InputError(
        f"{path} has columns {columns}; expected path,group[,kind] (groups) or path_a,path_b,label (pairs)"
    )


def read_queries(csv_path: str | os.PathLike[str]) -> tuple[str, list[tuple[Path, str]]]:
    """Parse a queries CSV: ``("group" | "product_id", [(absolute path, expected label), ...])``."""
    path = Path(csv_path)
    columns, rows = _read_rows(path)
    key = "group" if "group" in columns else "product_id" if "product_id" in columns else None
    if "path" not in columns or key is None:
        raise InputError(f"{path} has columns {columns}; expected path,group or path,product_id")
    base = path.resolve().parent
    out = []
    for line, row in enumerate(rows, start=2):
        if not row.get(key):
            raise InputError(f"{path}, line {line}: the {key} is empty")
        out.append((_resolve(base, row.get("path", ""), path, line), row[key]))
    return key, out


def _vectors(store: Store, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[UnusableFile]]:
    """Vectors of ``paths``: ``(vectors (n, dim), usable (n,), from_catalog (n,), unusable files)``.

    Catalog vectors are taken only when they belong to the store's current model; other files are
    embedded with it (a stale vector would score another model).
    """
    encoder = store.encoder
    catalog = store.catalog
    ids, stored = catalog.indexed_vectors(encoder.model_id)
    row_of = {int(i): r for r, i in enumerate(ids.tolist())}
    out = np.zeros((len(paths), encoder.dim), np.float32)
    usable = np.zeros(len(paths), bool)
    to_embed: list[int] = []
    for k, p in enumerate(paths):
        info = catalog.image_by_path(str(p))
        row = row_of.get(info.image_id) if info is not None else None
        if row is None:
            to_embed.append(k)
        else:
            out[k], usable[k] = stored[row], True
    unusable: list[UnusableFile] = []
    for start in range(0, len(to_embed), BATCH_SIZE):
        chunk = to_embed[start : start + BATCH_SIZE]
        try:
            out[chunk] = store.embed_paths([paths[k] for k in chunk])
            usable[chunk] = True
            continue
        except ImageError:
            pass  # find the bad files one by one
        for k in chunk:
            try:
                out[k] = store.embed_paths([paths[k]])[0]
                usable[k] = True
            except ImageError as exc:
                log.warning("left out of the evaluation: %s", exc.message)
                unusable.append(UnusableFile(str(paths[k]), exc.reason))
    from_catalog = np.ones(len(paths), bool)
    from_catalog[to_embed] = False
    return out, usable, from_catalog, unusable


def _pair_distances(vectors: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances of unit vectors for pairs of row positions, via one Gram matrix when it is small."""
    if len(vectors) <= 8_000:
        gram = vectors @ vectors.T
        ip = gram[a, b]
    else:
        ip = np.einsum("ij,ij->i", vectors[a], vectors[b])
    return np.sqrt(np.clip(2.0 - 2.0 * ip, 0.0, None)).astype(np.float64)


def _bcubed_section(
    store: Store, truth: Truth, from_catalog: np.ndarray, threshold: float, keep: str = DEFAULT_KEEP
) -> ClusterScores:
    """B-cubed scores of the report's clusters (computed, not saved) against the truth groups, and how
    often the keeper is the original.

    Only images in the catalog can be in a cluster, so only they are scored. Where the truth names an
    ``original`` kind, a cluster holding an original is kept right when its keeper is an original of the
    cluster's group or has the same bytes or decoded pixels as one.
    """
    report = build_report(store, threshold=threshold, keep=keep, save=False)
    cluster_of = {m.path: c.id for c in report.clusters for m in c.members}
    keep_rows = np.flatnonzero(from_catalog).tolist()
    predicted = [cluster_of.get(str(truth.paths[k]), f"single:{truth.paths[k]}") for k in keep_rows]
    groups = [truth.groups[k] for k in keep_rows]
    p, r, f1 = metrics.bcubed(predicted, groups)
    return ClusterScores(
        images=len(keep_rows),
        clusters=len({c for c in predicted if not c.startswith("single:")}),
        precision=p,
        recall=r,
        f1=f1,
        keeper=keeper_accuracy(report, truth),
    )


def keeper_accuracy(report: Report, truth: Truth) -> KeeperScores | None:
    """Of the report's clusters that hold an original (truth kind ``original``), the share whose keeper is
    one (or a byte- or pixel-identical copy of one), and the kinds of the wrong keepers; None without
    originals in the truth."""
    kind_of = {str(p): k for p, k in zip(truth.paths, truth.kinds, strict=True)}
    if "original" not in kind_of.values():
        return None
    with_original = right = 0
    wrong: dict[str, int] = {}
    for c in report.clusters:
        originals = [m for m in c.members if kind_of.get(m.path) == "original"]
        if not originals:
            continue
        with_original += 1
        keeper = c.keep
        # An original's tier is its likeness to the keeper: "exact" or "same_pixels" make the keeper as good.
        same = any(o.image_id == keeper.image_id or o.tier in ("exact", "same_pixels") for o in originals)
        if same:
            right += 1
        else:
            kind = kind_of.get(keeper.path) or "unlabelled"
            wrong[kind] = wrong.get(kind, 0) + 1
    return KeeperScores(
        clusters_with_original=with_original,
        original_kept=right,
        policy=tuple(report.keep_policy),
        wrong_keepers=dict(sorted(wrong.items(), key=lambda kv: -kv[1])),
    )


def _query_section(store: Store, truth: Truth, queries_csv: str | os.PathLike[str]) -> QueryScores:
    """Recall@1/@5 and MRR of the queries, ranking catalog hits by distinct product (group or product id)."""
    key, queries = read_queries(queries_csv)
    group_of: dict[str, str] = {}
    if key == "group":
        if truth.form != "groups":
            raise InputError("a path,group queries CSV needs a path,group ground truth to name the groups")
        group_of = {str(p): g for p, g in zip(truth.paths, truth.groups, strict=True)}
    ranks: list[float] = []
    misses: list[QueryMiss] = []
    failed: list[UnusableFile] = []
    for (qpath, expected), result in zip(
        queries, query_paths(store, [q for q, _ in queries], QUERY_DEPTH), strict=True
    ):
        if isinstance(result, ImageError):
            failed.append(UnusableFile(str(qpath), result.reason))
            continue
        labels: list[str] = []
        for hit in result.hits:
            label = group_of.get(hit.image.path, f"image:{hit.image.path}") if key == "group" else hit.image.product_id
            if label is not None and label not in labels:
                labels.append(label)
        rank = metrics.first_relevant_rank(labels, expected)
        ranks.append(rank)
        if rank > 1:
            misses.append(
                QueryMiss(str(qpath), expected, None if np.isinf(rank) else int(rank), labels[0] if labels else None)
            )
    return QueryScores(
        by=key,
        count=len(ranks),
        recall_at_1=metrics.recall_at_k(ranks, 1),
        recall_at_5=metrics.recall_at_k(ranks, 5),
        mrr=metrics.mean_reciprocal_rank(ranks),
        failed=tuple(failed),
        misses=tuple(misses),
    )


def _sweep_format(path: str | os.PathLike[str]) -> str:
    """``"png"`` or ``"svg"`` from the sweep file's suffix (either case); InputError for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in SWEEP_FORMATS:
        raise InputError(
            f"cannot tell the sweep plot's format from {os.fspath(path)!r}: "
            f"its name must end in {' or '.join(SWEEP_FORMATS)}"
        )
    return suffix.removeprefix(".")


def _write_sweep(
    out: Path,
    precision: np.ndarray,
    recall: np.ndarray,
    positive: np.ndarray,
    negative: np.ndarray,
    chosen: tuple[float, float, float],
) -> str:
    """Render the sweep plot in the format of ``out``'s suffix, write it there; returns its absolute path."""
    figure = sweep_figure(precision, recall, positive, negative, chosen=chosen)
    try:
        if _sweep_format(out) == "png":
            atomic_write_bytes(out, to_png(figure))
        else:
            atomic_write_text(out, to_svg(figure))
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    log.info("sweep plot written to %s", out)
    return str(out.resolve())


def evaluate(
    store: Store,
    truth_csv: str | os.PathLike[str],
    queries_csv: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    sweep: str | os.PathLike[str] | None = None,
    keep: str = DEFAULT_KEEP,
) -> EvaluationResult:
    """Score the store's model against a ground truth (``as_dict()`` of the result is its JSON).

    Sections: ``pairs`` (precision, recall, F1 at ``threshold``, default the model card's), ``by_kind``,
    ``best_f1`` and ``at_precision`` (thresholds this truth would choose), ``clusters`` (B-cubed of the
    duplicate report's clusters, and ``keeper``: how often the ``keep`` policy keeps the truth's
    ``original``; groups truths only), ``queries`` (with ``queries_csv``). With ``sweep``
    (a ``.png`` or ``.svg`` path), writes the precision-recall curve and the distance histogram there, in the
    format its suffix names, and ``sweep`` in the result is its absolute path.
    See :class:`~dedup.service.evaluation_result.EvaluationResult` for each section.
    """
    started = time.monotonic()
    if sweep is not None:
        _sweep_format(sweep)  # refuse a bad suffix before the long part, not after it
    thr = store.encoder.threshold if threshold is None else float(threshold)
    if not 0.0 <= thr <= 2.0:
        raise ConfigError(f"threshold must be a distance between 0 and 2, got {thr}")
    truth = read_truth(truth_csv)
    vectors, usable, from_catalog, unusable = _vectors(store, truth.paths)
    counts = ImageCounts(
        listed=len(truth.paths),
        in_catalog=int(from_catalog.sum()),
        embedded=int((usable & ~from_catalog).sum()),
        unusable=len(unusable),
    )
    if truth.form == "groups":
        a, b, labels = metrics.group_pairs(truth.groups)
        by_kind = metrics.kind_masks(a, b, truth.kinds)
    else:
        a, b, labels = truth.pair_a, truth.pair_b, truth.pair_label
        by_kind = {k: np.asarray([pk == k for pk in truth.pair_kind]) for k in sorted(set(truth.pair_kind) - {""})}
    ok = usable[a] & usable[b]
    a, b, labels = a[ok], b[ok], labels[ok]
    by_kind = {k: m[ok] for k, m in by_kind.items()}
    if not len(a):
        raise InputError(f"{truth_csv} gives no pair of usable images to score")
    dist = _pair_distances(vectors, a, b)
    scores = metrics.pair_scores(dist, labels, thr)
    f1, bp, br, bt = metrics.best_f1_threshold(dist, labels)
    at_p = metrics.threshold_at_precision(dist, labels, TARGET_PRECISION)
    clusters = _bcubed_section(store, truth, from_catalog, thr, keep) if truth.form == "groups" else None
    queries = _query_section(store, truth, queries_csv) if queries_csv is not None else None
    sweep_path = None
    if sweep is not None:
        _, precision, recall, _ = metrics.precision_recall_curve(dist, labels)
        chosen = (scores.recall or 0.0, scores.precision if scores.precision is not None else 1.0, thr)
        sweep_path = _write_sweep(Path(sweep), precision, recall, dist[labels == 1], dist[labels == 0], chosen)
    return EvaluationResult(
        truth=str(Path(truth_csv).resolve()),
        form=truth.form,
        model=store.encoder.model_id,
        threshold=thr,
        threshold_source="model card" if threshold is None else "given",
        images=counts,
        pairs=scores,
        by_kind={k: metrics.pair_scores(dist[m], labels[m], thr) for k, m in by_kind.items()},
        best_f1=ThresholdChoice(threshold=bt, precision=bp, recall=br, f1=f1),
        at_precision=ThresholdChoice(*at_p) if at_p is not None else ThresholdChoice(None, None, None),
        target_precision=TARGET_PRECISION,
        unusable=tuple(unusable),
        clusters=clusters,
        queries=queries,
        sweep=sweep_path,
        seconds=time.monotonic() - started,
    )


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def evaluation_text(result: EvaluationResult) -> str:
    """A readable summary of :func:`evaluate`'s result: overall, per kind, clusters, queries."""
    img = result.images
    lines = [
        f"model {result.model}, threshold {result.threshold:.4f} ({result.threshold_source})",
        f"images: {img.listed} listed, {img.in_catalog} from the catalog, {img.embedded} embedded now, "
        f"{img.unusable} unusable",
        "",
        f"{'pairs':<16} {'P':>7} {'R':>7} {'F1':>7} {'dup':>8} {'non-dup':>10} {'TP':>7} {'FP':>6} {'FN':>6}",
    ]

    def row(name: str, s: metrics.PairScores) -> str:
        return (
            f"{name:<16} {_fmt(s.precision):>7} {_fmt(s.recall):>7} {_fmt(s.f1):>7} {s.positives:>8} "
            f"{s.negatives:>10} {s.tp:>7} {s.fp:>6} {s.fn:>6}"
        )

    lines.append(row("all", result.pairs))
    for kind, s in result.by_kind.items():
        lines.append(row(f"  {kind}", s))
    b = result.best_f1
    lines.append("")
    lines.append(
        f"best F1 on this truth: {_fmt(b.f1)} (P {_fmt(b.precision)}, R {_fmt(b.recall)}) at {_fmt(b.threshold)}"
    )
    ap = result.at_precision
    if ap.threshold is not None:
        lines.append(
            f"precision >= {result.target_precision}: recall {_fmt(ap.recall)} at threshold {ap.threshold:.4f}"
        )
    else:
        lines.append(f"precision >= {result.target_precision}: reached at no threshold")
    c = result.clusters
    if c is not None:
        lines.append(
            f"clusters (B-cubed over {c.images} images, {c.clusters} clusters): "
            f"P {c.precision:.4f}, R {c.recall:.4f}, F1 {c.f1:.4f}"
        )
        k = c.keeper
        if k is not None and k.accuracy is not None:
            wrong = ", ".join(f"{kind} {n}" for kind, n in k.wrong_keepers.items()) or "none"
            lines.append(
                f"keeper ({', '.join(k.policy)}): the original in {k.original_kept} of "
                f"{k.clusters_with_original} clusters holding one ({k.accuracy:.4f}); wrong keepers: {wrong}"
            )
    q = result.queries
    if q is not None:
        lines.append(
            f"queries ({q.count}, by {q.by}): Recall@1 {q.recall_at_1:.4f}, Recall@5 {q.recall_at_5:.4f}, "
            f"MRR {q.mrr:.4f}" + (f"; {len(q.failed)} unreadable" if q.failed else "")
        )
    if result.sweep:
        lines.append(f"sweep plot: {result.sweep}")
    return "\n".join(lines) + "\n"
