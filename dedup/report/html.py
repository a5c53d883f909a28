"""The self-contained HTML report: one file, thumbnails inline, works offline."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

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
.m{width:180px;border:2px solid #e5e7eb;border-radius:6px;padding:6px;font-size:12px;word-break:break-all}
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
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _member_html(m: Mapping[str, Any], thumbs: Mapping[str, str]) -> str:
    uri = thumbs.get(m["path"])
    img = f'<img src="{uri}" alt="">' if uri else '<div class="noimg">no preview</div>'
    label = "KEEP" if m["tier"] == "keeper" else m["tier"].replace("_", " ")
    confirmed = " · confirmed" if m.get("confirmed") else ""
    return (
        f'<div class="m{" keeper" if m["tier"] == "keeper" else ""}" data-tier="{_e(m["tier"])}">{img}'
        f'<div class="tier">{_e(label)}{confirmed}</div>'
        f"<div>product {_e(m.get('product_id') or '-')}</div>"
        f"<div>d = {m['distance']:.4f} · {m['width']}×{m['height']} · {m['bytes']:,} B</div>"
        f'<div title="{_e(m["path"])}">{_e(m["path"])}</div></div>'
    )


def render_html(report: Mapping[str, Any], thumbnails: Mapping[str, str] | None = None) -> str:
    """The report as one HTML page; ``thumbnails`` maps member paths to data URIs (optional)."""
    thumbs = thumbnails or {}
    s = report["summary"]
    changes = s.get("changes", {})
    head = (
        f"<h1>Duplicate report: {s['clusters']} clusters, {s['duplicates']} duplicates among {s['images']} images</h1>"
        f'<div class="meta">threshold {report["threshold"]:.4f} · model {_e(report["model"])} · '
        f"{_e(report['created_at'])} · keep policy {_e(', '.join(report.get('keep_policy', [])))} · "
        f"since run {_e(report.get('previous_run_id') or '-')}: "
        + ", ".join(f"{v} {k}" for k, v in changes.items() if v)
        + f", {s.get('resolved', 0)} resolved</div>"
    )
    tiers = ("exact", "same_pixels", "near")
    bar = "Show: " + "".join(
        f'<label><input type="checkbox" data-tier="{t}" checked> {t.replace("_", " ")} '
        f"({s.get('by_tier', {}).get(t, 0)})</label>"
        for t in tiers
    )
    blocks = []
    for c in report["clusters"]:
        change = c.get("change", "")
        blocks.append(
            f'<section class="cluster" id="c-{_e(c["id"])}"><h2>cluster {_e(c["id"])} · {len(c["members"])} images'
            f'<span class="badge {_e(change)}">{_e(change)}</span></h2>'
            f"<p>keep <b>{_e(c['keep']['path'])}</b>: {_e(c.get('reason', ''))}</p>"
            f'<div class="members">{"".join(_member_html(m, thumbs) for m in c["members"])}</div></section>'
        )
    resolved = report.get("resolved") or []
    if resolved:
        items = "".join(f"<li>{_e(r['id'])}: images {_e(r['image_ids'])}</li>" for r in resolved)
        blocks.append(
            f'<section class="cluster resolved"><h2>Resolved since the last run</h2><ul>{items}</ul></section>'
        )
    if not report["clusters"]:
        blocks.append('<section class="cluster"><h2>No duplicates found.</h2></section>')
    data = html.escape(json.dumps(report["summary"]))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>dedup report</title><style>{_STYLE}</style></head><body>"
        f'<header>{head}</header><div class="bar">{bar}</div><main data-summary="{data}">{"".join(blocks)}</main>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
