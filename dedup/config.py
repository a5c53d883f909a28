"""Defaults and settings shared by the command line, the HTTP API and the library."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

#: Environment variables read at the edges (CLI, server).
ENV_STORE = "DEDUP_STORE"
ENV_DB_URL = "DEDUP_DB_URL"
ENV_MODEL = "DEDUP_MODEL"
ENV_INDEX_KIND = "DEDUP_INDEX_KIND"

DEFAULT_STORE = "dedup-store"
#: File extensions ingest looks at (lower case, with the dot).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}
)
#: Decompression-bomb guard: images with more pixels than this are refused (≈ 16k × 10k).
MAX_PIXELS = 178_956_970
#: Images whose decoded picture would take more memory than this are refused before they are decoded (8192 × 8192
#: RGB, 11585 × 11585 16-bit grey, 16384 × 16384 8-bit grey): decoding one image then adds at most about this much
#: to a process's memory (benchmarks/memory.py measures it), whatever its format or bit depth.
MAX_DECODE_BYTES = 256 * 1024 * 1024
#: Files larger than this are refused without being read.
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Images embedded per model call and written per catalog transaction (a transaction costs ~13 statements,
#: so 256 spends 40 % less catalog time a file than 64; an interrupted ingest redoes at most one batch).
BATCH_SIZE = 256
#: Where ingest decodes: this machine's cores ("local"), or a Ray cluster that decodes and embeds ("ray", the [ray]
#: extra; dedup.service.ray_engine).
INGEST_ENGINES = ("local", "ray")
#: Seconds between index saves during a long ingest (the index is also saved at the end).
INDEX_SAVE_INTERVAL_S = 30.0
#: Catalogs with at least this many vectors get an IVF index (sub-millisecond queries) instead of an exact one.
IVF_MIN_VECTORS = 100_000
#: Index kinds a user may choose for a store; "auto" (or none) is exact search below IVF_MIN_VECTORS, IVF above.
#: "ivfpq" keeps 32 bytes of code a vector instead of its float32 values (512 bytes at 128-d); results are re-ranked
#: on the catalog's exact vectors.
INDEX_KIND_NAMES = ("flat", "ivf", "ivfpq")
#: What ``--index-kind`` and ``DEDUP_INDEX_KIND`` accept (dedup.index.factory maps each name to its class).
INDEX_KIND_CHOICES = ("auto", *INDEX_KIND_NAMES)
#: Formats of ``dedup report`` (dedup.report.render renders each): the JSON of DESIGN.md, one CSV row per cluster
#: member, a self-contained HTML page, and the paths of every non-keeper, one a line.
REPORT_FORMATS = ("json", "csv", "html", "remove-list")
#: The default keeper policy, best rule first (dedup.matching.keeper explains the rules; docs/benchmarks.md measures
#: them): not a re-compressed JPEG, then the copy closest in pixels to all the others, then the sharpest, then the
#: plain facts, and for byte-identical copies ingested together the shortest file name.
DEFAULT_KEEP = "quality,central,detail,resolution,size,oldest,name"
#: Default number of neighbours for queries.
DEFAULT_K = 5
#: Backbones a tower can be built on (dedup.embedding.backbones registers each; listed here so the command line
#: can offer them without importing Keras). The first is dedup's own small CNN, trained from scratch.
BACKBONE_NAMES = ("residual-cnn", "efficientnet-lite0")
#: The backbone ``dedup train`` builds unless told otherwise: ImageNet-pretrained features carry over to catalogs the
#: model never saw (docs/benchmarks.md, transfer matrix).
DEFAULT_BACKBONE = "efficientnet-lite0"


class QueryView(NamedTuple):
    """One view of a query photo: the crop keeping ``fraction`` of each side (1.0 is the whole photo), centred
    at ``(cx, cy)`` (fractions of the width and height; the crop is kept inside the frame), mirrored
    left-right or not. Written ``0.85`` (centred), ``0.85m`` (mirrored) or ``0.6@0.3:0.7`` (off-centre)."""

    fraction: float
    mirror: bool = False
    cx: float = 0.5
    cy: float = 0.5

    def __str__(self) -> str:
        at = "" if (self.cx, self.cy) == (0.5, 0.5) else f"@{self.cx:g}:{self.cy:g}"
        return f"{self.fraction:g}{'m' if self.mirror else ''}{at}"


#: Off-centre 60 % crops on a 3 × 3 grid around the centre, a query's guesses at where the product is in the frame.
_GRID60 = tuple(QueryView(0.6, cx=x, cy=y) for y in (0.3, 0.5, 0.7) for x in (0.3, 0.5, 0.7) if (x, y) != (0.5, 0.5))
#: The views of a query photo that go through the model; a catalog image scores its best view. A customer's photo
#: shows the product small (a third to two thirds of the frame) and anywhere in it, so the views are the whole photo,
#: two centred crops and eight off-centre 60 % crops: eleven model passes a query (~27 ms at 410 img/s). On the dev
#: splits of three image families (benchmarks/query_views.py, EfficientNet-Lite0 model, 1,074 phone photos) mean
#: top-1 was 0.789 for the whole photo, 0.828 for the former default (85 % crop and its mirror image), 0.852 for
#: three centred views and 0.914 for these eleven; sixteen views gave 0.910.
#: Env DEDUP_QUERY_VIEWS, e.g. "1" for the whole photo only, "1,0.85,0.6" for three centred views.
QUERY_VIEWS: tuple[QueryView, ...] = (QueryView(1.0), QueryView(0.85), QueryView(0.6), *_GRID60)
ENV_QUERY_VIEWS = "DEDUP_QUERY_VIEWS"


#: Whether query photos go through the model's query tower (dedup.training.query_tower) when it has one ("on") or
#: through the catalog tower ("off"). Env DEDUP_QUERY_TOWER.
QUERY_TOWER_MODES = ("on", "off")
QUERY_TOWER = "on"
ENV_QUERY_TOWER = "DEDUP_QUERY_TOWER"


def query_tower_from_env() -> str:
    """:data:`QUERY_TOWER`, or ``DEDUP_QUERY_TOWER`` (ConfigError unless one of QUERY_TOWER_MODES)."""
    mode = os.environ.get(ENV_QUERY_TOWER, "").strip().lower() or QUERY_TOWER
    if mode not in QUERY_TOWER_MODES:
        from dedup.errors import ConfigError

        raise ConfigError(f"{ENV_QUERY_TOWER} must be one of {', '.join(QUERY_TOWER_MODES)}, got {mode!r}")
    return mode


def parse_query_views(text: str) -> tuple[QueryView, ...]:
    """Comma-separated views (``1``, ``0.85``, ``0.85m``, ``0.6@0.3:0.7``) → QueryViews; ConfigError if malformed."""
    views: list[QueryView] = []
    for part in text.split(","):
        item, _, at = part.strip().lower().partition("@")
        mirror = item.endswith("m")
        try:
            fraction = float(item[:-1] if mirror else item)
            cx, cy = (float(v) for v in at.split(":")) if at else (0.5, 0.5)
        except ValueError:
            fraction, cx, cy = -1.0, 0.5, 0.5
        if not 0.0 < fraction <= 1.0 or not (0.0 <= cx <= 1.0 and 0.0 <= cy <= 1.0):
            from dedup.errors import ConfigError

            raise ConfigError(
                f"{ENV_QUERY_VIEWS} must be comma-separated side fractions in (0, 1], each optionally followed by "
                f"'m' (mirrored) and '@X:Y' (the crop's centre, fractions of the frame), e.g. '1,0.6@0.3:0.7'; "
                f"got {text!r}"
            )
        views.append(QueryView(fraction, mirror, cx, cy))
    return tuple(views)


def query_views_from_env() -> tuple[QueryView, ...]:
    """:data:`QUERY_VIEWS`, or the views in ``DEDUP_QUERY_VIEWS`` (ConfigError if malformed)."""
    text = os.environ.get(ENV_QUERY_VIEWS, "").strip()
    return parse_query_views(text) if text else QUERY_VIEWS


def default_model_dir() -> Path:
    """The model shipped inside the package (``dedup/models/default``)."""
    return Path(__file__).resolve().parent / "models" / "default"


#: The model name that stands for the shipped model wherever a model folder is asked for.
DEFAULT_MODEL_NAME = "default"


def model_dir_of(model: str | os.PathLike[str] | None) -> Path:
    """The model folder ``model`` names: None, ``""`` or ``"default"`` mean the shipped model.

    The one place that decides it; the environment (``DEDUP_MODEL``) is read by :meth:`StoreConfig.resolve`.
    """
    text = "" if model is None else os.fspath(model).strip()
    if text in ("", DEFAULT_MODEL_NAME):
        return default_model_dir()
    return Path(text).expanduser().resolve()


@dataclass(frozen=True)
class StoreConfig:
    """Where a store lives (its folder and the SQLAlchemy URL of its catalog), the model folder it embeds
    with, and which index kind it wants. :meth:`resolve` fills each from the arguments, then the
    environment, then the defaults, so the library and the command line see the same settings."""

    root: Path
    db_url: str
    #: The model folder (:func:`model_dir_of`: the shipped model unless one is named).
    model_dir: Path = field(default_factory=default_model_dir)
    #: None picks by catalog size (flat, then IVF from IVF_MIN_VECTORS on); else a kind of dedup.index.INDEX_KINDS.
    index_kind: str | None = None
    #: Views of a query photo (see QUERY_VIEWS).
    query_views: tuple[QueryView, ...] = QUERY_VIEWS
    #: Which tower embeds query photos (see QUERY_TOWER).
    query_tower: str = QUERY_TOWER

    @classmethod
    def resolve(
        cls,
        store: str | os.PathLike[str] | None = None,
        db_url: str | None = None,
        index_kind: str | None = None,
        model: str | os.PathLike[str] | None = None,
    ) -> StoreConfig:
        """Fill unset values from the environment (``DEDUP_STORE``, ``DEDUP_DB_URL``, ``DEDUP_INDEX_KIND``,
        ``DEDUP_MODEL``...), then from the defaults ("auto" index kind means None)."""
        root = Path(store or os.environ.get(ENV_STORE) or DEFAULT_STORE).expanduser().resolve()
        url = db_url or os.environ.get(ENV_DB_URL) or f"sqlite:///{root / 'catalog.sqlite'}"
        kind = (index_kind or os.environ.get(ENV_INDEX_KIND) or "auto").strip().lower()
        return cls(
            root=root,
            db_url=url,
            model_dir=model_dir_of(model or os.environ.get(ENV_MODEL)),
            index_kind=None if kind == "auto" else kind,
            query_views=query_views_from_env(),
            query_tower=query_tower_from_env(),
        )

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"
