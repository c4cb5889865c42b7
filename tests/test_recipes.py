"""The recipes in examples/recipes: valid configs, found by `tf-distill losses NAME`."""

import glob
import os

import pytest
import yaml

from tf_distill.commands import config as config_lib
from tf_distill.losses import describe_loss
from tf_distill.losses import registry

RECIPES = sorted(glob.glob(os.path.join(registry.RECIPES_DIR, "*.yaml")))
# The method table (bench/bench_quality.py, Quality 4) measured these.
MEASURED = ["kd", "dkd", "dist", "fitnets", "attention_transfer", "rkd_distance",
            "rkd_angle", "similarity_preserving", "pkt"]


def test_every_measured_method_has_a_recipe():
    names = {os.path.splitext(os.path.basename(path))[0] for path in RECIPES}
    assert set(MEASURED) <= names


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_a_recipe_is_a_valid_run_config_with_its_evidence(path):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    config = config_lib.validate(yaml.safe_load(text))
    assert len(config["training"]["seeds"]) >= 3
    # The measured result is in the comment: the student alone and the recipe.
    assert "#   student alone" in text and "#   this recipe" in text
    name = os.path.splitext(os.path.basename(path))[0]
    if name in registry.names():
        described = describe_loss(name)
        assert os.path.samefile(described["recipe"], path)
        assert described["recipe_text"] == text
        assert name in [loss["name"] for loss in config["distillation"]["losses"]]
