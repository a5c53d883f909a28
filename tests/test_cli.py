"""The command line end to end: exit codes, messages, JSON, and an ingest killed halfway."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dedup.cli import cli
from dedup.errors import EXIT_DUPLICATES_FOUND, EXIT_INPUT, EXIT_PARTIAL
from dedup.report.render import CSV_COLUMNS
from dedup.service import open_store

from .conftest import SAMPLE_QUERIES
from .test_ingest import _index_matches_catalog, _make_images


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory: pytest.TempPathFactory, sample_copy: Path) -> Path:
    store = tmp_path_factory.mktemp("cli") / "store"
    result = CliRunner().invoke(
        cli,
        ["--store", str(store), "ingest", str(sample_copy), "--metadata", str(sample_copy / "products.csv")],
    )
    assert result.exit_code == EXIT_PARTIAL, result.output  # the samples hold broken files on purpose
    return store


def test_ingest_reports_failures_and_summary(tmp_path: Path, sample_copy: Path) -> None:
    result = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "ingest", str(sample_copy / "broken")])
    assert result.exit_code == EXIT_PARTIAL
    for name in ("empty.jpg", "truncated.jpg", "bomb.png"):
        assert any(name in line and "failed:" in line for line in result.stderr.splitlines()), result.stderr
    assert "failed 6" in result.stdout or "failed" in result.stdout


def test_stats_lists_failed_files(cli_store: Path) -> None:
    result = CliRunner().invoke(cli, ["--store", str(cli_store), "stats", "--failed", "--format", "json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    names = {Path(f["path"]).name for f in payload["failed_files"]}
    assert {"empty.jpg", "not_an_image.jpg", "truncated.jpg"} <= names
    assert all(f["reason"] for f in payload["failed_files"])


def test_second_cli_ingest_embeds_nothing(cli_store: Path, sample_copy: Path) -> None:
    result = CliRunner().invoke(cli, ["--store", str(cli_store), "ingest", str(sample_copy), "--format", "json"])
    payload = json.loads(result.stdout)
    assert payload["new"] == 0 and payload["reused"] == 0 and payload["changed"] == 0
    assert payload["unchanged"] + payload["failed"] + payload["known_failed"] == payload["seen"]
    # The broken files are unchanged: listed as known failures, not new ones, so the run exits 0.
    assert payload["failed"] == 0 and payload["known_failed"] == 6
    assert result.exit_code == 0


def test_report_json_and_exit_code(cli_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["--store", str(cli_store), "report", "-o", str(out)])
    assert result.exit_code == EXIT_DUPLICATES_FOUND, result.output
    report = json.loads(out.read_text())
    assert report["clusters"], "the samples hold known duplicate groups"
    for cluster in report["clusters"]:
        assert cluster["members"][0]["path"] == cluster["keep"]["path"]
        assert all(m["distance"] <= report["threshold"] + 1e-6 for m in cluster["members"])
    # Byte-identical copies must be found, in the same cluster as their source.
    exact = [m for c in report["clusters"] for m in c["members"] if m["tier"] == "exact"]
    assert exact


def test_report_csv(cli_store: Path) -> None:
    result = CliRunner().invoke(cli, ["--store", str(cli_store), "report", "--format", "csv"])
    lines = result.stdout.strip().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert len(lines) > 2


def test_query_json_lines_in_input_order(cli_store: Path) -> None:
    queries = sorted(SAMPLE_QUERIES.iterdir())[:3]
    result = CliRunner().invoke(
        cli, ["--store", str(cli_store), "query", *map(str, queries), "-k", "3", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["query"] for r in rows] == [str(q) for q in queries]
    for r in rows:
        assert r["k"] == 3 and len(r["results"]) == 3
        assert [x["rank"] for x in r["results"]] == [1, 2, 3]
        d = [x["distance"] for x in r["results"]]
        assert d == sorted(d)


def test_compare_identical_and_different(sample_copy: Path) -> None:
    images = sorted((sample_copy / "products").rglob("*.jpg"))
    same = CliRunner().invoke(cli, ["compare", str(images[0]), str(images[0]), "--format", "json"])
    payload = json.loads(same.stdout)
    assert payload["duplicate"] is True and payload["similarity"] > 0.999
    diff = CliRunner().invoke(cli, ["compare", str(images[0]), str(images[-1]), "--format", "json"])
    assert json.loads(diff.stdout)["distance"] > payload["distance"]


def test_missing_input_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--store", str(tmp_path), "query", str(tmp_path / "nope.jpg")])
    assert result.exit_code == 2


def test_bad_metadata_csv(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _make_images(folder, 1)
    bad = tmp_path / "m.csv"
    bad.write_text("name,sku\nx,1\n")
    result = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "ingest", str(folder), "--metadata", str(bad)])
    assert result.exit_code == EXIT_INPUT
    assert "product_id" in result.stderr


def _count_rows(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return int(con.execute("select count(*) from images").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_ingest_is_completed_by_the_next_run(tmp_path: Path, sig: signal.Signals) -> None:
    folder = tmp_path / "photos"
    n = 2000  # enough batches (8) that the signal lands mid-run even with two batches decoding ahead
    _make_images(folder, n, size=120)
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "dedup", "--store", str(store), "ingest", str(folder)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # A shell starts background jobs with SIGINT ignored, and a child inherits that: give it the default back so
    # the suite tests Ctrl-C however it was launched.
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    # Wait until at least one batch is committed, then stop it before it can finish.
    while _count_rows(store / "catalog.sqlite") == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, "the ingest finished before it could be interrupted"
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err.decode()
    done = _count_rows(store / "catalog.sqlite")
    assert 0 < done < n

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    with open_store(store) as s:
        known = s.catalog.known_files()
        assert len(known) == n  # every file once, no duplicate rows
        assert s.catalog.stats()["images"]["ok"] == n  # type: ignore[index]
        _index_matches_catalog(s)


def test_evaluate_against_the_sample_truth(cli_store: Path, sample_copy: Path, tmp_path: Path) -> None:
    svg = tmp_path / "sweep.svg"
    result = CliRunner().invoke(
        cli,
        [
            "--store",
            str(cli_store),
            "evaluate",
            str(sample_copy / "truth.csv"),
            "--sweep",
            str(svg),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # read back as a user's script would: the same keys as before typing
    listed = payload["images"]["listed"]
    pairs = payload["pairs"]
    assert pairs["positives"] + pairs["negatives"] == listed * (listed - 1) // 2
    assert 0 < pairs["f1"] <= 1 and payload["threshold_source"] == "model card"
    assert set(payload["best_f1"]) == {"f1", "precision", "recall", "threshold"}
    assert set(payload["at_precision"]) == {"target", "threshold", "precision", "recall"}
    keeper = payload["clusters"]["keeper"]
    assert keeper["original_kept"] <= keeper["clusters_with_original"] and keeper["policy"][0] == "quality"
    assert payload["sweep"] == str(svg.resolve()) and payload["queries"] is None
    assert svg.read_text().lstrip().startswith("<")


def test_train_on_labelled_pairs_with_a_validation_folder(tmp_path: Path) -> None:
    from .test_training import _product

    data, val = tmp_path / "data", tmp_path / "val"
    data.mkdir()
    val.mkdir()
    rows = ["path_a,path_b,label"]
    for i in range(0, 12, 2):
        _product(i).save(data / f"a{i}.png")
        _product(i).rotate(3, fillcolor="white").save(data / f"b{i}.png")
        rows.append(f"a{i}.png,b{i}.png,1")
        if i:
            rows.append(f"a{i}.png,a{i - 2}.png,0")
    (data / "pairs.csv").write_text("\n".join(rows) + "\n")
    for i in range(30, 34):
        _product(i).save(val / f"v{i}.png")
    out = tmp_path / "model"
    args = ["train", str(data / "pairs.csv"), "--out", str(out), "--val", str(val), "--steps", "2"]
    args += ["--input-size", "48", "--dim", "64", "--batch-size", "8", "--views", "3", "--no-mirror-pass"]
    args += ["--trim-background", "--phone-share", "0.5", "--stages", "24x1,48x1,96x1", "--collages", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model_card.json").read_text())
    assert card["architecture"]["stages"] == [[24, 2, 1], [48, 2, 1], [96, 2, 1]]
    assert card["data"]["validation_dir"] == str(val) and card["data"]["val_identities"] == 4
    assert card["preprocess"] == {"trim_background": True} and card["data"]["phone_share"] == 0.5
    assert card["data"]["source_identities"] == 6  # six pairs of duplicates → six products
    # The card records every option that ran, flags and defaults alike.
    ran = card["training"]["options"]
    assert ran["batch_size"] == 8 and ran["collages"] == 0 and ran["hard_negatives"] == 2 and ran["val_dir"] == str(val)
    bad = CliRunner().invoke(cli, ["train", str(data), "--out", str(out), "--val", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "--val" in bad.output
    bad = CliRunner().invoke(cli, ["train", str(data), "--out", str(out), "--stages", "24,48"])
    assert bad.exit_code == 2 and "WIDTHxBLOCKS" in bad.output
