"""The self-contained HTML report: one file, thumbnails inline, works offline.

Paths are shown below the deepest folder that holds every member (:func:`common_root`), with the full
path on hover; the bar at the top filters members by tier and copies the remove list (every
non-keeper's path, as ``dedup report --format remove-list`` writes it).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from typing import Any

from dedup.types import Report, ReportMember

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}
header{background:#1f2937;color:#fff;padding:16px 24px}
header h1{margin:0 0 4px;font-size:20px}
header .meta{opacity:.8;font-size:13px}
.bar{padding:10px 24px;background:#fff;border-bottom:1px solid #ddd;position:sticky;top:0;z-index:1}
.bar label{margin-right:14px}
main{padding:16px 24px}
.cluster{background:#fff;border:1px solid #ddd;border-radius:8px;margin:0 0 16px;padding:12px}
.cluster h2{font-size:15px;margin:0 0 8px}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;margin-left:6px;background:#e5e7eb}
.badge.new{background:#fde68a}.badge.grown{background:#fecaca}.badge.shrunk,.badge.changed{background:#bfdbfe}
.members{display:flex;flex-wrap:wrap;gap:10px}
.m{width:180px;border:2px solid #e5e7eb;border-radius:6px;padding:6px;font-size:12px}
.m .path{word-break:break-all}
.n{white-space:nowrap}
.bar .remove{float:right}
.m.keeper{border-color:#16a34a}
.m img{display:block;max-width:164px;max-height:164px;margin:0 auto 4px}
.m .noimg{height:80px;background:#eee;display:flex;align-items:center;justify-content:center;color:#888}
.tier{font-weight:600}
.resolved li{font-size:12px}
"""

_SCRIPT = """
function applyFilter(){
  const on=new Set([...document.querySelectorAll('input[data-tier]:checked')].map(e=>e.dataset.tier));
  for(const c of document.querySelectorAll('.cluster')){
    let shown=0;
    for(const m of c.querySelectorAll('.m:not(.keeper)')){
      const v=on.has(m.dataset.tier); m.style.display=v?'':'none'; if(v) shown++;
    }
    c.style.display=shown?'':'none';
  }
}
document.querySelectorAll('input[data-tier]').forEach(e=>e.addEventListener('change',applyFilter));
const copyButton=document.getElementById('copy-remove');
if(copyButton) copyButton.addEventListener('click',()=>{
  const paths=JSON.parse(document.querySelector('main').dataset.remove);
  navigator.clipboard.writeText(paths.join('\\n')+'\\n').then(()=>{copyButton.textContent='copied'});
});
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def common_root(report: Report) -> str:
    """The deepest folder holding every member's file ("" when there are none): paths are shown below it."""
    folders = [os.path.dirname(m.path) for c in report.clusters for m in c.members]
    if not folders:
        return ""
    try:
        return os.path.commonpath(folders)
    except ValueError:  # paths on different drives
        return ""


def _shown(path: str, root: str) -> str:
    return os.path.relpath(path, root) if root else path


def _member_html(m: ReportMember, thumbs: Mapping[str, str], root: str) -> str:
    uri = thumbs.get(m.path)
    img = f'<img src="{_e(uri)}" alt="" loading="lazy">' if uri else '<div class="noimg">no preview</div>'
    label = "KEEP" if m.tier == "keeper" else m.tier.replace("_", " ")
    confirmed = " · confirmed" if m.confirmed else ""
    return (
        f'<div class="m{" keeper" if m.tier == "keeper" else ""}" data-tier="{_e(m.tier)}">{img}'
        f'<div class="tier">{_e(label)}{confirmed}</div>'
        f"<div>product {_e(m.product_id or '-')}</div>"
        f'<div><span class="n">d = {m.distance:.4f}</span> · <span class="n">{m.width}×{m.height}</span> · '
        f'<span class="n">{m.bytes:,} B</span></div>'
        f'<div class="path" title="{_e(m.path)}">{_e(_shown(m.path, root))}</div></div>'
    )


def render_html(report: Report, thumbnails: Mapping[str, str] | None = None) -> str:
    """The report as one HTML page; ``thumbnails`` maps member paths to image URLs (data URIs offline)."""
    thumbs = thumbnails or {}
    s = report.summary
    root = common_root(report)
    since = "first run" if report.previous_run_id is None else f"since run {report.previous_run_id}"
    changes = ", ".join(f"{v} {k}" for k, v in s.changes.items() if v)
    head = (
        f"<h1>Duplicate report: {s.clusters} clusters, {s.duplicates} duplicates among {s.images} images</h1>"
        f'<div class="meta">threshold {report.threshold:.4f} · model {_e(report.model)} · '
        f"{_e(report.created_at)} · keep policy {_e(', '.join(report.keep_policy))} · "
        f"{since}: {_e(changes or 'no clusters')}, {s.resolved} resolved"
        + (f' · paths below <span title="{_e(root)}">{_e(root)}</span>' if root else "")
        + "</div>"
    )
    tiers = ("exact", "same_pixels", "near")
    bar = "Show: " + "".join(
        f'<label><input type="checkbox" data-tier="{t}" checked> {t.replace("_", " ")} ({s.by_tier.get(t, 0)})</label>'
        for t in tiers
    )
    if report.clusters:
        bar += (
            f'<span class="remove">{s.duplicates} files to remove: '
            '<button id="copy-remove">copy the list</button></span>'
        )
    blocks = []
    for c in report.clusters:
        blocks.append(
            f'<section class="cluster" id="c-{_e(c.id)}"><h2>cluster {_e(c.id)} · {len(c.members)} images'
            f'<span class="badge {_e(c.change)}">{_e(c.change)}</span></h2>'
            f'<p>keep <b title="{_e(c.keep.path)}">{_e(_shown(c.keep.path, root))}</b>: {_e(c.reason)}</p>'
            f'<div class="members">{"".join(_member_html(m, thumbs, root) for m in c.members)}</div></section>'
        )
    if report.resolved:
        items = "".join(f"<li>{_e(cid)}: images {_e(', '.join(map(str, ids)))}</li>" for cid, ids in report.resolved)
        blocks.append(
            f'<section class="cluster resolved"><h2>Resolved since the last run</h2><ul>{items}</ul></section>'
        )
    if not report.clusters:
        blocks.append('<section class="cluster"><h2>No duplicates found.</h2></section>')
    data = html.escape(json.dumps(s.as_dict()))
    remove = html.escape(json.dumps(report.remove_paths()))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>dedup report</title><style>{_STYLE}</style></head><body>"
        f'<header>{head}</header><div class="bar">{bar}</div>'
        f'<main data-summary="{data}" data-remove="{remove}">{"".join(blocks)}</main>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
