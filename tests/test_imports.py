"""The import rules of DESIGN.md, checked on the source, and the lightness of the command line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "dedup"
LEAF = {"config", "errors", "types", "fsutil"}  # import nothing of ours; everyone may import them

# unit -> units of ours it may import (besides LEAF and itself)
ALLOWED: dict[str, set[str]] = {
    "cli": {"service", "api"},  # `dedup serve` starts the HTTP app
    "api": {"service"},
    "service": {"catalog", "index", "embedding", "training", "imaging", "matching", "report", "workers"},
    "report": set(),
    "matching": set(),
    "index": set(),
    "catalog": set(),
    "embedding": {"imaging"},
    "training": {"embedding", "imaging", "matching", "report", "workers"},
    "imaging": set(),
    "workers": set(),
    "config": set(),
    "fsutil": set(),
    "errors": set(),
    "types": set(),
    "__init__": set(),
    "__main__": {"cli"},
}
# single light modules a unit may import although it may not import their unit: the command line declares
# the training commands' option defaults from their one definition (no TensorFlow, no numpy behind it)
ALLOWED_MODULES: dict[str, set[str]] = {"cli": {"dedup.training.options"}}
# third-party module -> the only units allowed to import it
THIRD_PARTY_OWNERS = {
    "tensorflow": {"embedding", "training"},
    "keras": {"embedding", "training"},
    "ai_edge_litert": {"embedding"},
    "faiss": {"index"},
    "sqlalchemy": {"catalog"},
    "alembic": {"catalog"},
    "fastapi": {"api"},
    "uvicorn": {"api", "cli"},
    "ray": {"service"},  # dedup.service.ray_engine, imported only for --engine ray
}


def _unit(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _sources() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PKG)))
def test_module_imports_follow_the_design(path: Path) -> None:
    unit = _unit(path)
    assert unit in ALLOWED, f"{unit} is a new top-level unit: add it to DESIGN.md and to ALLOWED here"
    for name in _imports(path):
        top = name.split(".")[0]
        if top == "dedup":
            parts = name.split(".")
            if len(parts) == 1:
                continue  # `import dedup` (the version)
            target = parts[1]
            allowed = target == unit or target in LEAF or target in ALLOWED[unit]
            assert allowed or name in ALLOWED_MODULES.get(unit, set()), (
                f"{path.relative_to(PKG)} imports dedup.{target}, which {unit} may not import"
            )
        elif top in THIRD_PARTY_OWNERS:
            assert unit in THIRD_PARTY_OWNERS[top], (
                f"{path.relative_to(PKG)} imports {top}; only {sorted(THIRD_PARTY_OWNERS[top])} may"
            )


def test_matching_and_report_never_import_the_model() -> None:
    for unit in ("matching", "report"):
        for path in (PKG / unit).rglob("*.py"):
            tops = {n.split(".")[0] for n in _imports(path)}
            assert not tops & {"tensorflow", "keras", "ai_edge_litert", "faiss", "sqlalchemy"}, path


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def _loaded_after(code: str) -> set[str]:
    """The top-level packages loaded after running ``code``."""
    return {name.split(".")[0] for name in _modules_after(code)}


def test_cli_import_is_light() -> None:
    loaded = _loaded_after("import dedup.cli")
    heavy = loaded & {
        "tensorflow",
        "keras",
        "faiss",
        "sqlalchemy",
        "alembic",
        "ai_edge_litert",
        "numpy",
        "PIL",
    }
    assert not heavy, f"importing dedup.cli pulled in {sorted(heavy)}"


def test_help_does_not_load_heavy_modules() -> None:
    loaded = _loaded_after(
        "import sys\nfrom dedup.cli import cli\n"
        "try:\n    cli(['--help'], prog_name='dedup')\nexcept SystemExit:\n    pass"
    )
    assert not loaded & {"tensorflow", "keras", "faiss", "sqlalchemy"}


def test_dedup_help_runs_as_a_command() -> None:
    result = subprocess.run([sys.executable, "-m", "dedup", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "ingest" in result.stdout and "report" in result.stdout and "query" in result.stdout


def test_a_job_imports_only_what_it_needs() -> None:
    # Ingest starts its decoding workers after its imports: the other jobs' modules would only delay them.
    loaded = _modules_after("from dedup.service import ingest_folder")
    others = {
        "dedup.service.evaluation",
        "dedup.service.search",
        "dedup.service.reporting",
        "dedup.service.upload",
        "dedup.report",
    }
    assert not loaded & others, sorted(loaded & others)


def test_every_public_service_name_resolves() -> None:
    import dedup.service as service

    for name in service.__all__:
        assert getattr(service, name) is not None, name
    assert set(service.__all__) <= set(dir(service))
    assert set(service.__all__) == {"Store", "open_store", *service._LAZY}  # the lazy table lists every job name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        service.nothing_here  # noqa: B018
