"""Hyperparameter search of a distillation: temperature and α with Keras Tuner.

`DistillerHyperModel` is a `keras_tuner.HyperModel` whose `build(hp)` makes
a compiled `Distiller` with the softening temperature `T` and the
student-loss weight `α` (`student_loss_weight`) drawn from a search space
(by default `T` in [1, 20] on a log scale and `α` in [0, 1]), and
optionally the learning rate and a width factor of the student. Any Keras
Tuner tuner runs it: `RandomSearch`, `BayesianOptimization`, `Hyperband`,
`GridSearch`.

The teacher is trained or loaded once, and one teacher-output cache
(`tf_distill.cache`) serves every trial, so a trial costs what training the
student alone costs; trial checkpoints hold the student, adapters and
optimizer state, not the frozen teacher (`TrialDistiller`). The objective
is the student's validation accuracy. A trial whose loss turns NaN fails
cleanly (`keras_tuner.errors.FailedTrialError`) and the search goes on;
`overwrite=False` resumes a search that was killed, re-running the trial
that was interrupted.

`run_from_config` is the `tf-distill tune CONFIG.yaml` command. It also runs
as the chief or a worker of Keras Tuner's distributed mode, configured by
the `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP` and
`KERASTUNER_ORACLE_PORT` environment variables: the chief trains (or loads)
the teacher, serves the oracle and writes the results; each worker loads the
teacher the chief saved, caches its outputs, and runs trials.

Example:

```python
hypermodel = tf_distill.tuning.DistillerHyperModel(
    teacher, lambda: build_student(), seed=0)
tuner = tf_distill.tuning.make_tuner(hypermodel, "bayesian", max_trials=20,
                                     directory="runs/search")
train = tf_distill.cache_teacher_outputs(teacher, (x_train, y_train),
                                         batch_size=64, seed=0)
validation = tf_distill.cache_teacher_outputs(teacher, (x_val, y_val),
                                              batch_size=64, shuffle=False)
tuner.search(train, validation_data=validation, epochs=10)
best = tuner.get_best_hyperparameters()[0].values
```
"""

import csv
import gc
import hashlib
import io
import json
import math
import os
import socket
import time

import keras_tuner
import numpy as np

from tf_distill import architectures
from tf_distill import losses as losses_lib
from tf_distill import saving
from tf_distill import taps
from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.commands import caching as cache_lib
from tf_distill.config import ConfigError
from tf_distill.config import _boolean
from tf_distill.config import _check_keys
from tf_distill.config import _mapping
from tf_distill.config import _number
from tf_distill.config import _optional
from tf_distill.config import _string
from tf_distill.distiller import Distiller
from tf_distill.files import atomic_path
from tf_distill.files import atomic_write
from tf_distill.files import atomic_write_json

TUNERS = {
    "random": keras_tuner.RandomSearch,
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
    "grid": keras_tuner.GridSearch,
}
ROLES = ("chief", "worker")

# The searched hyperparameters, with their defaults and log-scale flags.
_SPACES = {
    "temperature": {"default": 4.0, "log": True, "low": 0.0, "low_open": True, "high": None},
    "student_loss_weight": {
        "default": 0.5,
        "log": False,
        "low": 0.0,
        "low_open": False,
        "high": 1.0,
    },
    "learning_rate": {"default": 1e-3, "log": True, "low": 0.0, "low_open": True, "high": None},
    "width": {"default": 1.0, "log": True, "low": 0.0, "low_open": True, "high": None},
}


# ----------------------------------------------------------------------
# The search space.


def _check_space(name, space):
    """Checks a fixed value, a `(low, high)` range or a list of choices."""
    limits = _SPACES[name]

    def check_value(value):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"`{name}` must be a number, a (low, high) range or a list of "
                f"choices. Received: {name}={space!r}"
            )
        low, high = limits["low"], limits["high"]
        if (value <= low if limits["low_open"] else value < low) or (
            high is not None and value > high
        ):
            bounds = f"{'>' if limits['low_open'] else '>='} {low}" + (
                f" and <= {high}" if high is not None else ""
            )
            raise ValueError(f"`{name}` values must be {bounds}. Received: {name}={space!r}")
        return float(value)

    if isinstance(space, tuple):
        if len(space) != 2:
            raise ValueError(
                f"A range for `{name}` is a (low, high) pair. Received: {name}={space!r}"
            )
        low, high = (check_value(v) for v in space)
        if low > high:
            raise ValueError(
                f"The range of `{name}` must have low <= high. Received: {name}={space!r}"
            )
        return (low, high) if low < high else low
    if isinstance(space, list):
        if not space:
            raise ValueError(f"The choices for `{name}` must not be empty. Received: {name}=[]")
        return [check_value(v) for v in space]
    return check_value(space)


