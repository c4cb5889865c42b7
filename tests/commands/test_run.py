"""Robustness of `tf-distill run`: divergence, resume after a kill, config changes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from interruptions import InterruptAfterEpoch
from processes import HANG_SECONDS

from tf_distill import losses
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.callbacks import TrainingDivergedError
from tf_distill.commands import config as config_lib
from tf_distill.commands import run as job
from tf_distill.commands.config import ConfigError

pytestmark = pytest.mark.slow  # end-to-end runs of `tf-distill run`

FAST = {
    "data": {"source": "digits", "batch_size": 64},
    "teacher": {"architecture": "mlp", "size": "small", "epochs": 1},
    "student": {"architecture": "mlp", "size": "small"},
    "training": {"epochs": 3, "seed": 0, "baseline": False},
}


@losses.register("test_nan_after_steps", "test only: NaN after 25 steps")
class NanAfterSteps(losses.DistillationLoss):
    """A loss that turns NaN at the 26th training step (epoch 2 on digits)."""

    def __init__(self):
        self.steps = tf.Variable(0, trainable=False)

    def call(self, teacher_outputs, student_outputs, mask=None):
        self.steps.assign_add(1)
        values = tf.reduce_mean(tf.square(teacher_outputs - student_outputs), axis=-1)
        # Added, not selected with tf.where: the NaN must not reach the
        # gradients of the steps before it appears.
        return values + tf.where(self.steps > 25, np.nan, 0.0)


def test_nan_loss_stops_with_error_and_keeps_last_good_student(tmp_path):
    config = config_lib.validate(
        {**FAST, "distillation": {"losses": ["test_nan_after_steps"]}, "output": str(tmp_path)}
    )
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2, step \d+.*kept at"):
        job.run(config, verbose=0)
    kept = saving.load_model(tmp_path / "student_last_good.keras")
    assert all(np.isfinite(w).all() for w in kept.get_weights())
    assert not (tmp_path / "student.keras").exists()
    assert not (tmp_path / "metrics.json").exists()


def test_changed_config_is_refused_in_the_same_output(tmp_path):
    config = config_lib.validate({**FAST, "training": {**FAST["training"], "epochs": 1},
                                  "output": str(tmp_path)})
    job.run(config, verbose=0)
    metrics_before = (tmp_path / "metrics.json").read_bytes()
    changed = dict(config, training={**config["training"], "learning_rate": 0.5})
    with pytest.raises(ConfigError, match=r"holds a run of a different config.*another `--output`"):
        job.run(changed, verbose=0)
    assert (tmp_path / "metrics.json").read_bytes() == metrics_before


def _cli(config_path, stdout=subprocess.PIPE):
    return subprocess.Popen(
        [sys.executable, "-m", "tf_distill.cli", "run", str(config_path)],
        stdout=stdout, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"},
    )


def _backed_up_epoch(metadata):
    """The epoch `BackupAndRestore` recorded, or None before it wrote one.

    The file exists, empty, from the moment Keras opens it to write.
    """
    try:
        return json.loads(metadata.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return None


def test_killed_run_resumes_where_it_stopped(tmp_path):
    output = tmp_path / "out"
    config = {**FAST, "teacher": {**FAST["teacher"], "epochs": 2},
              "training": {**FAST["training"], "epochs": 40}, "output": str(output)}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    # To a file, not a pipe nobody reads while waiting: a full pipe would stall the run.
    with open(tmp_path / "killed.log", "w") as log:
        process = _cli(path, stdout=log)
    metadata = output / ".backup" / "distill" / "training_metadata.json"
    # Kill once a distillation epoch is backed up, however long that takes;
    # the guard only stops a run that hangs.
    deadline = time.monotonic() + HANG_SECONDS
    try:
        while _backed_up_epoch(metadata) is None and process.poll() is None:
            assert time.monotonic() < deadline, "the run hung before its first distillation epoch"
            time.sleep(0.2)
        assert _backed_up_epoch(metadata) is not None, (
            "the run never finished a distillation epoch:\n"
            + (tmp_path / "killed.log").read_text()[-3000:]
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (output / "metrics.json").exists()
    finished_epochs = json.loads(metadata.read_text())["epoch"]
    assert 1 <= finished_epochs < 40
    teacher_before = (output / "teacher.keras").read_bytes()

    resumed = _cli(path)
    out, _ = resumed.communicate(timeout=HANG_SECONDS)
    assert resumed.returncode == 0, out
    assert "Resuming the run" in out
    assert "Reusing the teacher" in out
    metrics = json.loads((output / "metrics.json").read_text())
    history = metrics["histories"]["distilled student"]
    # Only the epochs left after the last finished one were run again, and the
    # history still holds every epoch (those before the kill from the backup).
    assert metrics["resumed"] == {"distilled student": finished_epochs + 1}
    assert len(history["loss"]) == 40
    assert (output / "teacher.keras").read_bytes() == teacher_before
    assert not (output / ".backup" / "distill").exists()


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 100), st.floats(allow_nan=True),
    st.text(max_size=8), st.lists(st.integers(), max_size=3),
)
_keys = st.sampled_from(
    ["source", "batch_size", "epochs", "learning_rate", "student_loss_weight", "losses",
     "loss_weights", "architecture", "size", "path", "seed", "optimizer", "baseline",
     "validation_size", "train_size", "quantization", "unknown_key", "temperature"]
)
_sections = st.dictionaries(
    st.sampled_from(list(config_lib.SCHEMA) + ["output", "unsafe", "tuning", "bogus"]),
    st.one_of(_values, st.dictionaries(_keys, _values, max_size=4)),
    max_size=5,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sections)
def test_random_configs_give_a_valid_config_or_a_clear_error(raw):
    try:
        config = config_lib.validate(raw)
    except ConfigError as error:
        assert str(error)
        assert "Received" in str(error) or "Valid keys" in str(error) or "Expected" in str(error)
    else:
        assert set(config) == set(config_lib.SCHEMA) | {"output", "unsafe", "tuning"}


_MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tf_distill.commands import config
from tf_distill.commands import run as job
raw = json.loads(sys.argv[1])
result = job.run(config.validate(raw), verbose=0)
print("RESULT", json.dumps([row["test_accuracy"] for row in result["models"]]))
"""


