"""A plain ``pip install dedup`` (no [train], no [serve]): the runtime jobs work without TensorFlow.

Each command runs in a fresh interpreter whose importer refuses TensorFlow and Keras (and, for
``serve``, FastAPI), as they are absent from a lean install: ingest, report, query, compare and
evaluate must not need them, and the commands that do must say in one line which extra to install.
CI also installs the package without extras in a second virtual environment and runs the samples
(``scripts/lean_check.sh``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dedup.errors import EXIT_DUPLICATES_FOUND, EXIT_OK, EXIT_USAGE

from .conftest import ROOT, SAMPLE_CATALOG, SAMPLE_QUERIES

_RUN = """
import importlib.abc, sys
BLOCKED = set(sys.argv.pop(1).split(","))
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Absent())
from dedup.cli import main
sys.argv[0] = "dedup"
main()
"""


def _dedup(blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _RUN, blocked, *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_runtime_jobs_without_tensorflow(tmp_path: Path) -> None:
    store = ["--store", str(tmp_path / "s")]
    no_tf = "tensorflow,keras"
    ingest = _dedup(no_tf, *store, "ingest", str(SAMPLE_CATALOG / "products"))
    assert ingest.returncode == EXIT_OK, ingest.stderr
    report = _dedup(no_tf, *store, "report", "--format", "csv")
    assert report.returncode in (EXIT_OK, EXIT_DUPLICATES_FOUND), report.stderr
    query = _dedup(no_tf, *store, "query", str(SAMPLE_QUERIES / "farm__phone.jpg"), "--format", "json")
    assert query.returncode == EXIT_OK, query.stderr
    assert json.loads(query.stdout)["results"]
    images = sorted((SAMPLE_CATALOG / "products").glob("*/*.jpg"))[:2]
    compare = _dedup(no_tf, "compare", str(images[0]), str(images[1]))
    assert compare.returncode == EXIT_OK, compare.stderr
    evaluate = _dedup(no_tf, *store, "evaluate", str(SAMPLE_CATALOG / "truth.csv"), "--format", "json")
    assert evaluate.returncode == EXIT_OK, evaluate.stderr
    for out in (ingest, report, query, compare, evaluate):
        assert "XNNPACK" not in out.stderr  # native log lines go through logging, quiet by default


@pytest.mark.parametrize(
    ("blocked", "args", "extra"),
    [
        ("tensorflow,keras", ["train", "DATA", "--out", "OUT"], "train"),
        ("fastapi,uvicorn", ["serve", "--create"], "serve"),
    ],
)
def test_commands_of_an_extra_say_how_to_install_it(blocked: str, args: list[str], extra: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    args = [str(data) if a == "DATA" else str(tmp_path / "m") if a == "OUT" else a for a in args]
    out = _dedup(blocked, "--store", str(tmp_path / "s"), *args)
    assert out.returncode == EXIT_USAGE, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'dedup[{extra}]'" in lines[0], out.stderr