def with_temperature(distillation_losses, temperature):
    """The losses with `temperature` set on every loss that has one.

    Args:
        distillation_losses: Losses, names or configs, one or a list.
        temperature: The temperature, > 0.

    Returns:
        A list of new `DistillationLoss` objects.

    Raises:
        ValueError: if no loss has a temperature (kd, dkd, dist).
    """
    if not isinstance(distillation_losses, (list, tuple)):
        distillation_losses = [distillation_losses]
    resolved = [losses_lib.get(loss) for loss in distillation_losses]
    result, found = [], False
    for loss in resolved:
        config = loss.get_config()
        if "temperature" in config:
            found = True
            loss = type(loss).from_config({**config, "temperature": float(temperature)})
        result.append(loss)
    if not found:
        raise ValueError(
            "Tuning the temperature needs a distillation loss with a "
            "temperature (such as 'kd', 'dkd' or 'dist'). Received: "
            f"distillation_losses={resolved!r}. Pass `temperature=None` to "
            "leave it out of the search."
        )
    return result


class DistillerHyperModel(keras_tuner.HyperModel):
    """A Keras Tuner hypermodel of a `Distiller`: temperature, α and more.

    `build(hp)` returns a compiled, built `TrialDistiller` (a tuner saves
    each trial's weights, which needs a built model; a `TrialDistiller`
    leaves the shared, frozen teacher out of them). Each searched quantity is
    given as a number (fixed, still recorded in the trial), a `(low, high)`
    tuple (a continuous range; log scale for the temperature, learning rate
    and width) or a list (choices, e.g. for `GridSearch`).

    `fit(hp, model, ...)` trains with `keras.callbacks.TerminateOnNaN` and
    raises `keras_tuner.errors.FailedTrialError` if the loss turns NaN or
    infinite, so the tuner records the trial as failed and goes on.

    Args:
        teacher: The trained teacher `keras.Model`, shared by every trial.
        build_student: A function returning a new, uncompiled student that
            outputs logits: `build_student()`, or `build_student(width)`
            when `width` is given (a multiplier, 1 = the default width).
        distillation_losses: The losses (names, configs or objects); the
            temperature is set on each loss that has one. Defaults to "kd".
        temperature: `T > 0`. Defaults to the range (1, 20), log scale.
            `None` keeps the losses' own temperatures.
        student_loss_weight: `α` in [0, 1]. Defaults to the range (0, 1).
        learning_rate: Defaults to 1e-3 (fixed); a range tunes it.
        width: `None` (default: `build_student()` takes no argument), a
            factor, a range or choices.
        distillation_loss_weights: As in `Distiller`.
        teacher_outputs: `"logits"` or `"probabilities"`, as in `Distiller`.
        optimizer: An optimizer name (`"adam"`, `"sgd"`, ...) or a function
            `learning_rate -> optimizer`.
        loss: The student's loss on the labels.
        metrics: The metrics; `"accuracy"` gives the default objective
            `val_accuracy`.
        seed: If set, every trial's student starts from the same weights
            (a fair comparison); leave None with `executions_per_trial > 1`.
        name: The hypermodel's name.

    Example:

    >>> hypermodel = DistillerHyperModel(teacher, make_student, seed=0)
    >>> tuner = make_tuner(hypermodel, "random", max_trials=10, directory="runs/tune")
    >>> tuner.search(train, validation_data=validation, epochs=5)
    """

    def __init__(
        self,
        teacher,
        build_student,
        distillation_losses="kd",
        *,
        temperature=(1.0, 20.0),
        student_loss_weight=(0.0, 1.0),
        learning_rate=1e-3,
        width=None,
        distillation_loss_weights=None,
        teacher_outputs="logits",
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=("accuracy",),
        seed=None,
        name="distiller",
    ):
        super().__init__(name=name, tunable=True)
        if not isinstance(teacher, keras.Model):
            raise ValueError(
                "`teacher` must be a keras.Model. Received: teacher of type "
                f"{type(teacher).__name__}"
            )
        if not callable(build_student):
            raise ValueError(
                "`build_student` must be a function returning a new student model. "
                f"Received: build_student={build_student!r}"
            )
        self.teacher = teacher
        self.build_student = build_student
        self.distillation_losses = distillation_losses
        self.spaces = {
            "temperature": None
            if temperature is None
            else _check_space("temperature", temperature),
            "student_loss_weight": _check_space("student_loss_weight", student_loss_weight),
            "learning_rate": _check_space("learning_rate", learning_rate),
            "width": None if width is None else _check_space("width", width),
        }
        if temperature is not None:
            with_temperature(distillation_losses, 1.0)  # Fails now, not in a trial.
        self.distillation_loss_weights = distillation_loss_weights
        self.teacher_outputs = teacher_outputs
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = list(metrics) if metrics else None
        self.seed = seed

    def _value(self, hp, name):
        space = self.spaces[name]
        if space is None:
            return None
        if isinstance(space, tuple):
            low, high = space
            default = min(max(_SPACES[name]["default"], low), high)
            return hp.Float(
                name,
                low,
                high,
                sampling="log" if _SPACES[name]["log"] and low > 0 else "linear",
                default=default,
            )
        if isinstance(space, list):
            return hp.Choice(name, space)
        return hp.Fixed(name, space)

    def build(self, hp):
        """Returns a compiled, built `TrialDistiller` for the values in `hp`."""
        temperature = self._value(hp, "temperature")
        student_loss_weight = self._value(hp, "student_loss_weight")
        learning_rate = self._value(hp, "learning_rate")
        width = self._value(hp, "width")
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        student = self.build_student() if width is None else self.build_student(width)
        losses = self.distillation_losses
        if temperature is not None:
            losses = with_temperature(losses, temperature)
        distiller = TrialDistiller(
            teacher=self.teacher,
            student=student,
            distillation_losses=losses,
            distillation_loss_weights=self.distillation_loss_weights,
            student_loss_weight=student_loss_weight,
            teacher_outputs=self.teacher_outputs,
        )
        distiller.compile(
            optimizer=_make_optimizer(self.optimizer, learning_rate),
            loss=self.loss,
            metrics=self.metrics,
        )
        _ensure_built(distiller)
        # Built optimizer slots let a checkpoint restore the optimizer too
        # (Hyperband continues a model from its checkpoint).
        distiller.optimizer.build(distiller.trainable_variables)
        return distiller

    def fit(self, hp, model, *args, **kwargs):
        """Trains a trial; raises `FailedTrialError` if the loss turns NaN."""
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks.append(keras.callbacks.TerminateOnNaN())
        history = model.fit(*args, callbacks=callbacks, **kwargs)
        for key, values in history.history.items():
            bad = [i for i, v in enumerate(values) if not math.isfinite(float(v))]
            if bad:
                values_text = ", ".join(f"{k}={v:.4g}" for k, v in sorted(hp.values.items()))
                raise keras_tuner.errors.FailedTrialError(
                    f"`{key}` turned {values[bad[0]]} at epoch {bad[0] + 1} with {values_text}: "
                    "this trial failed; the search goes on."
                )
        return history


