"""The recipes in examples/recipes: valid configs, found by `tf-distill losses NAME`."""

import glob
import os

import numpy as np
import pytest
import yaml

from tf_distill import catalog
from tf_distill.commands import config as config_lib
from tf_distill.losses import describe_loss
from tf_distill.losses import registry

RECIPES = sorted(glob.glob(os.path.join(catalog.RECIPES_DIR, "*.yaml")))
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


def test_the_recipe_writer_makes_valid_configs_of_every_method_row(tmp_path):
    """bench/quality_recipes.py, on made-up results of every row of the table."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))
    import quality_methods
    import quality_recipes

    scored = {"test_errors": [40, 42, 44], "mean": 42.0, "std": 2.0, "verdict": "better",
              "paired": {"n": 3, "mean": 3.0, "std": 1.0, "improved": 3}}
    rows = {method.key: {"label": method.label, "losses": method.losses,
                         "student_loss_weight": method.alpha, "warmup_epochs": 0,
                         "scheme": method.scheme,
                         "options": quality_methods.scheme_options(method),
                         "chosen_factor": 1.0, "best_weights": method.weights, "best": scored}
            for method in quality_methods.METHODS}
    settings = {"train_size": 4000, "validation_size": 5000, "test_size": None,
                "batch_size": 128, "epochs": 15, "learning_rate": 0.01,
                "teacher_epochs": 15, "teacher_learning_rate": 0.005}
    results = {"settings": {"methods": settings},
               "methods": {"alone": {"test": [43, 45, 47]}}, "recipes": rows}
    paths = quality_recipes.write_recipes(results, str(tmp_path))
    assert len(paths) == len(quality_recipes.RECIPE_ROWS)
    schemes = {}
    for path in paths:
        config = config_lib.validate(yaml.safe_load(open(path, encoding="utf-8").read()))
        schemes[os.path.basename(path)] = config["distillation"].get("scheme", "teacher")
    assert schemes["mutual.yaml"] == "mutual" and schemes["self_ema.yaml"] == "self"
    assert schemes["born_again.yaml"] == "born_again" and schemes["kd.yaml"] == "teacher"
    assert config_lib.load(str(tmp_path / "teacher_assistant.yaml"))["stages"][0]["name"] == (
        "assistant")
    # CRD's negatives are capped as the table capped them; the run fills `num_examples`.
    (crd,) = config_lib.load(str(tmp_path / "crd.yaml"))["distillation"]["losses"]
    assert crd["num_negatives"] == 1000 and "num_examples" not in crd


@pytest.mark.slow
def test_the_applications_recipe_fits_a_mobilenet_v2_teacher_to_mnist(tmp_path):
    """The recipe's teacher, made as its comment says, passes the run's checks."""
    from types import SimpleNamespace

    from tf_distill import saving
    from tf_distill.backend import keras
    from tf_distill.commands import common

    path = os.path.join(catalog.RECIPES_DIR, "applications", "mnist_from_mobilenet_v2.yaml")
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    assert raw["teacher"]["path"] == "mobilenet_v2_mnist32.keras"
    teacher = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, alpha=0.35,
                                             classes=10, classifier_activation=None)
    saving.save_model(teacher, tmp_path / "mobilenet_v2_mnist32.keras")
    raw["teacher"]["path"] = str(tmp_path / "mobilenet_v2_mnist32.keras")
    config = config_lib.validate(raw)
    loaded = saving.load_model(config["teacher"]["path"])  # safe: no --unsafe needed
    mnist = SimpleNamespace(input_shape=(28, 28, 1), num_classes=10)
    common.check_model_fits_data(loaded, "teacher", mnist, config["teacher"]["preprocessing"])
    with pytest.raises(config_lib.ConfigError, match=r"takes inputs of shape \(32, 32, 3\)"):
        common.check_model_fits_data(loaded, "teacher", mnist)
    assert common.distiller_arguments(config)["teacher_preprocessing"] is not None


def test_the_recipe_writer_gives_dkd_its_warm_up_as_a_schedule():
    """The table's DKD warm-up, min(epoch / 3, 1) from epoch 1, reaches the
    recipe as the equivalent `linear` schedule on the loss weight."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))
    import quality_recipes

    from tf_distill import schedules

    settings = {"train_size": 4000, "validation_size": 5000, "batch_size": 128, "epochs": 15,
                "learning_rate": 0.01, "teacher_epochs": 15, "teacher_learning_rate": 0.005}
    row = {"best_weights": [0.1], "warmup_epochs": 3, "student_loss_weight": 0.5,
           "losses": [{"name": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 4.0}]}
    config = config_lib.validate(quality_recipes.recipe_config("dkd", row, settings))
    (weight,) = config["distillation"]["loss_weights"]
    schedule = schedules.get(weight)
    values = [float(schedule.value(0, epoch)) for epoch in range(5)]
    np.testing.assert_allclose(values, [0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.1], rtol=1e-6)
    # The shipped recipe is the writer's.
    with open(os.path.join(catalog.RECIPES_DIR, "dkd.yaml"), encoding="utf-8") as handle:
        shipped = yaml.safe_load(handle)
    assert shipped["distillation"]["loss_weights"] == [weight]
