"""The web page at ``/``: drop a photo, see the closest catalog products. Plain HTML and JS, no CDN.

Kept as a string in a module so it ships with the package without package-data settings. Results are
inserted with ``textContent`` (never as HTML): titles and product ids come from catalog data.
"""

from __future__ import annotations

#: Content-Security-Policy of the page: nothing may load from anywhere but this server.
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dedup: find similar products</title>
<link rel="icon" href="data:,">
<style>
  :root { font-family: system-ui, sans-serif; color: #222; background: #fafafa; }
  body { max-width: 1100px; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
  h1 { font-size: 1.4rem; margin: .5rem 0 1rem; }
  #drop { display: block; border: 2px dashed #999; border-radius: 10px; padding: 2rem; text-align: center;
          background: #fff; cursor: pointer; }
  #drop.over { border-color: #1a73e8; background: #eef4fd; }
  #drop input { display: block; margin: .8rem auto 0; }
  .controls { display: flex; flex-wrap: wrap; gap: 1rem; align-items: end; margin: 1rem 0; }
  .controls label { display: flex; flex-direction: column; font-size: .85rem; gap: .2rem; }
  .controls input { font-size: 1rem; padding: .25rem .4rem; }
  #status { min-height: 1.4em; margin: .5rem 0; }
  #status.error { color: #b00020; }
  #query-preview { max-height: 160px; max-width: 240px; display: none; border: 1px solid #ddd; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 1rem;
             margin-top: 1rem; }
  .card { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .6rem; font-size: .85rem; }
  .card.duplicate { border-color: #c62828; box-shadow: 0 0 0 1px #c62828; }
  .card img { width: 100%; height: 160px; object-fit: contain; background: #f3f3f3; }
  .card .rank { float: right; color: #777; }
  .card .product-id { font-weight: 600; word-break: break-all; }
  .card .title { color: #444; }
  .card .similarity { font-size: 1.05rem; }
  .badge { display: inline-block; background: #c62828; color: #fff; border-radius: 4px; padding: 0 .35rem;
           font-size: .75rem; }
  footer { margin-top: 2rem; font-size: .85rem; }
</style>
</head>
<body>
<h1>Find similar products</h1>
<form id="query-form">
  <label id="drop" for="file">
    Drop a photo here, or choose one:
    <input id="file" name="image" type="file" accept="image/*">
  </label>
  <div class="controls">
    <label>Results <input id="k" type="number" min="1" max="100" value="5"></label>
    <label>Category (optional) <input id="category" type="text" placeholder="any"></label>
    <label><input id="per-product" type="checkbox" checked> One image per product</label>
    <label>API key (if required) <input id="api-key" type="password" autocomplete="off"></label>
  </div>
</form>
<img id="query-preview" alt="the photo you searched with">
<div id="status" role="status" aria-live="polite"></div>
<div id="results" aria-label="results"></div>
<footer>
  <a id="report-link" href="/api/v1/reports/latest.html">Latest duplicate report</a>
  (<a id="report-json-link" href="/api/v1/reports/latest">JSON</a>) ·
  <a href="/docs">API documentation</a> · <a href="/healthz">Status</a>
</footer>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const drop = $("drop"), fileInput = $("file"), results = $("results"), statusLine = $("status");
let lastFile = null;

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function card(r) {
  const c = el("div", "card" + (r.duplicate ? " duplicate" : ""));
  c.dataset.imageId = r.image_id;
  const img = el("img");
  img.src = r.thumbnail_url;
  img.alt = r.title || r.product_id || "catalog image";
  img.loading = "lazy";
  c.append(img, el("span", "rank", "#" + r.rank));
  c.append(el("div", "product-id", r.product_id || "(no product)"));
  if (r.title) c.append(el("div", "title", r.title));
  const sim = el("div", "similarity", "similarity " + (100 * r.similarity).toFixed(1) + " %");
  sim.dataset.value = r.similarity;
  c.append(sim, el("div", "distance", "distance " + r.distance.toFixed(4)));
  if (r.duplicate) c.append(el("span", "badge", "near-duplicate"));
  return c;
}

async function search(file) {
  if (!file) return;
  lastFile = file;
  const preview = $("query-preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.style.display = "block";
  results.replaceChildren();
  say("Searching…");
  const form = new FormData();
  form.append("image", file, file.name || "photo");
  form.append("k", $("k").value || "5");
  const category = $("category").value.trim();
  if (category) form.append("category", category);
  form.append("per_product", $("per-product").checked ? "true" : "false");
  const headers = {};
  const key = $("api-key").value;
  if (key) headers["X-API-Key"] = key;
  let response, body = null;
  try {
    response = await fetch("/api/v1/query", { method: "POST", body: form, headers });
    body = await response.json();
  } catch (err) {
    say("The server did not answer: " + err, true);
    return;
  }
  if (!response.ok) {
    say((body && body.error && body.error.message) || ("error " + response.status), true);
    return;
  }
  if (!body.results.length) {
    say("No catalog images to compare with" + (category ? " in category " + category : "") + ".");
    return;
  }
  results.replaceChildren(...body.results.map(card));
  const dupes = body.results.filter((r) => r.duplicate).length;
  const what = body.per_product ? " closest products" : " closest catalog images";
  say(body.results.length + what + (dupes ? ", " + dupes + " near-duplicate(s)" : "") + ".");
}

fileInput.addEventListener("change", () => search(fileInput.files[0]));
for (const id of ["k", "category", "per-product"]) $(id).addEventListener("change", () => search(lastFile));
$("query-form").addEventListener("submit", (e) => { e.preventDefault(); search(lastFile); });
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
// A file dropped beside the zone must not make the browser leave the page to show it.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());
drop.addEventListener("drop", (e) => {
  const file = e.dataTransfer && e.dataTransfer.files[0];
  if (file) search(file);
});
</script>
</body>
</html>
"""
