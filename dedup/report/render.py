"""Report renderers: the JSON of DESIGN.md and a one-row-per-member CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from dedup.report.html import render_html

CSV_COLUMNS = (
    "cluster_id",
    "keep",
    "path",
    "product_id",
    "tier",
    "distance",
    "width",
    "height",
    "bytes",
    "sha256",
)


def render_json(report: Mapping[str, Any]) -> str:
    """The report as indented JSON."""
    return json.dumps(report, indent=2) + "\n"


def render_csv(report: Mapping[str, Any]) -> str:
    """One row per cluster member; ``keep`` is 1 for the suggested keeper."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for cluster in report["clusters"]:
        keep_path = cluster["keep"]["path"]
        for m in cluster["members"]:
            writer.writerow(
                [
                    cluster["id"],
                    int(m["path"] == keep_path),
                    m["path"],
                    m["product_id"] or "",
                    m["tier"],
                    f"{m['distance']:.6f}",
                    int(bool(m.get("confirmed"))),
                    cluster.get("change", ""),
                    m["width"],
                    m["height"],
                    m["bytes"],
                    m["sha256"],
                ]
            )
    return out.getvalue()


def render_report(report: Mapping[str, Any], fmt: str, thumbnails: Mapping[str, str] | None = None) -> str:
    """Render ``report`` as ``json``, ``csv`` or ``html`` (``thumbnails``: path → data URI, for html)."""
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "html":
        return render_html(report, thumbnails)
    raise ValueError(f"unknown report format {fmt!r}; use json, csv or html")