def test_mirrored_strategy_on_two_cpus_matches_one_device(tmp_path):
    accuracies = {}
    for distribute in ("none", "mirrored"):
        raw = {**FAST, "training": {**FAST["training"], "epochs": 2, "distribute": distribute},
               "output": str(tmp_path / distribute)}
        done = subprocess.run(
            [sys.executable, "-c", _MIRRORED_SCRIPT, json.dumps(raw)],
            capture_output=True, text=True, timeout=HANG_SECONDS,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        line = [text for text in done.stdout.splitlines() if text.startswith("RESULT ")][-1]
        accuracies[distribute] = json.loads(line[len("RESULT "):])
    # Same seed, same data order, the loss averaged over the global batch:
    # the two runs agree up to floating-point summation order.
    np.testing.assert_allclose(accuracies["mirrored"], accuracies["none"], atol=0.02)


def test_seeds_are_paired_and_aggregated(tmp_path):
    config = config_lib.validate({**FAST, "training": {**FAST["training"], "epochs": 1,
                                                       "baseline": True, "seeds": [3, 4]},
                                  "output": str(tmp_path)})
    results = job.run(config, verbose=0, log=lambda *a: None)
    rows = results["models"]
    assert [(row["model"], row["seed"]) for row in rows] == [
        ("teacher", None),
        ("student alone", 3), ("distilled student", 3),
        ("student alone", 4), ("distilled student", 4),
    ]
    comparison = results["comparison"]
    assert comparison["seeds"] == [3, 4]
    assert comparison["alone"] == [rows[1]["test_errors"], rows[3]["test_errors"]]
    assert comparison["distilled"] == [rows[2]["test_errors"], rows[4]["test_errors"]]
    assert comparison["alone_mean"] == pytest.approx(np.mean(comparison["alone"]))
    assert comparison["distilled_std"] == pytest.approx(np.std(comparison["distilled"], ddof=1))
    assert results["summary"] == comparison["sentence"]
    for seed in (3, 4):
        assert (tmp_path / f"student_seed{seed}.keras").exists()
        assert (tmp_path / f"student_alone_seed{seed}.keras").exists()
    report = (tmp_path / "report.md").read_text()
    assert comparison["sentence"] in report
    assert (tmp_path / "comparison.png").exists()
    assert not (tmp_path / ".backup").exists()
    # The two seeds start from different weights: paired within, not across.
    first = saving.load_model(tmp_path / "student_alone_seed3.keras").get_weights()[0]
    second = saving.load_model(tmp_path / "student_alone_seed4.keras").get_weights()[0]
    assert not np.allclose(first, second)


def test_a_refused_run_writes_nothing_and_does_not_block_the_corrected_one(tmp_path):
    wrong = tmp_path / "wrong.keras"
    saving.save_model(
        __import__("tf_distill").architectures.build("mlp", (8, 8, 1), 3, size="small"), wrong
    )
    output = tmp_path / "out"
    raw = {**FAST, "teacher": {"path": str(wrong)}, "output": str(output),
           "training": {**FAST["training"], "epochs": 1}}
    with pytest.raises(ConfigError, match=r"outputs 3 classes but the data has 10"):
        job.run(config_lib.validate(raw), verbose=0, log=lambda *a: None)
    assert not output.exists() or os.listdir(output) == []
    # A folder holding only the state of a refused run (as older versions
    # left it) does not block the corrected run either.
    output.mkdir(exist_ok=True)
    (output / job.STATE_FILE).write_text(json.dumps({"config_hash": "0" * 16, "phases": {}}))
    corrected = {**raw, "teacher": FAST["teacher"]}
    results = job.run(config_lib.validate(corrected), verbose=0, log=lambda *a: None)
    assert results["models"][-1]["model"] == "distilled student"


def test_changed_data_is_refused_or_restarted(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "data.npz"

    def write_data(offset):
        x = rng.normal(size=(300, 8, 8, 1)).astype("float32") + offset
        np.savez(npz, x=x, y=rng.integers(0, 10, size=300))

    write_data(0.0)
    raw = {**FAST, "data": {"source": str(npz), "batch_size": 64},
           "training": {**FAST["training"], "epochs": 1}, "output": str(tmp_path / "out")}
    job.run(config_lib.validate(raw), verbose=0, log=lambda *a: None)
    write_data(1.0)
    with pytest.raises(ConfigError, match=r"holds a run of a different config or data"):
        job.run(config_lib.validate(raw), verbose=0, log=lambda *a: None)
    messages = []
    job.run(config_lib.validate(raw), verbose=0, log=messages.append, restart=True)
    assert any("Starting over" in m for m in messages)
    assert any(m.startswith("Training the teacher") for m in messages)
    # The old run's TensorBoard logs went with it: one run's event file.
    assert len(os.listdir(tmp_path / "out" / job.TENSORBOARD_FOLDER / "teacher" / "train")) == 1


def test_an_output_that_is_a_file_is_refused_before_training(tmp_path):
    target = tmp_path / "taken"
    target.write_text("mine")
    config = config_lib.validate({**FAST, "output": str(target)})
    with pytest.raises(ConfigError, match=r"is an existing file"):
        job.run(config, verbose=0, log=lambda *a: None)
    assert target.read_text() == "mine"


def test_a_teacher_no_better_than_the_student_alone_is_warned_about(tmp_path):
    raw = {**FAST, "teacher": {**FAST["teacher"], "epochs": 0},
           "training": {**FAST["training"], "epochs": 2, "baseline": True},
           "output": str(tmp_path)}
    messages = []
    results = job.run(config_lib.validate(raw), verbose=0, log=messages.append)
    assert len(results["warnings"]) == 1
    assert "no better than the student trained alone" in results["warnings"][0]
    assert any(m.startswith("Warning: The teacher is no better") for m in messages)
    assert "**Warning:** The teacher is no better" in (tmp_path / "report.md").read_text()


def test_a_backup_cut_off_mid_write_restarts_its_phase(tmp_path):
    config = config_lib.validate({**FAST, "output": str(tmp_path)})
    backup = tmp_path / ".backup" / "distill"
    backup.mkdir(parents=True)
    (backup / "training_metadata.json").write_text('{"epoch": 1, "bat')
    messages = []
    callback = job.Job(config, verbose=0, log=messages.append).backup("distill")
    assert isinstance(callback, keras.callbacks.BackupAndRestore)
    assert not backup.exists()
    assert messages == ["The backup of distill was cut off mid-write; that phase starts over"]


def test_a_two_teacher_config_runs_end_to_end(tmp_path):
    raw = {
        **FAST,
        "teacher": [
            {"name": "wide", "architecture": "mlp", "size": "medium", "epochs": 1},
            {"name": "narrow", "architecture": "mlp", "size": "small", "epochs": 1},
        ],
        "distillation": {
            "teacher_weights": {"wide": 2, "narrow": 1},
            "ensemble": "average_logits",
            "losses": [{"name": "kd", "temperature": 4.0},
                       {"name": "kd", "temperature": 2.0, "teacher": "narrow"}],
            "loss_weights": [1.0, 0.5],
        },
        "training": {**FAST["training"], "epochs": 1},
        "output": str(tmp_path),
    }
    messages = []
    results = job.run(config_lib.validate(raw), verbose=0, log=messages.append)
    assert [row["model"] for row in results["models"]] == ["wide", "narrow", "distilled student"]
    wide, narrow = results["models"][:2]
    assert wide["parameters"] > narrow["parameters"]
    for name in ("wide", "narrow"):
        assert (tmp_path / f"teacher_{name}.keras").exists()
        assert any(m.startswith(f"Training the {name} (mlp/") for m in messages)
    assert (tmp_path / "student.keras").exists()
    # Run again in the same folder: both teachers are reused, not retrained.
    messages.clear()
    job.run(config_lib.validate(raw), verbose=0, log=messages.append)
    assert sum(m.startswith("Reusing the teacher 'wide'") for m in messages) == 1
    assert sum(m.startswith("Reusing the teacher 'narrow'") for m in messages) == 1
    assert not any(m.startswith("Training the wide") for m in messages)


def test_a_trained_teacher_learns_although_the_set_up_was_checked_first(tmp_path):
    raw = {**FAST, "teacher": {"architecture": "mlp", "size": "small", "epochs": 3,
                               "learning_rate": 0.01},
           "training": {**FAST["training"], "epochs": 1}, "output": str(tmp_path)}
    results = job.run(config_lib.validate(raw), verbose=0, log=lambda *a: None)
    teacher = results["models"][0]
    assert teacher["model"] == "teacher"
    assert teacher["test_accuracy"] > 0.5
    assert len(results["histories"]["teacher"]["loss"]) == 3


def test_a_transfer_set_with_the_rest_unlabeled(tmp_path):
    from tf_distill.commands import common

    raw = {**FAST, "data": {**FAST["data"], "transfer_size": 100, "unlabeled": "rest"},
           "training": {**FAST["training"], "epochs": 1, "baseline": True},
           "output": str(tmp_path)}
    config = config_lib.validate(raw)
    data = common.load_data(config["data"])
    labeled, distilled = common.transfer_data(config, data)
    assert len(labeled.x_train) == 100
    assert np.bincount(labeled.y_train).min() >= 9  # stratified: ~10 per class
    assert len(distilled.x_train) == len(data.x_train)
    assert (distilled.y_train == -1).sum() == len(data.x_train) - 100
    np.testing.assert_array_equal(distilled.y_train[:100], labeled.y_train)
    assert labeled.x_val is data.x_val and labeled.x_test is data.x_test
    messages = []
    results = job.run(config, verbose=0, log=messages.append)
    assert (f"Transfer set: the students learn from 100 labeled training examples (the "
            f"teacher from {len(data.x_train)}), distillation also from "
            f"{len(data.x_train) - 100} without labels") in messages
    assert [row["model"] for row in results["models"]] == [
        "teacher", "student alone", "distilled student"]
    without = config_lib.validate({**raw, "data": {**raw["data"], "unlabeled": "none"}})
    labeled_again, distilled_again = common.transfer_data(without, data)
    assert distilled_again is labeled_again
    np.testing.assert_array_equal(labeled_again.y_train, labeled.y_train)


def test_early_stopping_stops_every_phase_early(tmp_path):
    # A learning rate of 1e-12 leaves the predictions, and so the validation
    # accuracy, unchanged: no improvement after the first epoch.
    config = config_lib.validate({
        **FAST,
        "data": {"source": "digits", "batch_size": 64, "train_size": 300,
                 "validation_size": 100, "test_size": 100},
        "training": {"epochs": 6, "seed": 0, "learning_rate": 1e-12, "cache": "off",
                     "early_stopping": {"monitor": "val_accuracy", "patience": 1}},
        "output": str(tmp_path / "out"),
    })
    results = job.run(config, verbose=0, log=lambda *_: None)
    lengths = {name: len(history["val_accuracy"])
               for name, history in results["histories"].items()}
    assert lengths == {"teacher": 1, "student alone": 2, "distilled student": 2}


def test_schedule_weight_decay_and_clipnorm_reach_each_phase_optimizer(tmp_path):
    from tf_distill.commands import common
    from tf_distill.data import load

    config = config_lib.validate({"training": {
        "epochs": 4, "schedule": "cosine", "warmup_epochs": 1, "weight_decay": 0.01,
        "clipnorm": 0.5, "optimizer": "sgd"}, "data": {"batch_size": 100}})
    data = load("digits", train_size=300, validation_size=100, test_size=100)
    optimizer = common.training_optimizer(config, data, learning_rate=0.1, epochs=4)
    assert (optimizer.weight_decay, optimizer.clipnorm, optimizer.momentum) == (0.01, 0.5, 0.9)
    schedule = keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    # 3 batches an epoch: warm-up over 3 steps to 0.1, cosine to 0 at step 12.
    np.testing.assert_allclose([float(schedule(step)) for step in (0, 3, 12)], [0.0, 0.1, 0.0],
                               atol=1e-6)


def _small_data():
    from tf_distill.data import load

    return load("digits", train_size=300, validation_size=100, test_size=100)


def _own_student_file(tmp_path):
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(hidden), name="mine")
    path = str(tmp_path / "mine.keras")
    saving.save_model(model, path)
    return path, model


@pytest.mark.parametrize("keep_weights", [False, True])
def test_a_student_file_is_reinitialized_unless_its_weights_are_kept(tmp_path, keep_weights):
    from tf_distill.commands import common

    path, original = _own_student_file(tmp_path)
    config = config_lib.validate({"student": {"path": path, "keep_weights": keep_weights}})
    student = common.build_student(config, _small_data(), "student", seed=3)
    assert [type(layer).__name__ for layer in student.layers] == [
        type(layer).__name__ for layer in original.layers]
    assert [w.shape for w in student.get_weights()] == [w.shape for w in original.get_weights()]
    kernels_equal = np.array_equal(student.get_weights()[0], original.get_weights()[0])
    assert kernels_equal == keep_weights
    # Seeded: the same seed gives the same fresh weights.
    again = common.build_student(config, _small_data(), "student", seed=3)
    np.testing.assert_array_equal(again.get_weights()[0], student.get_weights()[0])


def test_student_config_errors(tmp_path):
    path, _ = _own_student_file(tmp_path)
    with pytest.raises(ConfigError, match="both a `path` and a `builder`"):
        config_lib.validate({"student": {"path": path, "builder": "mine.models:small"}})
    with pytest.raises(ConfigError, match="`student.keep_weights` applies to a student loaded"):
        config_lib.validate({"student": {"keep_weights": True}})
    with pytest.raises(ConfigError, match=r"`teacher.builder` must be `package.module:function`"):
        config_lib.validate({"teacher": {"builder": "mine.models.small"}})
    with pytest.raises(ConfigError, match=r"`student.path` is not a readable file"):
        config_lib.validate({"student": {"path": str(tmp_path / "missing.keras")}})


BUILDER_MODULE = '''
import keras


def small(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs)))


def not_a_model(input_shape, num_classes):
    return "model"
'''


def test_a_builder_runs_only_with_unsafe(tmp_path, monkeypatch):
    from tf_distill.commands import common

    (tmp_path / "my_builders.py").write_text(BUILDER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = {"student": {"builder": "my_builders:small"}}
    with pytest.raises(ConfigError, match=r"imports and runs Python code.*--unsafe"):
        common.build_student(config_lib.validate(raw), _small_data())
    student = common.build_student(config_lib.validate({**raw, "unsafe": True}), _small_data())
    assert tuple(student.outputs[0].shape) == (None, 10)
    assert student.count_params() == 64 * 10 + 10
    with pytest.raises(ConfigError, match="must return a keras.Model. Received: str"):
        common.build_student(config_lib.validate(
            {"student": {"builder": "my_builders:not_a_model"}, "unsafe": True}), _small_data())


def test_a_job_distills_from_a_built_teacher_into_a_student_file(tmp_path, monkeypatch):
    (tmp_path / "my_builders.py").write_text(BUILDER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    path, _ = _own_student_file(tmp_path)
    raw = {
        "data": {"source": "digits", "batch_size": 64, "train_size": 300,
                 "validation_size": 100, "test_size": 100},
        "teacher": {"builder": "my_builders:small", "epochs": 4, "learning_rate": 0.05},
        "student": {"path": path},
        "training": {"epochs": 1, "seed": 0, "cache": "off"},
        "output": str(tmp_path / "out"),
    }
    with pytest.raises(ConfigError, match="--unsafe"):
        job.run(config_lib.validate(raw), verbose=0, log=lambda *_: None)
    results = job.run(config_lib.validate({**raw, "unsafe": True}), verbose=0,
                      log=lambda *_: None)
    rows = {row["model"]: row for row in results["models"]}
    assert rows["teacher"]["parameters"] == 650
    assert rows["distilled student"]["parameters"] == 64 * 16 + 16 + 16 * 10 + 10
    assert rows["teacher"]["test_accuracy"] > 0.5  # it trained (chance: 0.1)


def test_run_interrupted_in_distillation_resumes_to_the_uninterrupted_numbers(
        tmp_path, monkeypatch):
    fields = {**FAST, "training": {**FAST["training"], "epochs": 4, "baseline": True}}
    whole = job.run(config_lib.validate({**fields, "output": str(tmp_path / "whole")}),
                    verbose=0, log=lambda *_: None)
    callbacks = job.Job.distillation_callbacks
    monkeypatch.setattr(job.Job, "distillation_callbacks", lambda self, *args: [
        *callbacks(self, *args), InterruptAfterEpoch(1)])
    config = config_lib.validate({**fields, "output": str(tmp_path / "resumed")})
    with pytest.raises(KeyboardInterrupt):
        job.run(config, verbose=0, log=lambda *_: None)
    monkeypatch.setattr(job.Job, "distillation_callbacks", callbacks)
    lines = []
    resumed = job.run(config, verbose=0, log=lines.append)

    assert [row["test_errors"] for row in resumed["models"]] == [
        row["test_errors"] for row in whole["models"]]
    # Every epoch, those before the interruption included, with the same values.
    assert resumed["histories"] == whole["histories"]
    assert len(resumed["histories"]["distilled student"]["loss"]) == 4
    assert resumed["resumed"] == {"distilled student": 3} and whole["resumed"] == {}
    report = (tmp_path / "resumed" / "report.md").read_text()
    assert "distilled student was interrupted and resumed at epoch 3" in report
    assert "resumed" not in (tmp_path / "whole" / "report.md").read_text()
    assert any("resumed at epoch 3" in line for line in lines), lines


def test_a_teacher_for_other_images_reads_the_data_through_its_preprocessing(tmp_path):
    from tf_distill import data as data_lib
    from tf_distill.teachers import preprocessing_layers

    # A teacher made for 32×32 RGB images, as a keras.applications model is.
    steps = [{"resize": [32, 32]}, {"repeat_channels": 3}, {"rescale": 1.0, "offset": 0.0}]
    digits = data_lib.load("digits")
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.AveragePooling2D(4),
                                keras.layers.Flatten(), keras.layers.Dense(10)])
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(preprocessing_layers(steps)(digits.x_train), digits.y_train, epochs=5, verbose=0)
    saving.save_model(teacher, tmp_path / "rgb32.keras")
    # The student learns from the teacher alone: it learns only if the teacher reads well.
    raw = {**FAST, "teacher": {"path": str(tmp_path / "rgb32.keras")},
           "distillation": {"student_loss_weight": 0.0},
           "training": {**FAST["training"], "learning_rate": 0.01},
           "output": str(tmp_path / "run")}
    with pytest.raises(ConfigError, match=r"takes inputs of shape \(32, 32, 3\) but the data's "
                       r"inputs have shape \(8, 8, 1\).*`teacher.preprocessing`"):
        job.run(config_lib.validate(raw), verbose=0, log=lambda message: None)
    raw["teacher"]["preprocessing"] = steps
    results = job.run(config_lib.validate(raw), verbose=0, log=lambda message: None)
    teacher_row, student_row = results["models"]
    assert teacher_row["model"] == "teacher" and teacher_row["test_accuracy"] > 0.8
    assert student_row["model"] == "distilled student" and student_row["test_accuracy"] > 0.5
    assert (tmp_path / "run" / "student.keras").exists()
    # Too few steps for the teacher's shape: refused before training, naming the shapes.
    raw["teacher"]["preprocessing"] = steps[:1]
    raw["output"] = str(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"\(32, 32, 1\) after `teacher.preprocessing` "
                       r"\(from \(8, 8, 1\)\)"):
        job.run(config_lib.validate(raw), verbose=0, log=lambda message: None)


def _tensorboard_tags(folder):
    """The scalar tags of the TensorBoard event files in `folder`."""
    return {
        value.tag
        for name in os.listdir(folder)
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name))
        for value in event.summary.value
    }


