import csv
import gc
import json
import os
import socket
import subprocess
import sys

import h5py
import keras_tuner
import numpy as np
import pytest
from keras_tuner.engine import hyperparameters
from processes import wait_all

from tf_distill import architectures
from tf_distill import cache
from tf_distill import data as data_lib
from tf_distill import saving
from tf_distill import tuning
from tf_distill.backend import keras
from tf_distill.commands import config as config_lib
from tf_distill.commands import tune as tune_command
from tf_distill.commands.config import ConfigError
from tf_distill.distillers.distiller import Distiller
from tf_distill.losses import crossentropy_from_logits

pytestmark = pytest.mark.slow  # searches run end to end, distributed ones too

INPUT_SHAPE = (8, 8, 1)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def splits():
    return data_lib.load("digits")


@pytest.fixture(scope="module")
def teacher(splits):
    keras.utils.set_random_seed(0)
    model = architectures.build("mlp", INPUT_SHAPE, 10, size="medium", seed=0, name="teacher")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=crossentropy_from_logits)
    model.fit(splits.x_train, splits.y_train, batch_size=64, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def pipelines(teacher, splits):
    """One teacher cache, shared by every trial of every search below."""
    train = cache.cache_teacher_outputs(teacher, splits, batch_size=64, seed=0)
    validation = cache.cache_teacher_outputs(teacher, splits, split="validation", batch_size=135)
    return train, validation


def _build_student(width=None):
    size = 0.5 * (1.0 if width is None else width)
    return architectures.build("mlp", INPUT_SHAPE, 10, size=size, seed=1, name="student")


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))


class _Interrupt(keras.callbacks.Callback):
    """Records each trial's α; raises KeyboardInterrupt (as a kill would stop
    the search) when the `interrupt_at`-th training starts. Class attributes,
    because the tuner deep-copies callbacks for every trial."""

    fits = []
    interrupt_at = None

    def on_train_begin(self, logs=None):
        _Interrupt.fits.append(self.model.student_loss_weight)
        if len(_Interrupt.fits) == _Interrupt.interrupt_at:
            raise KeyboardInterrupt