def _layers_under(roots):
    """The models and layers in `roots` and, recursively, in their models."""
    found, stack = {}, [root for root in roots if root is not None]
    while stack:
        layer = stack.pop()
        if id(layer) in found:
            continue
        found[id(layer)] = layer
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
    return found


@register_serializable()
class TrialDistiller(Distiller):
    """A `Distiller` whose weight files hold only what training changes.

    Keras Tuner checkpoints a trial with `save_weights` at each epoch that
    improves the objective, and restores the best with `load_weights` (for
    `get_best_models`, and for Hyperband continuing a model). The teacher is
    frozen and shared by every trial: its weights, most of the bytes of a
    whole-Distiller checkpoint, are left out. The files hold the student,
    the adapters and the optimizer's state, so a restored model trains on
    as the saved one would.

    With tf_keras (`TF_USE_LEGACY_KERAS=1`) the weights of the whole
    Distiller are saved, as `Distiller.save_weights` does.

    Args:
        As `Distiller`.
    """

    def _frozen_objects(self):
        """The teachers, their layers and the tap models that read them,
        less anything the student or an adapter also holds."""
        frozen = _layers_under(
            [self.teacher, *self.teachers.values(), self._teacher_taps, *self._member_taps]
        )
        trained = _layers_under([self.student, self._student_taps, *self.adapters])
        return [layer for key, layer in frozen.items() if key not in trained]

    def save_weights(self, filepath, overwrite=True, **kwargs):
        if LEGACY_KERAS:
            return super().save_weights(filepath, overwrite=overwrite, **kwargs)
        return keras.saving.save_weights(
            self, filepath, overwrite=overwrite, objects_to_skip=self._frozen_objects(), **kwargs
        )

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        if LEGACY_KERAS:
            return super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)
        return keras.saving.load_weights(
            self,
            filepath,
            skip_mismatch=skip_mismatch,
            objects_to_skip=self._frozen_objects(),
            **kwargs,
        )


def _make_optimizer(optimizer, learning_rate):
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(learning_rate)
    return keras.optimizers.get(
        {"class_name": optimizer, "config": {"learning_rate": learning_rate}}
    )


def _ensure_built(distiller):
    """Builds a subclassed student on the teacher's input shape if needed.

    Keras Tuner restores weights into a model it has just built (Hyperband
    continues a trial from its checkpoint), and the optimizer's slots are
    made from the variables, so the Distiller must be built before `fit`.
    """
    if distiller.built:
        return
    student = distiller.student
    if not getattr(student, "built", False):
        if not taps.is_symbolic(distiller.teacher):
            raise ValueError(
                "The student is not built and the teacher's input shape is "
                "unknown. Make `build_student` return a built model (build it "
                "on a `keras.Input`, or call `student.build(input_shape)`)."
            )
        # A subclassed model's `build(shape)` creates no variables unless it
        # overrides `build`; a call on one example creates them all.
        spec = distiller.teacher.inputs[0]
        shape = [1 if dim is None else dim for dim in spec.shape]
        student(tf.zeros(shape, dtype=spec.dtype), training=False)
    distiller.built = True


# ----------------------------------------------------------------------
# Tuners and results.


def _objective(objective):
    if isinstance(objective, keras_tuner.Objective):
        return objective
    if not isinstance(objective, str) or not objective:
        raise ValueError(f"`objective` must be a metric name. Received: objective={objective!r}")
    direction = "min" if "loss" in objective or "error" in objective else "max"
    return keras_tuner.Objective(objective, direction=direction)


