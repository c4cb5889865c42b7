"""`tf-distill tune` obtains its teacher exactly as `tf-distill run` does."""

import os
import zipfile

import numpy as np
import pytest

from tf_distill import architectures
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.callbacks import TrainingDivergedError
from tf_distill.commands import config as config_lib
from tf_distill.commands import run as run_command
from tf_distill.commands import tune as tune_command
from tf_distill.commands.config import ConfigError
from tf_distill.optimizers import make_optimizer

pytestmark = pytest.mark.slow  # searches run end to end

RAW = {
    "data": {"source": "digits", "batch_size": 64, "train_size": 300},
    "teacher": {"architecture": "mlp", "size": "small", "epochs": 1, "learning_rate": 0.01},
    "student": {"architecture": "mlp", "size": "small"},
    "training": {"epochs": 1, "learning_rate": 0.01, "seed": 0, "baseline": False},
    "tuning": {"max_trials": 1},
}


@pytest.fixture(autouse=True)
def _standalone(monkeypatch):
    for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(key, raising=False)


def _members(path):
    with zipfile.ZipFile(path) as archive:
        return {info.filename: info.file_size for info in archive.infolist()}


def test_tune_and_run_save_the_same_teacher_without_optimizer_state(tmp_path):
    config = config_lib.validate(RAW)
    tune_command.run_from_config(config, tmp_path / "tune", verbose=0)
    run_command.run({**config, "output": str(tmp_path / "run")}, verbose=0, log=lambda *a: None)
    tuned, ran = tmp_path / "tune" / "teacher.keras", tmp_path / "run" / "teacher.keras"
    # The same members and the same weights (layer names in the config may
    # differ by Keras's name counter, e.g. `input_layer_3`).
    assert set(_members(tuned)) == set(_members(ran))
    assert _members(tuned)["model.weights.h5"] == _members(ran)["model.weights.h5"]
    model = saving.load_model(tuned)
    assert getattr(model, "optimizer", None) is None
    # The weights file holds the layers only: no optimizer variables.
    with zipfile.ZipFile(tuned) as archive:
        import h5py

        archive.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5") as weights:
        assert "optimizer" not in weights


def test_tune_refuses_a_teacher_with_the_wrong_shapes(tmp_path):
    wrong = tmp_path / "wrong.keras"
    saving.save_model(architectures.build("mlp", (8, 8, 1), 3, size="small"), wrong)
    config = config_lib.validate({**RAW, "teacher": {"path": str(wrong)}})
    with pytest.raises(ConfigError, match=r"The teacher outputs 3 classes but the data has 10"):
        tune_command.run_from_config(config, tmp_path / "out", verbose=0)
    other_input = tmp_path / "other_input.keras"
    saving.save_model(architectures.build("mlp", (28, 28, 1), 10, size="small"), other_input)
    config = config_lib.validate({**RAW, "teacher": {"path": str(other_input)}})
    with pytest.raises(ConfigError, match=r"The teacher takes inputs of shape \(28, 28, 1\)"):
        tune_command.run_from_config(config, tmp_path / "out", verbose=0)


def test_tune_stops_on_a_diverged_teacher(tmp_path):
    config = config_lib.validate(
        {**RAW, "teacher": {**RAW["teacher"], "learning_rate": 1e30},
         "training": {**RAW["training"], "optimizer": "sgd"}}
    )
    with pytest.raises(TrainingDivergedError, match=r"Training the teacher diverged"):
        tune_command.run_from_config(config, tmp_path, verbose=0)
    assert not (tmp_path / "teacher.keras").exists()


def test_tune_refuses_several_teachers(tmp_path):
    config = config_lib.validate({**RAW, "teacher": [{"name": "a"}, {"name": "b"}]})
    with pytest.raises(ConfigError, match=r"searches with one teacher"):
        tune_command.run_from_config(config, tmp_path, verbose=0)


def test_the_search_summary_says_errors_in_one_unit():
    models = [{"model": "tuned distilled student", "test_error": 31 / 270, "test_errors": 31,
               "test_examples": 270},
              {"model": "student alone", "test_error": 27 / 270, "test_errors": 27,
               "test_examples": 270}]
    assert tune_command.search_summary(models, {"temperature": 4.0}, 3) == (
        "Best hyperparameters (trial #3): temperature=4. The tuned distilled student's "
        "test error is 11.48 % (31 of 270), 1.48 percentage points higher than the "
        "student trained alone's 10.00 % (27 of 270).")
    models[0].update(test_error=27 / 270, test_errors=27)
    assert tune_command.search_summary(models, {}).endswith(
        "none searched. The tuned distilled student's test error is 10.00 % (27 of 270), "
        "the same as the student trained alone's.")


def test_sgd_means_momentum_everywhere():
    assert float(make_optimizer("sgd", 0.1).momentum) == pytest.approx(0.9)
    factory = make_optimizer(lambda rate: keras.optimizers.SGD(rate), 0.1)
    assert float(factory.momentum) == 0.0
    with pytest.raises(ValueError, match=r"Expected one of \['adam', 'adamw', 'sgd', 'rmsprop'\]"):
        make_optimizer("adagrad", 0.1)
    assert np.isclose(float(make_optimizer("adam", 0.003).learning_rate), 0.003)


def test_tune_refuses_teacher_preprocessing_in_one_line(tmp_path):
    teacher = tmp_path / "teacher.keras"
    saving.save_model(architectures.build("mlp", (32, 32, 3), 10, size="small"), teacher)
    config = config_lib.validate({**RAW, "teacher": {
        "path": str(teacher), "preprocessing": [{"resize": [32, 32]}, {"repeat_channels": 3}]}})
    with pytest.raises(ConfigError, match=r"`tf-distill tune` does not search with "
                       r"`teacher.preprocessing` yet; run it with `tf-distill run`"):
        tune_command.run_from_config(config, tmp_path / "out", verbose=0)


def _tensorboard_logs(folder):
    """`(tags, hparams)`: each log folder's scalar tags, and each trial's
    hyperparameter names, from the event files under `folder`."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    from tf_distill.backend import tf

    tags, hparams = {}, {}
    for log_dir, _, names in os.walk(os.path.join(folder, "tensorboard")):
        for name in names:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
                for value in event.summary.value:
                    tags.setdefault(os.path.relpath(log_dir, folder), set()).add(value.tag)
                    if value.metadata.plugin_data.plugin_name == "hparams":
                        data = plugin_data_pb2.HParamsPluginData.FromString(
                            value.metadata.plugin_data.content)
                        if data.HasField("session_start_info"):
                            hparams[log_dir] = set(data.session_start_info.hparams)
    return tags, hparams


def test_each_trial_writes_its_hyperparameters_and_history_to_tensorboard(tmp_path):
    config = config_lib.validate({**RAW, "tuning": {"max_trials": 2}})
    tune_command.run_from_config(config, tmp_path, verbose=0)
    tags, hparams = _tensorboard_logs(tmp_path)
    # Two trials, each with its hyperparameters and its epochs' logs.
    assert len(hparams) == 2
    assert all({"temperature", "student_loss_weight"} <= names for names in hparams.values())
    trained = [tags for folder, tags in tags.items() if folder.endswith(os.sep + "train")]
    assert len(trained) == 2
    assert all({"epoch_student_loss", "epoch_distillation_loss"} <= t for t in trained)
    # Afresh: the old search's trials leave no logs beside the new one's.
    again = config_lib.validate({**RAW, "tuning": {"max_trials": 1, "overwrite": True}})
    tune_command.run_from_config(again, tmp_path, verbose=0)
    assert len(_tensorboard_logs(tmp_path)[1]) == 1