def test_search_resumes_after_interruption_and_saves_the_best_student(
    tmp_path, teacher, pipelines, splits
):
    train, validation = pipelines

    def make_tuner(overwrite):
        hypermodel = tuning.DistillerHyperModel(teacher, _build_student, learning_rate=0.01, seed=0)
        return tuning.make_tuner(
            hypermodel, "random", max_trials=3, directory=tmp_path, overwrite=overwrite, seed=1
        )

    _Interrupt.fits.clear()
    _Interrupt.interrupt_at = 2
    with pytest.raises(KeyboardInterrupt):
        tuning.search(make_tuner(True), train, validation, epochs=1, callbacks=[_Interrupt()])
    interrupted_alpha = _Interrupt.fits[1]

    _Interrupt.fits.clear()
    _Interrupt.interrupt_at = None
    tuner = make_tuner(False)
    assert tuner.oracle.trials["0"].status == "COMPLETED"
    tuning.search(tuner, train, validation, epochs=1, callbacks=[_Interrupt()])
    # Trial 0 was kept; the interrupted trial 1 ran again, then trial 2.
    assert len(_Interrupt.fits) == 2
    assert _Interrupt.fits[0] == pytest.approx(interrupted_alpha)

    rows = tuning.trial_rows(tuner)
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    assert all(row["status"] == "COMPLETED" for row in rows)
    for row in rows:
        assert 1.0 <= row["temperature"] <= 20.0
        assert 0.0 <= row["student_loss_weight"] <= 1.0
        assert row["learning_rate"] == 0.01
        assert 0.1 < row["score"] <= 1.0
    assert len({row["temperature"] for row in rows}) == 3

    output = tmp_path / "results"
    results = tuning.write_results(tuner, output)
    best_row = max(rows, key=lambda row: row["score"])
    assert results["best_score"] == pytest.approx(best_row["score"])
    assert results["best_hyperparameters"] == {
        key: best_row[key] for key in ("temperature", "student_loss_weight", "learning_rate")
    }
    saved = json.loads((output / "best_hyperparameters.json").read_text())
    assert saved["hyperparameters"] == pytest.approx(results["best_hyperparameters"])
    assert saved["objective"] == "val_accuracy" and saved["trial"] == best_row["trial"]
    with open(output / "trials.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    # Numbered as Keras Tuner shows them (Trial #1), not by its ids.
    assert [row["trial"] for row in table] == ["1", "2", "3"]
    assert float(table[1]["temperature"]) == pytest.approx(rows[1]["temperature"])
    trials_md = (output / "trials.md").read_text()
    assert "| trial | status | temperature | student loss weight | val_accuracy |" in trials_md
    assert "| #1 |" in trials_md and "Fixed (not searched): learning rate = 0.01." in trials_md
    assert saved["trial_number"] == int(best_row["trial"]) + 1
    assert (output / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The best student is saved alone and scores what its trial reported.
    student = saving.load_model(results["student_path"])
    assert student.count_params() == _build_student().count_params()
    assert _accuracy(student, splits.x_val, splits.y_val) == pytest.approx(
        results["best_score"], abs=1e-6
    )


class _HeapDuringTrials(keras.callbacks.Callback):
    """Records how many objects `gc` holds frozen when a trial trains."""

    frozen = []

    def on_train_begin(self, logs=None):
        _HeapDuringTrials.frozen.append(gc.get_freeze_count())


@pytest.mark.parametrize("name", ["bayesian", "hyperband", "grid"])
def test_every_keras_tuner_algorithm_runs(tmp_path, teacher, pipelines, splits, name):
    train, validation = pipelines
    grid = name == "grid"
    hypermodel = tuning.DistillerHyperModel(
        teacher,
        _build_student,
        temperature=[2.0, 8.0] if grid else (1.0, 20.0),
        student_loss_weight=0.5 if grid else (0.0, 1.0),
        learning_rate=0.01,
        seed=0,
    )
    tuner = tuning.make_tuner(
        hypermodel,
        name,
        max_trials=2,
        max_epochs=2,
        hyperband_factor=2,
        directory=tmp_path,
        overwrite=True,
        seed=0,
    )
    _HeapDuringTrials.frozen.clear()
    tuning.search(tuner, train, validation, epochs=1, callbacks=[_HeapDuringTrials()])
    assert isinstance(tuner, tuning.TUNERS[name])
    # The older heap was frozen while the trials ran, and thawed after.
    assert _HeapDuringTrials.frozen and min(_HeapDuringTrials.frozen) > 1000
    assert gc.get_freeze_count() == 0
    rows = tuning.trial_rows(tuner)
    assert rows and all(row["status"] == "COMPLETED" for row in rows)
    if grid:
        assert sorted(row["temperature"] for row in rows) == [2.0, 8.0]
        assert {row["student_loss_weight"] for row in rows} == {0.5}
    if name == "hyperband":
        # Some model was continued to the second epoch from its checkpoint.
        epochs = [t.hyperparameters.values["tuner/epochs"] for t in tuner.oracle.trials.values()]
        assert max(epochs) == 2
    student = tuning.best_student(tuner)
    assert _accuracy(student, splits.x_val, splits.y_val) == pytest.approx(
        max(row["score"] for row in rows), abs=1e-6
    )


class _PoisonInTraining(keras.layers.Layer):
    """Outputs NaN while training, so the loss turns NaN."""

    def call(self, inputs, training=None):
        return inputs * float("nan") if training else inputs


def test_trial_whose_loss_turns_nan_fails_and_the_search_goes_on(tmp_path, teacher, pipelines):
    train, validation = pipelines

    def build_student(width):
        student = _build_student()
        if width == 2.0:
            return keras.Model(student.input, _PoisonInTraining()(student.output))
        return student

    hypermodel = tuning.DistillerHyperModel(
        teacher,
        build_student,
        temperature=4.0,
        student_loss_weight=0.5,
        learning_rate=0.01,
        width=[1.0, 2.0, 3.0],
        seed=0,
    )
    tuner = tuning.make_tuner(hypermodel, "grid", max_trials=3, directory=tmp_path, overwrite=True)
    tuning.search(tuner, train, validation, epochs=1)
    rows = {row["width"]: row for row in tuning.trial_rows(tuner)}
    assert set(rows) == {1.0, 2.0, 3.0}
    assert rows[2.0]["status"] == "FAILED" and rows[2.0]["score"] is None
    assert "turned nan" in rows[2.0]["message"] and "the search goes on" in rows[2.0]["message"]
    assert rows[1.0]["status"] == rows[3.0]["status"] == "COMPLETED"
    results = tuning.write_results(tuner, tmp_path / "results")
    assert results["best_hyperparameters"]["width"] in (1.0, 3.0)
    assert "| FAILED |" in (tmp_path / "results" / "trials.md").read_text()


class SubclassedStudent(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.logits = keras.layers.Dense(10)

    def call(self, inputs):
        return self.logits(self.flatten(inputs))


def test_build_draws_temperature_and_alpha_and_returns_a_built_distiller(
    tmp_path, teacher, pipelines
):
    widths = []

    def build_student(width):
        widths.append(width)
        return _build_student(width)

    hypermodel = tuning.DistillerHyperModel(
        teacher, build_student, learning_rate=(1e-4, 1e-2), width=(0.5, 2.0)
    )
    hp = keras_tuner.HyperParameters()
    distiller = hypermodel.build(hp)
    space = {p.name: p for p in hp.space}
    assert set(space) == {"temperature", "student_loss_weight", "learning_rate", "width"}
    assert (space["temperature"].min_value, space["temperature"].max_value) == (1.0, 20.0)
    assert space["temperature"].sampling == "log"
    assert (space["student_loss_weight"].min_value, space["student_loss_weight"].max_value) == (
        0,
        1,
    )
    assert space["learning_rate"].sampling == "log"
    # Defaults: T = 4 (Hinton et al.), α = 0.5, lr = 1e-3, width 1.
    assert distiller.distillation_losses[0].temperature == 4.0
    assert distiller.student_loss_weight == 0.5
    assert float(distiller.optimizer.learning_rate) == pytest.approx(1e-3)
    assert widths == [1.0] and distiller.built

    hp.values.update(temperature=12.5, student_loss_weight=0.2, learning_rate=0.005, width=2.0)
    distiller = hypermodel.build(hp)
    assert distiller.distillation_losses[0].temperature == 12.5
    assert distiller.student_loss_weight == 0.2
    assert float(distiller.optimizer.learning_rate) == pytest.approx(0.005)
    assert widths[-1] == 2.0
    assert distiller.student.get_layer("features").units == 16

    # A subclassed student is built before training and saving.
    subclassed = tuning.DistillerHyperModel(teacher, SubclassedStudent, seed=0)
    distiller = subclassed.build(keras_tuner.HyperParameters())
    assert distiller.built and distiller.student.built
    distiller.fit(pipelines[0].take(2), epochs=1, verbose=0, shuffle=False)
    distiller.save_weights(tmp_path / "trial.weights.h5")
    assert (tmp_path / "trial.weights.h5").stat().st_size > 0


def _stored_values(path):
    """The number of numbers in a `.weights.h5` file."""
    sizes = []
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: sizes.append(item.size) if isinstance(item, h5py.Dataset) else None
        )
    return sum(sizes)


def test_trial_checkpoints_hold_what_trains_not_the_teacher(tmp_path, teacher, pipelines):
    hypermodel = tuning.DistillerHyperModel(teacher, _build_student, learning_rate=0.01, seed=0)
    hp = keras_tuner.HyperParameters()
    distiller = hypermodel.build(hp)
    assert isinstance(distiller, tuning.TrialDistiller)
    distiller.fit(pipelines[0].take(3), epochs=1, verbose=0, shuffle=False)
    trial_file, whole_file = tmp_path / "trial.weights.h5", tmp_path / "whole.weights.h5"
    distiller.save_weights(trial_file)
    Distiller.save_weights(distiller, whole_file)

    def size(variables):
        return sum(int(np.prod(v.shape)) for v in variables)

    trained = size(distiller.student.weights) + size(distiller.optimizer.variables)
    assert _stored_values(trial_file) == trained
    # The whole Distiller also holds the teacher and its own optimizer's slots.
    assert _stored_values(whole_file) >= trained + teacher.count_params()

    # Restoring touches the student and optimizer only: another teacher
    # object, with other weights, stays as it was.
    other_teacher = keras.models.clone_model(teacher)
    other_weights = [np.full(w.shape, 0.5, w.dtype) for w in teacher.get_weights()]
    other_teacher.set_weights(other_weights)
    restored = tuning.DistillerHyperModel(
        other_teacher, _build_student, learning_rate=0.01, seed=0
    ).build(hp)
    restored.load_weights(trial_file)
    for a, b in zip(restored.student.get_weights(), distiller.student.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(restored.optimizer.iterations) == int(distiller.optimizer.iterations) == 3
    for a, b in zip(restored.optimizer.variables, distiller.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(other_teacher.get_weights(), other_weights):
        np.testing.assert_array_equal(a, b)


def test_default_space_and_objective_search_for_distillation(tmp_path):
    """The defaults a user gets: T in [1, 20] on a log scale, α in [0, 1],
    and the student's validation accuracy, maximised."""
    teacher = architectures.build("mlp", INPUT_SHAPE, 10, size=0.5, seed=0, name="teacher")
    hypermodel = tuning.DistillerHyperModel(teacher, _build_student)
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    space = {p.name: p for p in hp.space}
    assert set(space) == {"temperature", "student_loss_weight", "learning_rate"}
    temperature = space["temperature"]
    assert isinstance(temperature, hyperparameters.Float)
    assert (temperature.min_value, temperature.max_value) == (1.0, 20.0)
    assert temperature.sampling == "log"
    weight = space["student_loss_weight"]
    assert isinstance(weight, hyperparameters.Float)
    assert (weight.min_value, weight.max_value) == (0.0, 1.0)
    assert weight.sampling == "linear"
    assert isinstance(space["learning_rate"], hyperparameters.Fixed)
    assert space["learning_rate"].value == pytest.approx(1e-3)

    tuner = tuning.make_tuner(hypermodel, directory=tmp_path)
    objective = tuner.oracle.objective
    assert (objective.name, objective.direction) == ("val_accuracy", "max")
    assert isinstance(tuner, keras_tuner.RandomSearch)
    assert tuner.oracle.max_trials == 10


def test_hypermodel_and_tuner_errors(teacher):
    with pytest.raises(ValueError, match="`teacher` must be a keras.Model"):
        tuning.DistillerHyperModel("teacher.keras", _build_student)
    with pytest.raises(ValueError, match="`build_student` must be a function"):
        tuning.DistillerHyperModel(teacher, None)
    with pytest.raises(ValueError, match=r"`temperature` values must be > 0.0"):
        tuning.DistillerHyperModel(teacher, _build_student, temperature=(0.0, 5.0))
    with pytest.raises(ValueError, match=r"`student_loss_weight` values must be >= 0.0 and <= 1.0"):
        tuning.DistillerHyperModel(teacher, _build_student, student_loss_weight=(0.2, 1.5))
    with pytest.raises(ValueError, match="must have low <= high"):
        tuning.DistillerHyperModel(teacher, _build_student, temperature=(8.0, 2.0))
    with pytest.raises(ValueError, match="The choices for `width` must not be empty"):
        tuning.DistillerHyperModel(teacher, _build_student, width=[])
    with pytest.raises(ValueError, match="Tuning the temperature needs a distillation loss"):
        tuning.DistillerHyperModel(
            teacher,
            _build_student,
            {"name": "fitnets", "teacher_layer_name": "features", "student_layer_name": "features"},
        )
    hypermodel = tuning.DistillerHyperModel(teacher, _build_student)
    with pytest.raises(ValueError, match="Invalid value for argument `tuner`"):
        tuning.make_tuner(hypermodel, "annealing")
    with pytest.raises(ValueError, match="Hyperband needs `max_epochs`"):
        tuning.make_tuner(hypermodel, "hyperband")


def test_validate_tuning_section():
    defaults = config_lib.validate_tuning(None)
    assert defaults["tuner"] == "random" and defaults["max_trials"] == 10
    assert (defaults["temperature_min"], defaults["temperature_max"]) == (1.0, 20.0)
    assert (defaults["student_loss_weight_min"], defaults["student_loss_weight_max"]) == (0.0, 1.0)
    assert defaults["objective"] == "val_accuracy" and defaults["overwrite"] is False
    assert config_lib.validate_tuning({"tuner": "grid", "max_trials": 4})["tuner"] == "grid"
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['trials'\] in section `tuning`"):
        config_lib.validate_tuning({"trials": 3})
    with pytest.raises(ConfigError, match="Invalid value for `tuning.tuner`"):
        config_lib.validate_tuning({"tuner": "anneal"})
    with pytest.raises(ConfigError, match=r"`tuning.student_loss_weight_max` must be <= 1"):
        config_lib.validate_tuning({"student_loss_weight_max": 2})
    with pytest.raises(
        ConfigError, match="`tuning.temperature_min` must be <= `tuning.temperature_max`"
    ):
        config_lib.validate_tuning({"temperature_min": 10, "temperature_max": 2})


def test_resolve_role_reads_keras_tuner_environment(monkeypatch):
    for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert tuning.resolve_role() == "standalone"
    with pytest.raises(ValueError, match="set KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT"):
        tuning.resolve_role("worker")
    with pytest.raises(ValueError, match="Invalid value for argument `role`"):
        tuning.resolve_role("boss")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    assert tuning.resolve_role("chief") == "chief"
    assert os.environ["KERASTUNER_TUNER_ID"] == "chief"
    assert tuning.resolve_role() == "chief"
    with pytest.raises(ValueError, match="A worker's KERASTUNER_TUNER_ID must not contain 'chief'"):
        tuning.resolve_role("worker")
    monkeypatch.delenv("KERASTUNER_TUNER_ID")
    assert tuning.resolve_role("worker") == "worker"
    assert os.environ["KERASTUNER_TUNER_ID"].startswith("tuner-")
    assert tuning.resolve_role() == "worker"
    with pytest.raises(ValueError, match="The chief's KERASTUNER_TUNER_ID must contain 'chief'"):
        tuning.resolve_role("chief")


def _config(**tuning_section):
    config = config_lib.validate(
        {
            "data": {"source": "digits", "batch_size": 64, "train_size": 500},
            "teacher": {
                "architecture": "mlp",
                "size": "medium",
                "epochs": 2,
                "learning_rate": 0.01,
            },
            "student": {"architecture": "mlp", "size": "small"},
            "training": {"epochs": 1, "learning_rate": 0.01, "seed": 0},
        }
    )
    config["tuning"] = {"max_trials": 2, **tuning_section}
    return config


def test_run_from_config_standalone_then_resumed(tmp_path, monkeypatch):
    for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(key, raising=False)
    messages = []
    results = tune_command.run_from_config(_config(), tmp_path, verbose=1, log=messages.append)
    assert results["role"] == "standalone"
    assert any(m.startswith("Caching the teacher's outputs (memory)") for m in messages)
    assert any("this process ran trials #1, #2" in m for m in messages)
    for name in (
        "teacher.keras",
        "student.keras",
        "trials.csv",
        "trials.md",
        "search.png",
        "best_hyperparameters.json",
        "tuning.json",
    ):
        assert (tmp_path / name).is_file(), name
    models = {row["model"]: row for row in results["models"]}
    assert set(models) == {"teacher", "tuned distilled student", "student alone"}
    assert models["tuned distilled student"]["parameters"] == models["student alone"]["parameters"]
    saved = json.loads((tmp_path / "tuning.json").read_text())
    assert saved["best_hyperparameters"] == pytest.approx(results["best_hyperparameters"])
    # The best values are given once, in the summary the command prints (not logged
    # here too), and only those searched: the learning rate is fixed.
    number = results["best_trial_number"]
    assert saved["summary"].startswith(f"Best hyperparameters (trial #{number}): ")
    assert "student_loss_weight=" in saved["summary"] and "temperature=" in saved["summary"]
    assert "learning_rate" not in saved["summary"]
    assert not any("Best hyperparameters" in m for m in messages)

    # Run again: the teacher and finished trials are reused, nothing retrains.
    messages.clear()
    config = _config()
    config["training"]["baseline"] = False
    again = tune_command.run_from_config(config, tmp_path, verbose=1, log=messages.append)
    assert any(m.startswith("Reusing the teacher trained earlier") for m in messages)
    assert any("this process ran trials none" in m for m in messages)
    assert again["best_hyperparameters"] == pytest.approx(results["best_hyperparameters"])

    changed = _config()
    changed["teacher"]["epochs"] = 3
    with pytest.raises(ConfigError, match="distilled from a teacher of another config"):
        tune_command.run_from_config(changed, tmp_path, verbose=0)


_CHILD = """
import json, sys
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
from tf_distill.commands import tune as tune_command
config = json.loads(sys.argv[1])
result = tune_command.run_from_config(config, sys.argv[2], verbose=0, role=sys.argv[3])
print("RESULT " + json.dumps({k: result[k] for k in ("role", "trials_run", "best_hyperparameters")
                              if k in result}))
"""


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_distributed_search_with_a_chief_and_two_workers(tmp_path, teacher):
    """Keras Tuner's distributed mode on localhost: one oracle, two workers."""
    teacher_path = tmp_path / "teacher.keras"
    saving.save_model(teacher, teacher_path)
    config = _config(max_trials=2, overwrite=True)
    config["teacher"]["path"] = str(teacher_path)
    config["training"]["baseline"] = False
    output = tmp_path / "search"
    environment = dict(
        os.environ,
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(_free_port()),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    processes = {}
    for tuner_id, role in (("chief", "chief"), ("tuner0", "worker"), ("tuner1", "worker")):
        # To files, not pipes read one at a time: a full pipe would stall a worker.
        with open(tmp_path / f"{tuner_id}.log", "w") as log:
            processes[tuner_id] = subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(config), str(output), role],
                env={**environment, "KERASTUNER_TUNER_ID": tuner_id},
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
    # Every process exits when the search is done; no bound on how long it takes.
    hung = wait_all(list(processes.values()))
    outputs = {tuner_id: (tmp_path / f"{tuner_id}.log").read_text() for tuner_id in processes}
    for tuner_id, process in processes.items():
        assert process.returncode == 0, (
            f"{tuner_id} failed (exit {process.returncode}, hung: {hung}):\n"
            f"{outputs[tuner_id][-3000:]}"
        )
    results = {}
    for tuner_id, text in outputs.items():
        line = [row for row in text.splitlines() if row.startswith("RESULT ")][-1]
        results[tuner_id] = json.loads(line[len("RESULT ") :])
    assert results["chief"]["role"] == "chief"
    ran = results["tuner0"]["trials_run"] + results["tuner1"]["trials_run"]
    assert sorted(ran) == ["0", "1"], "each trial ran once, on some worker"
    with open(output / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["COMPLETED"] * 2
    best = json.loads((output / "best_hyperparameters.json").read_text())
    assert best["hyperparameters"] == pytest.approx(results["chief"]["best_hyperparameters"])
    assert (output / "student.keras").is_file()