class _FrozenHeapSearch:
    """Mixed into Keras Tuner's tuners: `search` with the older heap frozen.

    Before each trial Keras Tuner runs two full garbage collections
    (`clear_session` and `gc.collect`), and each scans every Python object
    of the process: TensorFlow's, the teacher's, the caches'. Those outlive
    the search, so for its duration they are moved to the permanent
    generation (`gc.freeze`) and the collections scan only what the trials
    made. In the caching and tuning benchmark (a CNN teacher, MNIST) this
    cut the two collections from 0.75-1.05 s of CPU per trial, more than
    half an epoch of the student, to under 0.1 s.
    """

    def search(self, *args, **kwargs):
        gc.collect()  # Garbage made before the search is not frozen.
        gc.freeze()
        try:
            return super().search(*args, **kwargs)
        finally:
            gc.unfreeze()


_TUNER_CLASSES = {
    name: type(base.__name__, (_FrozenHeapSearch, base), {"__module__": __name__})
    for name, base in TUNERS.items()
}


def make_tuner(
    hypermodel,
    tuner="random",
    *,
    objective="val_accuracy",
    max_trials=10,
    executions_per_trial=1,
    max_epochs=None,
    hyperband_factor=3,
    directory=".",
    project_name="search",
    overwrite=False,
    seed=None,
    max_consecutive_failed_trials=3,
):
    """Makes a Keras Tuner tuner for a `DistillerHyperModel`.

    Args:
        hypermodel: The `DistillerHyperModel` (or any hypermodel).
        tuner: `"random"`, `"bayesian"`, `"hyperband"` or `"grid"`.
        objective: The metric to optimise. Defaults to the student's
            validation accuracy; a name containing "loss" or "error" is
            minimised, others maximised.
        max_trials: The number of trials (not used by Hyperband; for grid,
            None runs the whole grid).
        executions_per_trial: Trainings per trial, averaged.
        max_epochs: Hyperband's most epochs per model (required for it).
        hyperband_factor: Hyperband's reduction factor.
        directory, project_name: Where trials are saved:
            `directory/project_name`.
        overwrite: Start afresh. With False (default) a search found there
            is resumed: finished trials are kept, an interrupted one re-runs.
        seed: The tuner's random seed.
        max_consecutive_failed_trials: Stop after this many failures in a row.

    Returns:
        A `keras_tuner.Tuner`.

    Raises:
        ValueError: for an unknown tuner, or Hyperband without `max_epochs`.
    """
    if tuner not in TUNERS:
        raise ValueError(
            f"Invalid value for argument `tuner`. Expected one of {sorted(TUNERS)}. "
            f"Received: tuner={tuner!r}"
        )
    kwargs = {
        "hypermodel": hypermodel,
        "objective": _objective(objective),
        "executions_per_trial": executions_per_trial,
        "directory": os.fspath(directory),
        "project_name": project_name,
        "overwrite": overwrite,
        "seed": seed,
        "max_consecutive_failed_trials": max_consecutive_failed_trials,
    }
    if tuner == "hyperband":
        if not max_epochs:
            raise ValueError(
                "Hyperband needs `max_epochs`, the most epochs a model trains. "
                f"Received: max_epochs={max_epochs!r}"
            )
        kwargs.update(max_epochs=int(max_epochs), factor=int(hyperband_factor))
    else:
        kwargs["max_trials"] = max_trials
    return _TUNER_CLASSES[tuner](**kwargs)


def search(tuner, train, validation, epochs, verbose=0, callbacks=None):
    """Runs `tuner.search` on (cached) pipelines; returns the tuner."""
    tuner.search(
        train,
        validation_data=validation,
        epochs=epochs,
        verbose=verbose,
        shuffle=False,  # the pipelines shuffle, seeded
        callbacks=list(callbacks or []),
    )
    return tuner


_TABLE_KEYS = ("temperature", "student_loss_weight", "learning_rate", "width")


def trial_rows(tuner):
    """One dict per trial, in start order: id, status, values, score.

    Keys: `trial`, `status` (COMPLETED, FAILED, RUNNING, ...), the
    hyperparameter values, `score` (the best objective value, None for a
    failed trial), `best_epoch`, `message` (first line of a failure).
    """
    oracle = tuner.oracle
    trial_ids = list(getattr(oracle, "start_order", [])) or sorted(oracle.trials)
    rows = []
    for trial_id in trial_ids:
        trial = oracle.trials[trial_id]
        row = {"trial": trial_id, "status": trial.status}
        for key, value in trial.hyperparameters.values.items():
            if not key.startswith("tuner/"):
                row[key] = value
        score = trial.score
        row["score"] = None if score is None or not math.isfinite(score) else float(score)
        row["best_epoch"] = None if trial.best_step is None else int(trial.best_step) + 1
        message = (trial.message or "").strip().splitlines()
        row["message"] = _failure_line(message)
        rows.append(row)
    return rows


def _failure_line(lines):
    for line in reversed(lines):
        if "Error" in line or "NaN" in line or "nan" in line:
            return line.strip()[:200]
    return lines[-1].strip()[:200] if lines else ""


def _table_columns(rows):
    keys = ["trial", "status"] + [k for k in _TABLE_KEYS if any(k in r for r in rows)]
    extra = sorted({k for r in rows for k in r} - set(keys) - {"score", "best_epoch", "message"})
    return keys + extra + ["score", "best_epoch", "message"]