def test_every_phase_writes_its_history_to_tensorboard(tmp_path):
    config = config_lib.validate({
        "data": {"source": "digits", "batch_size": 64, "train_size": 200,
                 "validation_size": 64, "test_size": 64},
        "teacher": {"architecture": "mlp", "size": "medium", "epochs": 1},
        "stages": [{"name": "assistant", "student": {"architecture": "mlp", "size": "small"},
                    "training": {"epochs": 1}}],
        "student": {"architecture": "mlp", "size": "small"},
        "distillation": {"losses": [{"name": "kd", "temperature": {
            "schedule": "linear", "start": 4, "end": 1}}]},
        "training": {"epochs": 2, "seeds": [0], "cache": "off", "jit_compile": False},
        "output": str(tmp_path),
    })
    job.run(config, verbose=0)
    logs = tmp_path / job.TENSORBOARD_FOLDER
    assert sorted(os.listdir(logs)) == ["baseline_seed0", "distill_seed0", "stage_assistant",
                                        "teacher"]
    plain = {"epoch_loss", "epoch_accuracy"}
    distilled = plain | {"epoch_student_loss", "epoch_distillation_loss", "epoch_temperature"}
    for phase, expected in [("teacher", plain), ("baseline_seed0", plain),
                            ("stage_assistant", distilled), ("distill_seed0", distilled)]:
        assert expected <= _tensorboard_tags(logs / phase / "train"), phase
        assert {"epoch_loss", "epoch_accuracy"} <= _tensorboard_tags(
            logs / phase / "validation"), phase
