"""Where training and held-out images come from, and the fixed split between them.

Source images are Debian's ``tuxpaint-stamps-default`` and ``tuxpaint-data`` PNG/JPEG files. A stable,
content-independent split by relative path keeps every image either in training or in the held-out
set (used for ``catalog_samples/`` and the accuracy benchmark), never both.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

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