def write_trials(rows, output_dir, objective="val_accuracy"):
    """Writes `trials.csv` and `trials.md`; returns the Markdown table."""
    columns = _table_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write(os.path.join(output_dir, "trials.csv"), buffer.getvalue())

    def cell(key, value):
        if value is None or value == "":
            return "—"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    headers = [objective if c == "score" else c.replace("_", " ") for c in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(c, row.get(c)) for c in columns) + " |")
    table = "\n".join(lines)
    atomic_write(os.path.join(output_dir, "trials.md"), table + "\n")
    return table


def plot_search(rows, path, objective="val_accuracy"):
    """Scatter plot of the search: temperature against α, coloured by score.

    Failed trials are grey crosses; the best trial is circled.
    """
    from tf_distill.report import _pyplot

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    done = [r for r in rows if r.get("score") is not None and "temperature" in r]
    failed = [r for r in rows if r.get("score") is None and "temperature" in r]
    if done:
        points = axis.scatter(
            [r["temperature"] for r in done],
            [r.get("student_loss_weight", 0.5) for r in done],
            c=[r["score"] for r in done],
            cmap="viridis",
            s=60,
            edgecolors="black",
            linewidths=0.5,
        )
        figure.colorbar(points, ax=axis, label=objective)
        best = (
            max(done, key=lambda r: r["score"])
            if "loss" not in objective
            else min(done, key=lambda r: r["score"])
        )
        axis.scatter(
            [best["temperature"]],
            [best.get("student_loss_weight", 0.5)],
            s=250,
            facecolors="none",
            edgecolors="red",
            linewidths=1.5,
            label="best",
        )
    if failed:
        axis.scatter(
            [r["temperature"] for r in failed],
            [r.get("student_loss_weight", 0.5) for r in failed],
            marker="x",
            color="grey",
            s=60,
            label="failed",
        )
    temperatures = [r["temperature"] for r in done + failed]
    if temperatures and min(temperatures) > 0:
        axis.set_xscale("log")
    axis.set(
        xlabel="temperature T (log scale)",
        ylabel="student loss weight α",
        title=f"Search: {len(rows)} trials, colour = {objective}",
        ylim=(-0.05, 1.05),
    )
    axis.grid(alpha=0.3)
    if done or failed:
        axis.legend(loc="best")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)


def best_student(tuner):
    """The best trial's student, with the weights of its best epoch."""
    return tuner.get_best_models(num_models=1)[0].student


def write_results(tuner, output_dir, objective="val_accuracy"):
    """Writes the search's results into `output_dir`.

    Files: `best_hyperparameters.json`, `trials.csv`, `trials.md`,
    `search.png` and `student.keras` (the best student alone, without the
    teacher or optimizer).

    Returns:
        `{"best_hyperparameters": {...}, "best_score": float, "trials":
        rows, "student_path": path, "student": model}`.

    Raises:
        RuntimeError: if no trial completed.
    """
    os.makedirs(output_dir, exist_ok=True)
    rows = trial_rows(tuner)
    write_trials(rows, output_dir, objective)
    plot_search(rows, os.path.join(output_dir, "search.png"), objective)
    completed = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    if not completed:
        raise RuntimeError(
            f"No trial of the search in {output_dir} completed; see trials.md for why each failed."
        )
    best = tuner.get_best_hyperparameters(1)[0].values
    best = {k: v for k, v in best.items() if not k.startswith("tuner/")}
    best_trial = tuner.oracle.get_best_trials(1)[0]
    student = best_student(tuner)
    student_path = os.path.join(output_dir, "student.keras")
    saving.save_model(student, student_path)
    atomic_write_json(
        os.path.join(output_dir, "best_hyperparameters.json"),
        {
            "hyperparameters": best,
            "objective": objective,
            "score": float(best_trial.score),
            "trial": best_trial.trial_id,
        },
    )
    return {
        "best_hyperparameters": best,
        "best_score": float(best_trial.score),
        "best_trial": best_trial.trial_id,
        "trials": rows,
        "student_path": student_path,
        "student": student,
    }


# ----------------------------------------------------------------------
# The `tf-distill tune` command.

# The `tuning:` section of a config: key -> (check, default), as in
# `tf_distill.config.SCHEMA`.
TUNING_SCHEMA = {
    "tuner": (_string(tuple(TUNERS)), "random"),
    "max_trials": (_number(low=1, integer=True), 10),
    "executions_per_trial": (_number(low=1, integer=True), 1),
    "objective": (_string(), "val_accuracy"),
    "temperature_min": (_number(low=0, low_open=True), 1.0),
    "temperature_max": (_number(low=0, low_open=True), 20.0),
    "alpha_min": (_number(low=0, high=1), 0.0),
    "alpha_max": (_number(low=0, high=1), 1.0),
    "tune_learning_rate": (_boolean, False),
    "learning_rate_min": (_number(low=0, low_open=True), 1e-4),
    "learning_rate_max": (_number(low=0, low_open=True), 1e-2),
    "tune_width": (_boolean, False),
    "width_min": (_number(low=0, low_open=True), 0.5),
    "width_max": (_number(low=0, low_open=True), 2.0),
    "hyperband_factor": (_number(low=2, integer=True), 3),
    "overwrite": (_boolean, False),
    "cache": (_string(cache_lib.CACHE_MODES), "auto"),
    "seed": (_optional(_number(low=0, integer=True)), None),
    "max_consecutive_failed_trials": (_number(low=1, integer=True), 3),
    "wait_seconds": (_number(low=0, low_open=True), 600.0),
}


