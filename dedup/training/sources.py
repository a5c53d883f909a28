"""Where training and held-out images come from, and the fixed split between them.

Training sources (every one listed in the model card, see :func:`training_sources`):

* Debian's ``tuxpaint-stamps-default`` and ``tuxpaint-data`` PNG/JPEG files (clip-art stamps, starter
  pictures, template photos). A stable, content-independent split by relative path keeps every image
  either in training or in the held-out set (used for ``catalog_samples/`` and the accuracy
  benchmark), never both;
* Debian's ``gnome-icon-theme``: its 256 px icons (devices, applications, places: product-like
  renderings), all of them, when the package is installed;
* the sample photographs that scikit-image ships (``skimage.data``), when it is installed.

Image families that the accuracy benchmark holds out entirely (game art, wallpaper photographs; see
``benchmarks/make_accuracy_set.py``) are never listed here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

GNOME_ICONS = Path("/usr/share/icons/gnome/256x256")

TUXPAINT_ROOTS = (Path("/usr/share/tuxpaint/stamps"), Path("/usr/share/tuxpaint"))
#: One image in this many goes to the held-out split.
HOLDOUT_EVERY = 5

Split = Literal["train", "holdout", "all"]


def split_of(relative_path: str) -> Literal["train", "holdout"]:
    """The split of one source image, decided by a hash of its path relative to its root."""
    digest = hashlib.sha1(relative_path.encode("utf-8"), usedforsecurity=False).digest()
    return "holdout" if digest[0] % HOLDOUT_EVERY == 0 else "train"


def tuxpaint_images(split: Split = "train", root: Path = Path("/usr/share/tuxpaint")) -> list[Path]:
    """Sorted image files (PNG/JPEG, at least 48 px on the shorter side is the caller's job) under ``root``.

    Fonts, sounds and UI icons are skipped: only ``stamps/``, ``starters/`` and ``templates/`` hold
    pictures worth learning from.
    """
    wanted_dirs = ("stamps", "starters", "templates")
    files: list[Path] = []
    for sub in wanted_dirs:
        base = root / sub
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if p.suffix.lower() not in (".png", ".jpg", ".jpeg") or not p.is_file():
                continue
            rel = p.relative_to(root).as_posix()
            if split == "all" or split_of(rel) == split:
                files.append(p)
    return files


def gnome_icons(root: Path = GNOME_ICONS) -> list[Path]:
    """The distinct 256 px PNG icons of ``gnome-icon-theme`` (symlinked aliases counted once), sorted."""
    if not root.is_dir():
        return []
    seen: dict[Path, Path] = {}
    for p in sorted(root.rglob("*.png")):
        real = p.resolve()
        if real.is_file() and real not in seen:
            seen[real] = p
    return sorted(seen.values())


def skimage_photos() -> list[Path]:
    """The colour and grey sample photographs bundled with scikit-image (none if it is not installed)."""
    try:
        import skimage
    except ImportError:
        return []
    base = Path(skimage.__file__).parent / "data"
    photos = (
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "motorcycle_left.png",
        "rocket.jpg",
        "hubble_deep_field.jpg",
        "ihc.png",
        "retina.jpg",
        "coins.png",
        "camera.png",
        "moon.png",
        "page.png",
        "text.png",
        "color.png",
        "logo.png",
        "microaneurysms.png",
        "grass.png",
        "gravel.png",
        "brick.png",
    )
    return [base / name for name in photos if (base / name).is_file()]


def training_sources() -> dict[str, list[Path]]:
    """The default training images by source (empty lists for packages that are not installed)."""
    return {
        "tuxpaint (training split)": tuxpaint_images("train"),
        "gnome-icon-theme 256px": gnome_icons(),
        "scikit-image sample photos": skimage_photos(),
    }
