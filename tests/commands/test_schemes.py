"""`tf-distill run` for the methods beyond one teacher → student: CRD (a
memory bank indexed by example), deep mutual learning, EMA
self-distillation and born-again generations, from a config."""

import json

import numpy as np
import pytest
import yaml

from tf_distill import cli
from tf_distill.commands import config as config_lib
from tf_distill.commands import run as job
from tf_distill.commands.config import ConfigError
from tf_distill.data import load
from tf_distill.losses import describe_loss

pytestmark = pytest.mark.slow  # runs end to end

TINY = {
    "data": {"source": "digits", "batch_size": 32, "train_size": 300,
             "validation_size": 100, "test_size": 100},
    "teacher": {"architecture": "mlp", "size": "medium", "epochs": 3, "learning_rate": 0.02},
    "student": {"architecture": "mlp", "size": "small"},
    "training": {"epochs": 2, "learning_rate": 0.02, "seed": 0, "jit_compile": False},
}
QUIET = {"verbose": 0, "log": lambda *args: None}


def test_a_split_carries_each_examples_index_through_shuffling():
    data = load("digits", train_size=50, validation_size=10, test_size=10)
    (x, y), = data.as_tf_dataset("train", 50, seed=3, example_indices=True).take(1)
    indices = x["example_indices"].numpy()
    assert sorted(indices) == list(range(50)) and list(indices) != list(range(50))
    np.testing.assert_array_equal(x["inputs"].numpy(), data.x_train[indices])
    np.testing.assert_array_equal(y.numpy(), data.y_train[indices])


def _crd_config(tmp_path, **crd):
    snippet = describe_loss("crd")["example"]  # what `tf-distill losses crd` prints
    return {**TINY, "output": str(tmp_path / "out"),
            "distillation": {"losses": ["kd", {**snippet, **crd}], "loss_weights": [1.0, 0.8]}}


def test_the_printed_crd_snippet_runs_from_a_config(tmp_path, capsys):
    # Cached teacher outputs (the default) carry the indices too; without
    # the cache the pipeline adds them (the CRD loss refuses a training
    # batch without them).
    raw = _crd_config(tmp_path, num_negatives=32, feature_dim=16)
    raw["training"] = {**TINY["training"], "baseline": False}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(path), "--quiet"]) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "metrics.json").read_text())
    rows = {row["model"]: row for row in results["models"]}
    assert set(rows) == {"teacher", "distilled student"}
    assert rows["teacher"]["test_accuracy"] > 0.5
    history = results["histories"]["distilled student"]
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert history["loss"][1] < history["loss"][0]
    # The config as written (without the filled-in `num_examples`) is saved.
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert "num_examples" not in saved["distillation"]["losses"][1]


def test_crd_too_many_negatives_for_the_training_split_is_one_line_before_any_work(
        tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_crd_config(tmp_path)))  # K = 4096 > 300 examples
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "`distillation.losses[1]` does not fit the 300 training examples" in err
    assert "num_negatives=4096, num_examples=300" in err
    assert not (tmp_path / "out" / "teacher.keras").exists()


def test_tune_refuses_crd_and_schemes(tmp_path):
    from tf_distill.commands import tune as tune_command

    for raw, match in (
        (_crd_config(tmp_path, num_negatives=32), "memory bank indexed by example"),
        ({"distillation": {"scheme": "self"}}, "scheme: self` runs with `tf-distill run"),
    ):
        config = config_lib.validate({**raw, "output": str(tmp_path / "t"), "tuning": {}})
        with pytest.raises(ConfigError, match=match):
            tune_command.run_from_config(config, tmp_path / "t", verbose=0)


@pytest.mark.parametrize("distillation, seeds", [
    ({"scheme": "mutual", "peers": 1, "losses": [{"name": "kd", "temperature": 1.0}]}, [0, 1]),
    ({"scheme": "self", "decay": 0.9, "adaptive_decay": True}, [0]),
])
def test_a_scheme_without_teacher_is_compared_with_the_student_alone_per_seed(
        tmp_path, distillation, seeds):
    raw = {k: v for k, v in TINY.items() if k != "teacher"}
    raw["training"] = {**TINY["training"], "seeds": seeds}
    config = config_lib.validate({**raw, "distillation": distillation,
                                  "output": str(tmp_path)})
    assert config["distillation"]["scheme"] == distillation["scheme"]
    results = job.run(config, **QUIET)
    assert [(row["model"], row["seed"]) for row in results["models"]] == [
        (model, seed) for seed in seeds for model in ("student alone", "distilled student")]
    assert not (tmp_path / "teacher.keras").exists()
    assert results["comparison"]["seeds"] == seeds
    history = results["histories"]["distilled student (seed 0)"]
    assert len(history["val_accuracy"]) == 2
    distilled = [row for row in results["models"] if row["model"] == "distilled student"]
    assert all(row["test_accuracy"] > 0.2 for row in distilled)
    # The saved student is the distilled one alone (no peer, no EMA copy).
    from tf_distill import saving

    student = saving.load_model(tmp_path / "student_seed0.keras")
    assert student.count_params() == distilled[0]["parameters"]


def test_born_again_generations_run_as_stages_of_the_students_architecture(tmp_path):
    raw = {k: v for k, v in TINY.items() if k != "teacher"}
    raw["training"] = {**TINY["training"], "baseline": False}
    config = config_lib.validate({**raw, "output": str(tmp_path),
                                  "distillation": {"scheme": "born_again", "generations": 2,
                                                   "losses": [{"name": "kd",
                                                               "temperature": 1.0}]}})
    results = job.run(config, **QUIET)
    rows = results["models"]
    assert [row["model"] for row in rows] == ["teacher", "generation_1", "distilled student"]
    assert rows[1]["taught_by"] == "teacher" and rows[2]["taught_by"] == "generation_1"
    # Every generation is the student's architecture.
    assert len({row["parameters"] for row in rows}) == 1
    # The config saved is the one given: it validates again as written.
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert "stages" not in saved and config_lib.validate(saved) == config


def test_scheme_errors_are_all_reported_at_once():
    raw = {**TINY, "stages": [{"student": {"size": "small"}},],
           "training": {**TINY["training"], "early_stopping": {}},
           "distillation": {"scheme": "mutual", "decay": 0.5, "peers": 0,
                            "student_loss_weight": 0.2, "losses": ["kd", "dist"]}}
    with pytest.raises(ConfigError) as error:
        config_lib.validate(raw)
    expected = [
        "`distillation.decay` applies to `distillation.scheme: self`",
        "`distillation.peers` must be >= 1",
        "`teacher` does not apply to `distillation.scheme: mutual`",
        "`stages` does not apply to `distillation.scheme: mutual`",
        "`training.early_stopping` does not apply",
        "takes one `kd` loss",
        "`distillation.student_loss_weight` does not apply",
    ]
    messages = error.value.messages
    for text in expected:
        assert any(text in message for message in messages), (text, messages)
    with pytest.raises(ConfigError, match="Invalid value for `distillation.scheme`"):
        config_lib.validate({"distillation": {"scheme": "peers"}})
    with pytest.raises(ConfigError, match="born_again` trains generation 0"):
        config_lib.validate({"student": {"path": "x.keras"},
                             "distillation": {"scheme": "born_again"}})
    # Without `scheme`, a config is as it was (its fingerprint too).
    assert "scheme" not in config_lib.validate({})["distillation"]
