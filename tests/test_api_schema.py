"""The HTTP API against its own OpenAPI document: a bounded Schemathesis run on the real server.

Schemathesis generates requests from ``/openapi.json`` (valid and invalid ones, every documented operation,
in its coverage, fuzzing and stateful phases) and checks each answer: no 5xx, every status and content type
documented, every body matching its schema, 405s listing the right methods, invalid input refused. The run
is bounded (100 examples an operation, a fixed seed) so it takes well under a minute and repeats exactly;
``schemathesis.toml`` at the repository root holds the one setting it needs (uploads that are not images
answer 422).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dedup.service import ingest_folder, open_store

from .conftest import ROOT, SAMPLE_CATALOG
from .servers import running_server

ST = shutil.which("st", path=str(Path(sys.executable).parent))  # the one installed beside this Python
KEY = "schema-test-key"

pytestmark = pytest.mark.skipif(ST is None, reason="schemathesis is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("schema")
    shutil.copytree(SAMPLE_CATALOG / "products" / "animals", base / "catalog")
    with open_store(base / "store") as store:
        ingest_folder(store, base / "catalog")
    with running_server(base / "store", base / "server.log", f"api_key={KEY!r}") as url:
        yield url


@pytest.mark.parametrize("with_key", [True, False], ids=["with the API key", "without it"])
def test_every_answer_conforms_to_the_openapi_document(server: str, with_key: bool) -> None:
    args = [str(ST), "run", f"{server}/openapi.json", "--checks", "all", "--max-examples", "100", "--seed", "20261207"]
    if with_key:
        args += ["-H", f"X-API-Key: {KEY}"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=400)
    tail = done.stdout[-6000:]
    assert done.returncode == 0, tail
    assert " passed" in tail and "failures" not in tail.split("SUMMARY")[-1].lower(), tail
