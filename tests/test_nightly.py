"""What a nightly cron run meets: old failures, an edited metadata CSV, review marks and their undo."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from dedup.cli import cli
from dedup.errors import EXIT_DUPLICATES_FOUND, EXIT_INPUT, EXIT_OK, EXIT_PARTIAL
from dedup.service import build_report, clear_pair, ingest_folder, mark_pair, open_store

from .conftest import SAMPLE_CATALOG

SHOTS = sorted((SAMPLE_CATALOG / "products").glob("*/*.jpg"))


def _photos(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"item{i}.jpg"
        Image.open(SHOTS[i * 11]).convert("RGB").save(p, quality=90)
        out.append(p)
    return out


def test_only_new_failures_exit_3(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _photos(folder)
    shutil.copyfile(SAMPLE_CATALOG / "broken" / "truncated.jpg", folder / "cut.jpg")
    store = ["--store", str(tmp_path / "s")]
    runner = CliRunner()
    first = runner.invoke(cli, [*store, "ingest", str(folder)])
    assert first.exit_code == EXIT_PARTIAL and "cut.jpg" in first.stderr
    assert "moved to another product" not in first.stderr  # a failed file carries no product to move
    second = runner.invoke(cli, [*store, "ingest", str(folder), "--format", "json"])
    assert second.exit_code == EXIT_OK, second.output
    summary = json.loads(second.stdout)
    assert summary["failed"] == 0 and summary["known_failed"] == 1
    assert [Path(f["path"]).name for f in summary["known_failures"]] == ["cut.jpg"]
    listed = runner.invoke(cli, [*store, "stats", "--failed"])
    assert listed.exit_code == EXIT_OK and "cut.jpg" in listed.output
    # The file changes (still broken): a new failure again.
    (folder / "cut.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    os.utime(folder / "cut.jpg", (1e9, 1e9))
    third = runner.invoke(cli, [*store, "ingest", str(folder)])
    assert third.exit_code == EXIT_PARTIAL and "cut.jpg" in third.stderr


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "product_id"])
        w.writerows(rows)


def test_changed_metadata_applies_to_unchanged_files(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = _photos(folder)
    meta = tmp_path / "products.csv"
    _write_csv(meta, [("item0.jpg", "P1"), ("item1.jpg", "P2"), ("item2.jpg", "P3")])
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, folder, metadata=meta)
        assert store.catalog.image_by_path(str(paths[1])).product_id == "P2"
        _write_csv(meta, [("item0.jpg", "P1"), ("item1.jpg", "P9"), ("item2.jpg", "P3")])
        summary = ingest_folder(store, folder, metadata=meta)
        assert summary.unchanged == 3 and summary.products_updated == 1
        assert store.catalog.image_by_path(str(paths[1])).product_id == "P9"
        assert summary.orphans == ["P2"]  # reported, not deleted
        assert store.catalog.product("P9") is not None
    out = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "ingest", str(folder), "--metadata", str(meta)])
    assert out.exit_code == EXIT_OK and "1 products have no images: P2" in out.stderr


def test_mark_clear_undoes_a_decision(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    img = Image.open(SHOTS[3]).convert("RGB")
    img.save(folder / "a.jpg", quality=92)
    img.save(folder / "a_copy.jpg", quality=60)
    store = ["--store", str(tmp_path / "s")]
    runner = CliRunner()
    assert runner.invoke(cli, [*store, "ingest", str(folder)]).exit_code == EXIT_OK
    a, b = str(folder / "a.jpg"), str(folder / "a_copy.jpg")
    assert runner.invoke(cli, [*store, "mark", "not-duplicate", a, b]).exit_code == EXIT_OK
    assert runner.invoke(cli, [*store, "report"]).exit_code == EXIT_OK  # kept apart: no cluster
    cleared = runner.invoke(cli, [*store, "mark", "clear", a, b])
    assert cleared.exit_code == EXIT_OK and "not duplicate" in cleared.output
    assert runner.invoke(cli, [*store, "report"]).exit_code == EXIT_DUPLICATES_FOUND
    again = runner.invoke(cli, [*store, "mark", "clear", a, b])
    assert again.exit_code == EXIT_INPUT and "no review decision" in again.stderr


def test_a_confirmed_pair_keeps_each_image_with_its_copies(tmp_path: Path) -> None:
    """Confirming mermaid ≈ whale must not pull mermaid away from mermaid's own copy."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, shot in (("mermaid", SHOTS[40]), ("whale", SHOTS[90])):
        img = Image.open(shot).convert("RGB")
        img.save(folder / f"{name}.jpg", quality=92)
        img.resize((img.width * 3 // 4, img.height * 3 // 4)).save(folder / f"{name}_small.jpg", quality=90)
    with open_store(tmp_path / "s") as store:
        ingest_folder(store, folder)
        before = {frozenset(Path(m.path).name for m in c.members) for c in build_report(store, save=False).clusters}
        assert before == {frozenset({"mermaid.jpg", "mermaid_small.jpg"}), frozenset({"whale.jpg", "whale_small.jpg"})}
        mark_pair(store, str(folder / "mermaid.jpg"), str(folder / "whale.jpg"), "duplicate")
        after = build_report(store, save=False)
        names = [{Path(m.path).name for m in c.members} for c in after.clusters]
        assert names == [{"mermaid.jpg", "mermaid_small.jpg", "whale.jpg", "whale_small.jpg"}], names
        clear_pair(store, str(folder / "mermaid.jpg"), str(folder / "whale.jpg"))
        back = {frozenset(Path(m.path).name for m in c.members) for c in build_report(store, save=False).clusters}
        assert back == before
