"""The training-recipe registry (pipeline/training/recipes): one list of methods that the train command's
choices, the Makefile's train-% targets and the registry weight files all agree with."""

from __future__ import annotations

import re

import pytest

from models.errors import ConfigError
from models.weights import REGISTRY
from pipeline.training.data import BATCH_RANGE
from pipeline.training.recipe import Recipe
from pipeline.training.recipes import RECIPES, recipe
from pipeline.training.train import main
from tests.conftest import REPO


def test_registry_cli_choices_and_makefile_targets_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert RECIPES and all(name == cls.name for name, cls in RECIPES.items())
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    usage = capsys.readouterr().out
    choices = re.search(r"\{([\w,-]+)\}", usage)
    assert choices is not None and choices.group(1).split(",") == list(RECIPES)

    makefile = (REPO / "Makefile").read_text()
    rule = re.search(r"^([\w -]+): train-%:", makefile, re.MULTILINE)
    assert rule is not None, "the Makefile's train-% rule"
    targets = rule.group(1).split()
    assert targets == [f"train-{name}" for name in RECIPES]
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)\n", makefile, re.MULTILINE | re.DOTALL)
    assert phony is not None and set(targets) <= set(phony.group(1).replace("\\", " ").split())


def test_every_recipe_names_its_exports_and_a_summary() -> None:
    for name, cls in RECIPES.items():
        assert issubclass(cls, Recipe) and recipe(name) is cls and cls.summary
        assert cls.exports and all(entry in REGISTRY for entry in cls.exports.values()), name
        assert cls.total_loss in cls.progress_terms, name
        # an exported network is fed in the batches' range: the range its registry entry states
        assert all(REGISTRY[entry].normalisation == BATCH_RANGE for entry in cls.exports.values()), name
    with pytest.raises(ConfigError, match="must be one of"):
        recipe("no-such-method")
