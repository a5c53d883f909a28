"""Product metadata CSV: links image files to products."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from dedup.errors import InputError
from dedup.types import ProductRecord

_KNOWN = {"path", "filename", "product_id", "title", "category"}


@dataclass
class ProductMetadata:
    """Products and the image→product links read from one CSV."""

    products: dict[str, ProductRecord] = field(default_factory=dict)
    by_path: dict[str, str] = field(default_factory=dict)  # absolute path -> product_id
    by_name: dict[str, str] = field(default_factory=dict)  # file name -> product_id

    def product_for(self, path: Path) -> str:
        """The product id of an image: from the CSV by path, then by file name, else the file stem."""
        key = os.path.normpath(str(path))
        return self.by_path.get(key) or self.by_name.get(path.name) or path.stem


def read_metadata(csv_path: Path | None, root: Path) -> ProductMetadata:
    """Read a metadata CSV (columns ``path`` or ``filename``, ``product_id``, optional ``title``,
    ``category``; any other column is kept as a product attribute).

    Relative ``path`` values are taken relative to the ingested folder ``root``.
    """
    meta = ProductMetadata()
    if csv_path is None:
        return meta
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = set(reader.fieldnames or [])
            if "product_id" not in cols or not ({"path", "filename"} & cols):
                raise InputError(
                    f"{csv_path}: the metadata CSV needs a 'product_id' column and a 'path' or 'filename' "
                    f"column (found: {', '.join(sorted(cols)) or 'no header'})"
                )
            for line, row in enumerate(reader, start=2):
                pid = (row.get("product_id") or "").strip()
                if not pid:
                    raise InputError(f"{csv_path}:{line}: empty product_id")
                extra = {k: v for k, v in row.items() if k and k not in _KNOWN and v not in (None, "")}
                old = meta.products.get(pid)
                meta.products[pid] = ProductRecord(
                    product_id=pid,
                    title=(row.get("title") or "").strip() or (old.title if old else None),
                    category=(row.get("category") or "").strip() or (old.category if old else None),
                    attributes={**(old.attributes if old else {}), **extra},
                )
                rel = (row.get("path") or "").strip()
                if rel:
                    meta.by_path[os.path.normpath(str(root / rel))] = pid
                name = (row.get("filename") or "").strip()
                if name:
                    meta.by_name[name] = pid
    except OSError as exc:
        raise InputError(f"{csv_path}: cannot read the metadata CSV: {exc.strerror or exc}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{csv_path}: not a readable CSV file: {exc}") from exc
    return meta
