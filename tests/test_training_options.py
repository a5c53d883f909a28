"""The training jobs' options: one definition of every default, checked values, a card that says what ran."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
import pytest

from dedup.cli import cli
from dedup.errors import ConfigError
from dedup.training.options import DistillOptions, QueryTowerOptions, TrainOptions, resolve


def _cli_defaults(command: str) -> dict[str, object]:
    cmd = cli.commands[command]
    assert isinstance(cmd, click.Command)
    return {p.name: p.default for p in cmd.params if isinstance(p, click.Option) and p.name}


@pytest.mark.parametrize(
    ("command", "kind"), [("train", TrainOptions), ("train-query", QueryTowerOptions), ("distill", DistillOptions)]
)
def test_cli_defaults_are_the_options_defaults(command: str, kind: type) -> None:
    defaults = kind()
    fields = {f.name for f in dataclasses.fields(kind)}
    checked = 0
    for name, value in _cli_defaults(command).items():
        if name not in fields:
            continue
        expected = getattr(defaults, name)
        if name == "dim":
            expected = str(expected)
        if name == "stages" and command == "distill":
            expected = ",".join(f"{w}x{n}" for w, _, n in expected)
        assert value == expected, f"dedup {command} --{name.replace('_', '-')} default {value!r} != {expected!r}"
        checked += 1
    assert checked >= 8  # the comparison ran over the real option list, not an empty one


def test_train_defaults_are_the_shipped_recipe() -> None:
    card = json.loads((Path(__file__).parents[1] / "dedup/models/default/model_card.json").read_text())
    o = TrainOptions()
    training, arch = card["training"], card["architecture"]
    assert (o.batch_size, o.minutes, o.collages, o.hard_negatives) == (
        training["batch_size"],
        training["minutes_budget"],
        card["data"]["collage_groups"],
        training["hard_negative_refresh_epochs"],
    )
    assert o.frozen_blocks == arch["frozen_blocks"] and o.dim == card["dim"] and not o.mirror_pass
    assert o.views == card["data"]["views_per_identity"] and o.phone_share == card["data"]["phone_share"]


def test_options_reject_bad_values_and_unknown_names() -> None:
    with pytest.raises(ConfigError, match="even"):
        TrainOptions(batch_size=9)
    with pytest.raises(ConfigError, match="val_fraction"):
        TrainOptions(val_fraction=0.6)
    with pytest.raises(ConfigError, match="margin"):
        TrainOptions(margin_start=0.2)  # InfoNCE has no margin
    with pytest.raises(ConfigError, match="views"):
        QueryTowerOptions(views=1)
    with pytest.raises(ConfigError, match="val_fraction"):
        QueryTowerOptions(val_fraction=0.0)  # validation picks the query tower's weights
    with pytest.raises(ConfigError, match="no option stepz"):
        TrainOptions().replace(stepz=3)
    with pytest.raises(ConfigError, match="expected DistillOptions"):
        resolve(DistillOptions, TrainOptions(), {})


def test_overrides_apply_to_a_copy_and_as_dict_is_json() -> None:
    base = TrainOptions(steps=10)
    tuned = resolve(TrainOptions, base, {"views": 4, "val_dir": Path("/tmp/v"), "stages": ((16, 2, 1),)})
    assert base.views == 16 and tuned.views == 4 and tuned.steps == 10
    back = json.loads(json.dumps(tuned.as_dict()))
    assert back["val_dir"] == "/tmp/v" and back["stages"] == [[16, 2, 1]] and back["learning_rate"] is None
    assert set(back) == {f.name for f in dataclasses.fields(TrainOptions)}
