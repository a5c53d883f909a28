"""Report renderers: the JSON of DESIGN.md, a one-row-per-member CSV, the HTML page and the remove list.

Every renderer takes the typed :class:`~dedup.types.Report`; :data:`dedup.config.REPORT_FORMATS` names
the formats once, and :func:`render_report` dispatches on them. The CSV is written from one field list
(:data:`CSV_COLUMNS`) with ``csv.DictWriter``, so a header can never disagree with its rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping

from dedup.config import REPORT_FORMATS
from dedup.report.html import render_html
from dedup.types import Report

#: The CSV report's columns, in order. ``keep`` is 1 for the suggested keeper, ``remove`` 1 for the others;
#: ``confirmed`` is 1 for a member of a pair a person marked as duplicates; ``change`` is the cluster's change
#: since the previous run; ``keep_rule`` the rule that chose the keeper.
CSV_COLUMNS = (
    "cluster_id",
    "keep",
    "remove",
    "path",
    "product_id",
    "tier",
    "distance",
    "confirmed",
    "change",
    "keep_rule",
    "width",
    "height",
    "bytes",
    "format",
    "sha256",
)


def render_json(report: Report) -> str:
    """The report as indented JSON."""
    return json.dumps(report.as_dict(), indent=2) + "\n"


def render_csv(report: Report) -> str:
    """One row per cluster member, columns :data:`CSV_COLUMNS`."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for cluster in report.clusters:
        for m in cluster.members:
            is_keeper = m.image_id == cluster.keep.image_id
            writer.writerow(
                {
                    "cluster_id": cluster.id,
                    "keep": int(is_keeper),
                    "remove": int(not is_keeper),
                    "path": m.path,
                    "product_id": m.product_id or "",
                    "tier": m.tier,
                    "distance": f"{m.distance:.6f}",
                    "confirmed": int(m.confirmed),
                    "change": cluster.change,
                    "keep_rule": cluster.keep_rule,
                    "width": m.width,
                    "height": m.height,
                    "bytes": m.bytes,
                    "format": m.format or "",
                    "sha256": m.sha256,
                }
            )
    return out.getvalue()


def render_remove_list(report: Report) -> str:
    """The non-keepers' paths, one a line: ``xargs -d '\\n' rm`` input (empty when there are no duplicates)."""
    return "".join(f"{p}\n" for p in report.remove_paths())


def render_report(report: Report, fmt: str, thumbnails: Mapping[str, str] | None = None) -> str:
    """Render ``report`` in one of :data:`~dedup.config.REPORT_FORMATS` (``thumbnails``: path → image URL, html)."""
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "html":
        return render_html(report, thumbnails)
    if fmt == "remove-list":
        return render_remove_list(report)
    raise ValueError(f"unknown report format {fmt!r}; use {', '.join(REPORT_FORMATS)}")
