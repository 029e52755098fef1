"""The training-recipe registry: every method ``python -m pipeline train NAME`` can train, in one place.

``RECIPES`` maps the command's NAME (also the Makefile's ``train-NAME`` target, the checkpoint's ``kind``)
to its :class:`pipeline.training.recipe.Recipe` class. A new method adds a module beside
``faceshifter.py`` and one line here (and a ``train-NAME`` Makefile target; a test checks they agree).
"""

from __future__ import annotations

from models.errors import ConfigError
from pipeline.training.recipe import Recipe
from pipeline.training.recipes.faceshifter import AEIRecipe, HEARRecipe
from pipeline.training.recipes.latent import LatentRecipe
from pipeline.training.recipes.rsgan import RSGANRecipe
from pipeline.training.recipes.wsc import WSCRecipe

RECIPES: dict[str, type[Recipe]] = {
    r.name: r for r in (AEIRecipe, HEARRecipe, WSCRecipe, LatentRecipe, RSGANRecipe)
}


def recipe(name: str) -> type[Recipe]:
    """The recipe class registered as ``name``; ConfigError naming the known ones otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"train kind must be one of {', '.join(RECIPES)}, got {name!r}") from None