def validate_tuning(section):
    """Checks a config's `tuning:` section and fills in defaults.

    Raises:
        ConfigError: for an unknown key, a wrong type, an out-of-range value
            or a range whose minimum exceeds its maximum.
    """
    given = _mapping("tuning", section or {})
    _check_keys("tuning", given, TUNING_SCHEMA)
    result = {}
    for key, (check, default) in TUNING_SCHEMA.items():
        value = given.get(key, default)
        result[key] = check(f"tuning.{key}", value) if value is not None or key in given else value
    for name in ("temperature", "alpha", "learning_rate", "width"):
        low, high = result[f"{name}_min"], result[f"{name}_max"]
        if low > high:
            raise ConfigError(
                f"`tuning.{name}_min` must be <= `tuning.{name}_max`. Received: "
                f"tuning.{name}_min={low!r}, tuning.{name}_max={high!r}"
            )
    return result


def resolve_role(role=None):
    """`"standalone"`, `"chief"` or `"worker"`, from `role` and the environment.

    Keras Tuner reads `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP` and
    `KERASTUNER_ORACLE_PORT`. `role="chief"` sets the tuner id to `"chief"`
    if unset; `role="worker"` gives a worker without an id a unique one.

    Raises:
        ValueError: for an unknown role, a role without the oracle's address
            in the environment, or a role that contradicts the tuner id.
    """
    environ = os.environ
    if role is None:
        if "KERASTUNER_ORACLE_IP" not in environ:
            return "standalone"
        role = "chief" if "chief" in environ.get("KERASTUNER_TUNER_ID", "") else "worker"
    if role not in ROLES:
        raise ValueError(
            f"Invalid value for argument `role`. Expected one of {list(ROLES)} or None. "
            f"Received: role={role!r}"
        )
    missing = [k for k in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT") if not environ.get(k)]
    if missing:
        raise ValueError(
            f"Running as the search's {role} needs the oracle's address in the "
            f"environment: set {' and '.join(missing)} (Keras Tuner's "
            "distributed mode), e.g. KERASTUNER_ORACLE_IP=127.0.0.1 "
            "KERASTUNER_ORACLE_PORT=8000."
        )
    tuner_id = environ.get("KERASTUNER_TUNER_ID")
    if role == "chief":
        if tuner_id is not None and "chief" not in tuner_id:
            raise ValueError(
                "The chief's KERASTUNER_TUNER_ID must contain 'chief'. Received: "
                f"KERASTUNER_TUNER_ID={tuner_id!r}"
            )
        environ.setdefault("KERASTUNER_TUNER_ID", "chief")
    else:
        if tuner_id is not None and "chief" in tuner_id:
            raise ValueError(
                "A worker's KERASTUNER_TUNER_ID must not contain 'chief'. Received: "
                f"KERASTUNER_TUNER_ID={tuner_id!r}"
            )
        environ.setdefault("KERASTUNER_TUNER_ID", f"tuner-{socket.gethostname()}-{os.getpid()}")
    return role


def _serve_oracle(tuner, poll_seconds=0.2):
    """Serves the chief's oracle until every worker has finished.

    Keras Tuner's own server (`tuner.search` on the chief) checks for the end
    every 20 seconds; this loop checks every `poll_seconds` and stops the
    gRPC server when done.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    tuner.save()
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(tuner.oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"The oracle cannot listen on {address}: is the port in use?")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(tuner.oracle)):
            time.sleep(poll_seconds)
    finally:
        server.stop(grace=1.0)


def _wait_for_oracle(timeout):
    import grpc

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise TimeoutError(
            f"No search oracle answered at {address} within {timeout:g} s. Start "
            "the chief (KERASTUNER_TUNER_ID=chief) first, or raise "
            "`tuning.wait_seconds`."
        ) from None
    finally:
        channel.close()


def _record_trials(tuner):
    """A list that fills with the ids of the trials this process runs."""
    ran = []
    end_trial = tuner.on_trial_end

    def on_trial_end(trial):
        ran.append(trial.trial_id)
        end_trial(trial)

    tuner.on_trial_end = on_trial_end
    return ran


def _student_builder(config, data):
    student = config["student"]
    seed = config["training"]["seed"]

    def build_student(width=None):
        size = student["size"]
        if width is not None:
            size = architectures.SIZES[size] * float(width)
        return architectures.build(
            student["architecture"],
            data.input_shape,
            data.num_classes,
            size=size,
            seed=seed,
            name="student",
        )

    return build_student


def _space(tuning, key, enabled=True):
    if not enabled:
        return None
    low, high = tuning[f"{key}_min"], tuning[f"{key}_max"]
    return (low, high) if low < high else low


def _test_metrics(model, data, batch_size):
    logits = model.predict(data.x_test, batch_size=batch_size, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == data.y_test))
    return {"test_accuracy": accuracy, "test_error": 1.0 - accuracy}


def _train_plain(model, config, data, epochs, learning_rate, verbose):
    """Trains `model` on the labels alone, as `tf-distill run` does."""
    from tf_distill import job as job_lib
    from tf_distill.losses import crossentropy_from_logits

    training = config["training"]
    batch_size = config["data"]["batch_size"]
    model.compile(
        optimizer=job_lib._optimizer(training["optimizer"], learning_rate),
        loss=crossentropy_from_logits,
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(
        data.as_tf_dataset("train", batch_size, shuffle=True, seed=training["seed"]),
        validation_data=data.as_tf_dataset("validation", batch_size),
        epochs=epochs,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles, seeded
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    return time.perf_counter() - start


def _teacher_record(config):
    """What makes a trained teacher: its section, the data and the seed."""
    training = config["training"]
    record = {
        "data": config["data"],
        "teacher": config["teacher"],
        "seed": training["seed"],
        "optimizer": training["optimizer"],
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _search_teacher(config, data, output_dir, overwrite, say, verbose):
    """Loads `teacher.path`, or reuses / trains the search's teacher.

    A resumed search must keep the teacher its first trials distilled from,
    so a teacher trained by an earlier run on the same config is reused.
    """
    path = config["teacher"]["path"]
    if path:
        say(f"Loading the teacher from {path}")
        return saving.load_model(path, unsafe=config.get("unsafe", False))
    saved = os.path.join(output_dir, "teacher.keras")
    record_path = os.path.join(output_dir, "teacher.json")
    fingerprint = _teacher_record(config)
    if os.path.isfile(saved) and os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as handle:
            previous = json.load(handle).get("fingerprint")
        if previous == fingerprint:
            say(f"Reusing the teacher trained earlier: {saved}")
            return saving.load_model(saved)
        if not overwrite and os.path.isdir(os.path.join(output_dir, "search")):
            raise ConfigError(
                f"The search in {output_dir!r} distilled from a teacher of another "
                "config (data, teacher or seed changed). Resuming it would mix "
                "teachers: set `tuning.overwrite: true`, or use another output folder."
            )
    teacher_config = config["teacher"]
    teacher = architectures.build(
        teacher_config["architecture"],
        data.input_shape,
        data.num_classes,
        size=teacher_config["size"],
        seed=config["training"]["seed"],
        name="teacher",
    )
    say(
        f"Training the teacher ({teacher_config['architecture']}/{teacher_config['size']}, "
        f"{teacher.count_params():,} parameters, {teacher_config['epochs']} epochs)"
    )
    seconds = _train_plain(
        teacher, config, data, teacher_config["epochs"], teacher_config["learning_rate"], verbose
    )
    # Saved without its optimizer: workers and resumed runs only infer with it.
    deployed = keras.models.clone_model(teacher)
    deployed.set_weights(teacher.get_weights())
    saving.save_model(deployed, saved)
    atomic_write_json(record_path, {"fingerprint": fingerprint, "train_seconds": seconds})
    say(f"Trained the teacher in {seconds:.1f} s; saved it to {saved}")
    return teacher


def run_from_config(config, output_dir, verbose=1, role=None, log=print):
    """Runs `tf-distill tune`: a search of T and α (and more) from a config.

    The config is a `tf-distill run` config (validated by
    `tf_distill.config`) with a `tuning:` section (`TUNING_SCHEMA`; checked
    here too). The teacher is trained (or loaded from `teacher.path`) once,
    its outputs are cached once, and every trial distills a new student
    for `training.epochs` epochs.

    As the chief of a distributed search, the teacher is saved to
    `output_dir/teacher.keras` before the oracle starts, and the results are
    written when every worker has finished; a worker waits for the oracle
    (`tuning.wait_seconds`), then loads that teacher (or `teacher.path`).

    Args:
        config: A validated config dict.
        output_dir: The search's folder (shared by the chief and workers).
        verbose: 0 (quiet), 1 (progress) or 2 (one line per epoch).
        role: None (standalone, or as the environment says), `"chief"` or
            `"worker"`.
        log: A `print`-like callable for messages.

    Returns:
        A dict: `role`, and for a standalone run or the chief
        `best_hyperparameters`, `best_score`, `trials`, `student_path`,
        `models` (test metrics of the teacher, the tuned student and the
        student trained alone when `training.baseline`) and `summary`;
        written to `output_dir/tuning.json` as well.

    Raises:
        ConfigError: for an invalid `tuning:` section.
        ValueError: for an invalid role set-up.
        TimeoutError: if a worker finds no oracle within `wait_seconds`.
    """
    from tf_distill import job as job_lib

    tuning = validate_tuning(config.get("tuning"))
    role = resolve_role(role)
    say = log if verbose else (lambda *args, **kwargs: None)
    os.makedirs(output_dir, exist_ok=True)
    training = config["training"]
    batch_size = config["data"]["batch_size"]
    keras.utils.set_random_seed(training["seed"])

    if role == "worker":
        say(f"Worker {os.environ['KERASTUNER_TUNER_ID']}: waiting for the oracle")
        _wait_for_oracle(tuning["wait_seconds"])
    data = job_lib.load_data(config["data"])
    if role == "worker":
        # The chief saved its teacher before starting the oracle.
        path = config["teacher"]["path"] or os.path.join(output_dir, "teacher.keras")
        teacher = saving.load_model(path, unsafe=config.get("unsafe", False))
    else:
        teacher = _search_teacher(config, data, output_dir, tuning["overwrite"], say, verbose)

    seed = tuning["seed"]
    if seed is None and tuning["executions_per_trial"] == 1:
        seed = training["seed"]
    losses = config["distillation"]["losses"]
    temperature_losses = any("temperature" in losses_lib.get(loss).get_config() for loss in losses)
    hypermodel = DistillerHyperModel(
        teacher,
        _student_builder(config, data),
        losses,
        temperature=_space(tuning, "temperature", temperature_losses),
        student_loss_weight=_space(tuning, "alpha"),
        learning_rate=(
            _space(tuning, "learning_rate")
            if tuning["tune_learning_rate"]
            else training["learning_rate"]
        ),
        width=_space(tuning, "width") if tuning["tune_width"] else None,
        distillation_loss_weights=config["distillation"]["loss_weights"],
        teacher_outputs=config["teacher"]["teacher_outputs"],
        optimizer=lambda rate: job_lib._optimizer(training["optimizer"], rate),
        seed=seed,
    )
    tuner = make_tuner(
        hypermodel,
        tuning["tuner"],
        objective=tuning["objective"],
        max_trials=tuning["max_trials"],
        executions_per_trial=tuning["executions_per_trial"],
        max_epochs=training["epochs"],
        hyperband_factor=tuning["hyperband_factor"],
        directory=output_dir,
        project_name="search",
        overwrite=tuning["overwrite"] and role != "worker",
        seed=training["seed"],
        max_consecutive_failed_trials=tuning["max_consecutive_failed_trials"],
    )

    ran = []  # The chief runs no trial.
    if role == "chief":
        tuner.oracle.verbose = verbose
        say(
            f"Chief: serving the oracle at {os.environ['KERASTUNER_ORACLE_IP']}:"
            f"{os.environ['KERASTUNER_ORACLE_PORT']}"
        )
        _serve_oracle(tuner)
    else:
        mode, reason = cache_lib.should_cache(
            {**config, "training": {**training, "cache": tuning["cache"]}}, data
        )
        say(reason)
        pipelines = []
        for split in ("train", "validation"):
            shuffle = split == "train"
            if mode == "off":
                pipelines.append(
                    data.as_tf_dataset(split, batch_size, shuffle=shuffle, seed=training["seed"])
                )
                continue
            teacher_cache = cache_lib.build_teacher_cache(
                teacher,
                data,
                split=split,
                distillation_losses=losses,
                teacher_outputs=config["teacher"]["teacher_outputs"],
                directory=os.path.join(output_dir, "teacher_cache", split)
                if mode == "disk"
                else None,
                log=say,
            )
            pipelines.append(
                teacher_cache.dataset(batch_size, shuffle=shuffle, seed=training["seed"])
            )
        ran = _record_trials(tuner)
        start = time.perf_counter()
        search(tuner, pipelines[0], pipelines[1], training["epochs"], verbose=verbose)
        say(
            f"Search finished in {time.perf_counter() - start:.1f} s; this process ran trials {ran}"
        )
        if role == "worker":
            return {"role": role, "tuner_id": os.environ["KERASTUNER_TUNER_ID"], "trials_run": ran}

    results = write_results(tuner, output_dir, tuning["objective"])
    results["trials_run"] = ran
    student = results.pop("student")
    models = [
        {
            "model": "teacher",
            "parameters": int(teacher.count_params()),
            **_test_metrics(teacher, data, batch_size),
        },
        {
            "model": "tuned distilled student",
            "parameters": int(student.count_params()),
            **_test_metrics(student, data, batch_size),
        },
    ]
    if training["baseline"]:
        alone = _student_builder(config, data)(
            results["best_hyperparameters"].get("width") if tuning["tune_width"] else None
        )
        rate = results["best_hyperparameters"].get("learning_rate", training["learning_rate"])
        say(f"Training the student alone ({training['epochs']} epochs) for comparison")
        _train_plain(alone, config, data, training["epochs"], rate, verbose)
        models.append(
            {
                "model": "student alone",
                "parameters": int(alone.count_params()),
                **_test_metrics(alone, data, batch_size),
            }
        )
    summary = _summary(models, results["best_hyperparameters"])
    results.update({"role": role, "models": models, "summary": summary, "tuning": tuning})
    atomic_write_json(os.path.join(output_dir, "tuning.json"), results)
    say(summary)
    return results


def _summary(models, best):
    values = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(best.items())
    )
    by_model = {m["model"]: m for m in models}
    tuned = by_model["tuned distilled student"]
    text = f"Best hyperparameters: {values}. The tuned distilled student's test error is {tuned['test_error']:.4f}"
    alone = by_model.get("student alone")
    if alone:
        change = (alone["test_error"] - tuned["test_error"]) * 100
        text += (
            f", {abs(change):.2f} points {'fewer' if change >= 0 else 'more'} errors than "
            f"the student trained alone ({alone['test_error']:.4f})"
        )
    return text + "."


__all__ = [
    "DistillerHyperModel",
    "TrialDistiller",
    "TUNERS",
    "TUNING_SCHEMA",
    "make_tuner",
    "plot_search",
    "resolve_role",
    "run_from_config",
    "search",
    "trial_rows",
    "validate_tuning",
    "with_temperature",
    "write_results",
]
