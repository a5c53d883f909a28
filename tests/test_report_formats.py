"""Every report format read back as a user's tool reads it, and the report command's errors.

JSON back into :class:`~dedup.types.Report`; the CSV with ``csv.DictReader`` (every column checked
against the JSON, not only ``keep``); the remove list line by line; the HTML page with ``html.parser``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from dedup.cli import cli
from dedup.errors import EXIT_DUPLICATES_FOUND, EXIT_INPUT, EXIT_OK, EXIT_STORE
from dedup.report.render import CSV_COLUMNS
from dedup.service import open_store
from dedup.types import Report

from .conftest import SAMPLE_CATALOG

SHOTS = sorted((SAMPLE_CATALOG / "products").glob("*/*.jpg"))


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store over a folder with three duplicate groups (in sub-folders), and the folder."""
    d = tmp_path_factory.mktemp("photos")
    for i, n in ((0, 3), (7, 2), (14, 2)):
        img = Image.open(SHOTS[i]).convert("RGB")
        (d / f"group{i}").mkdir()
        img.save(d / f"group{i}" / "original.jpg", quality=92)
        img.resize((img.width // 2, img.height // 2)).save(d / f"group{i}" / "small.jpg", quality=90)
        if n == 3:
            img.save(d / f"group{i}" / "copy.png")
    Image.open(SHOTS[30]).convert("RGB").save(d / "single.jpg")
    store = tmp_path_factory.mktemp("store")
    result = CliRunner().invoke(cli, ["--store", str(store), "ingest", str(d)])
    assert result.exit_code == EXIT_OK, result.output
    return store, d


def _report(store: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--store", str(store), "report", "--no-save", *args])
    assert result.exit_code == EXIT_DUPLICATES_FOUND, result.output
    return result.stdout


def test_json_reads_back_into_the_typed_report(reported: tuple[Path, Path]) -> None:
    data = json.loads(_report(reported[0], "--format", "json"))
    assert data["schema_version"] == 2
    report = Report.from_dict(data)
    assert report.as_dict() == data
    assert len(report.clusters) == 3
    for c in report.clusters:
        assert c.keep == c.members[0] and c.keep.tier == "keeper" and c.keep_rule and c.reason
    with pytest.raises(ValueError, match="schema_version"):
        Report.from_dict({**data, "schema_version": 1})


def test_csv_columns_line_up_with_the_json(reported: tuple[Path, Path]) -> None:
    data = json.loads(_report(reported[0], "--format", "json"))
    text = _report(reported[0], "--format", "csv")
    assert all(len(row) == len(CSV_COLUMNS) for row in csv.reader(io.StringIO(text)))
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    rows = {r["path"]: r for r in reader}
    members = {m["path"]: (c, m) for c in data["clusters"] for m in c["members"]}
    assert set(rows) == set(members)
    for path, (c, m) in members.items():
        r = rows[path]
        is_keeper = m["path"] == c["keep"]["path"]
        assert r["cluster_id"] == c["id"] and r["tier"] == m["tier"]
        assert (int(r["keep"]), int(r["remove"])) == (int(is_keeper), int(not is_keeper))
        assert (int(r["width"]), int(r["height"]), int(r["bytes"])) == (m["width"], m["height"], m["bytes"])
        assert r["sha256"] == m["sha256"] and r["format"] == m["format"]
        assert float(r["distance"]) == pytest.approx(m["distance"], abs=1e-6)
        assert r["confirmed"] == str(int(m["confirmed"])) and r["change"] == c["change"]
        assert r["keep_rule"] == c["keep_rule"]


def test_remove_list_is_every_non_keeper(reported: tuple[Path, Path]) -> None:
    data = json.loads(_report(reported[0], "--format", "json"))
    lines = _report(reported[0], "--format", "remove-list").splitlines()
    expected = [m["path"] for c in data["clusters"] for m in c["members"][1:]]
    assert lines == expected
    keepers = {c["keep"]["path"] for c in data["clusters"]}
    assert not keepers & set(lines) and all(os.path.isfile(p) for p in lines)


class _Page(HTMLParser):
    """The parts of the HTML report a reader sees: member paths (text and hover title), the header."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[tuple[str, str]] = []  # (shown text, title)
        self.nowrap: list[str] = []
        self.header = ""
        self._in: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if self._in:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if not self._in:
            return
        tag, attrs = self._in[-1]
        cls = attrs.get("class") or ""
        if cls == "path":
            self.paths.append((data, attrs.get("title") or ""))
        elif cls == "n":
            self.nowrap.append(data)
        if any(a.get("class") == "meta" for _, a in self._in):
            self.header += data


def test_html_shows_relative_paths_and_the_first_run(reported: tuple[Path, Path], tmp_path: Path) -> None:
    store, folder = reported
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["--store", str(store), "report", "--format", "html", "-o", str(out), "--no-save"])
    assert result.exit_code == EXIT_DUPLICATES_FOUND, result.output
    page = _Page()
    page.feed(out.read_text())
    assert page.paths and "first run" in page.header and "since run -" not in page.header
    for shown, title in page.paths:
        assert Path(title).is_absolute() and title.endswith(shown) and not Path(shown).is_absolute()
        assert shown.startswith("group")  # below the common folder of every member
    assert any(t.endswith(" B") and "," in t or t.endswith(" B") for t in page.nowrap)
    assert ".n{white-space:nowrap}" in out.read_text()


def test_failed_write_saves_no_history(reported: tuple[Path, Path], tmp_path: Path) -> None:
    store = reported[0]
    missing = tmp_path / "no" / "such" / "dir" / "r.html"
    result = CliRunner().invoke(cli, ["--store", str(store), "report", "--format", "html", "-o", str(missing)])
    assert result.exit_code == EXIT_INPUT
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr and "Traceback" not in result.output
    with open_store(store) as s:
        assert s.catalog.previous_report_run() is None
    assert not (store / "reports" / "latest.json").exists()
    # Once written, the run is saved, and the next report counts its changes since it.
    ok = tmp_path / "r.json"
    assert CliRunner().invoke(cli, ["--store", str(store), "report", "-o", str(ok)]).exit_code == EXIT_DUPLICATES_FOUND
    first = json.loads(ok.read_text())
    with open_store(store) as s:
        assert s.catalog.previous_report_run() == first["run_id"] is not None
    second = json.loads(CliRunner().invoke(cli, ["--store", str(store), "report"]).stdout)
    assert second["previous_run_id"] == first["run_id"]
    assert all(c["change"] == "unchanged" for c in second["clusters"])
    # A write that fails after the run was saved takes the run back out of the history.
    too_long = tmp_path / ("r" * 300 + ".json")  # the folder exists, the file name cannot be made
    failed = CliRunner().invoke(cli, ["--store", str(store), "report", "-o", str(too_long)])
    assert failed.exit_code == EXIT_INPUT, failed.output
    with open_store(store) as s:
        assert s.catalog.previous_report_run() == second["run_id"]
    assert json.loads((store / "reports" / "latest.json").read_text())["run_id"] == second["run_id"]


@pytest.mark.parametrize(
    "args",
    [["report"], ["stats"], ["query", "IMG"], ["mark", "duplicate", "1", "2"], ["mark", "clear", "1", "2"]],
)
def test_commands_refuse_a_missing_store(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEDUP_STORE", raising=False)
    args = [str(SHOTS[0]) if a == "IMG" else a for a in args]
    result = CliRunner().invoke(cli, ["--store", "typo-store", *args])
    assert result.exit_code == EXIT_STORE, result.output
    assert "typo-store" in result.stderr and "dedup ingest" in result.stderr
    assert not (tmp_path / "typo-store").exists()
    default = CliRunner().invoke(cli, args)
    assert default.exit_code == EXIT_STORE and not (tmp_path / "dedup-store").exists()


def test_an_empty_store_is_refused_too(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "ingest", str(empty)]).exit_code == EXIT_OK
    for args in (["report"], ["stats"], ["query", str(SHOTS[0])]):
        result = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), *args])
        assert result.exit_code == EXIT_STORE and "holds no images" in result.stderr, (args, result.output)
