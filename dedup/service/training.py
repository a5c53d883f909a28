"""The train job: a thin entry to :func:`dedup.training.trainer.train_model` for the CLI and scripts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dedup.config import model_dir_of


def train(
    data_dir: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    from_model: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a model folder; ``from_model`` ``"default"`` fine-tunes the shipped model. Returns the card."""
    from dedup.training.trainer import train_model

    start = model_dir_of(from_model) if from_model else None
    return train_model(Path(data_dir) if data_dir else None, Path(out_dir), from_model=start, **options)


def train_query(
    model_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, **options: Any
) -> dict[str, Any]:
    """Train the query tower of a model folder and write it into that folder; returns the card."""
    from dedup.training.query_tower import train_query_tower

    return train_query_tower(Path(model_dir), Path(data_dir) if data_dir else None, **options)


def parse_stages(text: str) -> tuple[tuple[int, int, int], ...]:
    """A student's stages from ``"48x1,96x1,192x1,320x1"`` (ConfigError when malformed)."""
    from dedup.training.distill import parse_stages as parse

    return parse(text)


def distill(
    teacher: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Distil the catalog tower of ``teacher`` (a model folder, or ``"default"``) into ``out_dir``; returns its card."""
    from dedup.training.distill import distil_tower

    source = model_dir_of(teacher)
    return distil_tower(source, Path(out_dir), Path(data_dir) if data_dir else None, **options)
