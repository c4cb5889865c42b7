"""A whole distillation job from a validated config: the `tf-distill run` command.

Data → teacher (loaded, or trained from a named architecture) → the student
trained alone (the baseline) and distilled from the same initial weights →
test metrics, saved student, `metrics.json` and `report.md` with plots.
"""

import hashlib
import json
import os
import time

import numpy as np
import yaml

from tf_distill import architectures
from tf_distill import data as data_lib
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.callbacks import KeepLastGoodModel
from tf_distill.callbacks import StopOnNonFiniteLoss
from tf_distill.callbacks import TrainingDivergedError
from tf_distill.config import ConfigError
from tf_distill.distiller import Distiller
from tf_distill.distiller import crossentropy_from_logits
from tf_distill.io import atomic_write_json
from tf_distill.report import write_report

_OPTIMIZERS = {
    "adam": lambda lr: keras.optimizers.Adam(lr),
    "adamw": lambda lr: keras.optimizers.AdamW(lr),
    "sgd": lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
    "rmsprop": lambda lr: keras.optimizers.RMSprop(lr),
}


def _optimizer(name, learning_rate):
    return _OPTIMIZERS[name](learning_rate)


def load_data(data_config):
    """Loads the data set a config's `data:` section names."""
    options = {
        key: data_config[key]
        for key in ("validation_size", "train_size", "test_size", "data_dir", "seed")
        if data_config.get(key) is not None
    }
    return data_lib.load(data_config["source"], **options)


def _check_output_classes(model, role, num_classes):
    shape = tuple(model.outputs[0].shape) if getattr(model, "outputs", None) else None
    if shape is not None and shape[-1] != num_classes:
        raise ConfigError(
            f"The {role} outputs {shape[-1]} classes but the data has "
            f"{num_classes}. Received: {role} output shape {shape}."
        )


def _evaluate(model, dataset, x_test, y_test, batch_size):
    logits = model.predict(x_test, batch_size=batch_size, verbose=0)
    loss = float(np.mean(crossentropy_from_logits(y_test, logits).numpy()))
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == y_test))
    return {"test_accuracy": accuracy, "test_error": 1.0 - accuracy, "test_loss": loss}


def _without_training_state(model):
    """A copy of `model` without its optimizer, as it would be deployed."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _history(history):
    return {k: [float(v) for v in values] for k, values in history.history.items()}


STATE_FILE = "run_state.json"


def config_hash(config):
    """A fingerprint of everything in `config` that changes the results."""
    relevant = {k: v for k, v in config.items() if k not in ("output",)}
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Job:
    """Runs one config. `Job(config).run()` returns the metrics dict."""

    def __init__(self, config, verbose=1, log=print):
        self.config = config
        self.verbose = verbose
        self.log = log if verbose else (lambda *args, **kwargs: None)
        self.output = config["output"]
        self.hash = config_hash(config)
        self.state = {"config_hash": self.hash, "phases": {}}

    def _path(self, *names):
        return os.path.join(self.output, *names)

    def _load_state(self):
        """Reads the state of an interrupted run; refuses another config's."""
        path = self._path(STATE_FILE)
        if not os.path.exists(path):
            # Written first, so that even a backup of an interrupted first
            # phase is tied to this config.
            atomic_write_json(path, self.state)
            return
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        if state.get("config_hash") != self.hash:
            raise ConfigError(
                f"The output folder {self.output!r} holds a run of a different "
                f"config (fingerprint {state.get('config_hash')} there, "
                f"{self.hash} now). Resuming with a changed config would mix "
                "results: use another `--output`, or delete the folder to start over."
            )
        self.state = state
        done = ", ".join(state["phases"]) or "nothing"
        self.log(f"Resuming the run in {self.output} (done: {done})")

    def _save_phase(self, phase, **values):
        self.state["phases"][phase] = values
        atomic_write_json(self._path(STATE_FILE), self.state)

    def _done(self, phase, filename):
        return phase in self.state["phases"] and os.path.exists(self._path(filename))

    def _backup(self, phase):
        # Restores the last finished epoch of an interrupted phase.
        return keras.callbacks.BackupAndRestore(
            self._path(".backup", phase), double_checkpoint=True
        )

    def _fit_plain(self, model, data, epochs, learning_rate, optimizer, seed, phase):
        model.compile(
            optimizer=_optimizer(optimizer, learning_rate),
            loss=crossentropy_from_logits,
            metrics=["accuracy"],
            jit_compile=self._jit(),
        )
        batch = self.config["data"]["batch_size"]
        start = time.perf_counter()
        history = model.fit(
            data.as_tf_dataset("train", batch, shuffle=True, seed=seed),
            validation_data=data.as_tf_dataset("validation", batch),
            epochs=epochs,
            verbose=self.verbose,
            shuffle=False,  # the pipeline shuffles, seeded
            callbacks=[self._backup(phase), keras.callbacks.TerminateOnNaN()],
        )
        return _history(history), time.perf_counter() - start

    def _jit(self):
        value = self.config["training"]["jit_compile"]
        return "auto" if value is None else value

    def teacher(self, data):
        """Loads or trains the teacher; returns `(model, history, seconds)`."""
        config = self.config["teacher"]
        if config["path"]:
            self.log(f"Loading the teacher from {config['path']}")
            model = saving.load_model(config["path"], unsafe=self.config["unsafe"])
            _check_output_classes(model, "teacher", data.num_classes)
            return model, {}, 0.0
        if self._done("teacher", "teacher.keras"):
            phase = self.state["phases"]["teacher"]
            self.log("Reusing the teacher trained before the interruption")
            model = saving.load_model(self._path("teacher.keras"))
            return model, phase["history"], phase["seconds"]
        model = architectures.build(
            config["architecture"],
            data.input_shape,
            data.num_classes,
            size=config["size"],
            seed=self.config["training"]["seed"],
            name="teacher",
        )
        self.log(
            f"Training the teacher ({config['architecture']}/{config['size']}, "
            f"{model.count_params():,} parameters, {config['epochs']} epochs)"
        )
        history, seconds = self._fit_plain(
            model, data, config["epochs"], config["learning_rate"],
            self.config["training"]["optimizer"], self.config["training"]["seed"], "teacher",
        )
        _check_finite(history, "teacher")
        saving.save_model(_without_training_state(model), self._path("teacher.keras"))
        self._save_phase("teacher", history=history, seconds=seconds)
        return model, history, seconds

    def baseline(self, data, initial_weights):
        """Trains the student alone from `initial_weights`."""
        training = self.config["training"]
        if self._done("baseline", "student_alone.keras"):
            phase = self.state["phases"]["baseline"]
            self.log("Reusing the student trained alone before the interruption")
            return saving.load_model(self._path("student_alone.keras")), phase["history"], phase["seconds"]
        model = self._student(data, "student_alone")
        model.set_weights(initial_weights)
        self.log(
            f"Training the student alone ({model.count_params():,} parameters, "
            f"{training['epochs']} epochs)"
        )
        history, seconds = self._fit_plain(
            model, data, training["epochs"], training["learning_rate"],
            training["optimizer"], training["seed"], "baseline",
        )
        _check_finite(history, "student trained alone")
        saving.save_model(_without_training_state(model), self._path("student_alone.keras"))
        self._save_phase("baseline", history=history, seconds=seconds)
        return model, history, seconds

    def _student(self, data, name):
        config = self.config["student"]
        return architectures.build(
            config["architecture"],
            data.input_shape,
            data.num_classes,
            size=config["size"],
            seed=self.config["training"]["seed"],
            name=name,
        )

    def distill(self, teacher, student, data):
        """Distills into `student`; returns `(distiller, history, seconds)`."""
        config = self.config["distillation"]
        training = self.config["training"]
        distiller = Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=config["losses"],
            distillation_loss_weights=config["loss_weights"],
            student_loss_weight=config["student_loss_weight"],
            teacher_outputs=self.config["teacher"]["teacher_outputs"],
        )
        distiller.compile(
            optimizer=_optimizer(training["optimizer"], training["learning_rate"]),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=self._jit(),
        )
        batch = self.config["data"]["batch_size"]
        diverged = StopOnNonFiniteLoss()
        last_good = self._path("student_last_good.keras")
        start = time.perf_counter()
        history = distiller.fit(
            data.as_tf_dataset("train", batch, shuffle=True, seed=training["seed"]),
            validation_data=data.as_tf_dataset("validation", batch),
            epochs=training["epochs"],
            verbose=self.verbose,
            shuffle=False,  # the pipeline shuffles, seeded
            callbacks=[diverged, KeepLastGoodModel(student, last_good), self._backup("distill")],
        )
        if diverged.diverged_at is not None:
            epoch, step, loss = diverged.diverged_at
            kept = (
                f"The last good student is kept at {last_good}."
                if os.path.exists(last_good)
                else "No epoch finished with a finite loss, so no student was saved."
            )
            raise TrainingDivergedError(
                f"Distillation diverged: the loss became {loss} at epoch {epoch}, "
                f"step {step}. {kept} Lower `training.learning_rate` or the "
                "temperature, and check the data for extreme values."
            )
        return distiller, _history(history), time.perf_counter() - start

    def run(self):
        """Runs the job; writes the output folder; returns the metrics."""
        with _strategy(self.config["training"]["distribute"]).scope():
            return self._run()

    def _run(self):
        os.makedirs(self.output, exist_ok=True)
        self._load_state()
        training = self.config["training"]
        keras.utils.set_random_seed(training["seed"])
        data = load_data(self.config["data"])
        batch = self.config["data"]["batch_size"]
        self.log(
            f"Data: {data.name}: {len(data.x_train)} train, {len(data.x_val)} validation, "
            f"{len(data.x_test)} test, {data.num_classes} classes, input {data.input_shape}"
        )
        teacher, teacher_history, teacher_seconds = self.teacher(data)
        # Validate the distillation set-up before spending time on a baseline.
        student = self._student(data, "student")
        _check_output_classes(student, "student", data.num_classes)
        Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=self.config["distillation"]["losses"],
            distillation_loss_weights=self.config["distillation"]["loss_weights"],
            student_loss_weight=self.config["distillation"]["student_loss_weight"],
            teacher_outputs=self.config["teacher"]["teacher_outputs"],
        )
        histories, rows = {}, []
        row = {"model": "teacher", "parameters": int(teacher.count_params()),
               "train_seconds": teacher_seconds}
        row.update(_evaluate(teacher, None, data.x_test, data.y_test, batch))
        if not self.config["teacher"]["path"]:
            row["file_bytes"] = os.path.getsize(self._path("teacher.keras"))
        rows.append(row)

        initial_weights = student.get_weights()
        if training["baseline"]:
            baseline, history, seconds = self.baseline(data, initial_weights)
            histories["student alone"] = history
            row = {"model": "student alone", "parameters": int(baseline.count_params()),
                   "train_seconds": seconds}
            row.update(_evaluate(baseline, None, data.x_test, data.y_test, batch))
            row["file_bytes"] = os.path.getsize(self._path("student_alone.keras"))
            rows.append(row)

        self.log(f"Distilling into the student ({training['epochs']} epochs)")
        distiller, history, seconds = self.distill(teacher, student, data)
        histories["distilled student"] = history
        row = {"model": "distilled student", "parameters": int(student.count_params()),
               "train_seconds": seconds}
        row.update(_evaluate(student, None, data.x_test, data.y_test, batch))
        row["file_bytes"] = saving.save_model(student, self._path("student.keras"))
        rows.append(row)
        if os.path.exists(self._path("student_last_good.keras")):
            os.remove(self._path("student_last_good.keras"))

        results = {
            "data": {
                "name": data.name,
                "train": len(data.x_train),
                "validation": len(data.x_val),
                "test": len(data.x_test),
                "num_classes": data.num_classes,
            },
            "models": rows,
            "histories": {"teacher": teacher_history, **histories},
        }
        results["summary"] = _summary(rows)
        if self.config.get("export"):
            results["export"] = self.export(student, data)
        atomic_write_json(os.path.join(self.output, "metrics.json"), results)
        write_report(
            self.output, results, histories,
            config_text=yaml.safe_dump(self.config, sort_keys=False),
        )
        return results

    def export(self, student, data):
        """Exports the distilled student to LiteRT as the `export:` section says."""
        from tf_distill.export import export_litert

        config = self.config["export"]
        size = config["representative_size"]
        path = os.path.join(self.output, f"student_{config['quantization']}.tflite")
        self.log(f"Exporting the student to LiteRT ({config['quantization']}): {path}")
        report = export_litert(
            student,
            path,
            quantization=config["quantization"],
            representative_data=data.x_train[:size],
            validation_data=(data.x_test, data.y_test),
            max_accuracy_drop=config["max_accuracy_drop"],
            int8_io=config["int8_io"],
            allow_tf_ops=config["allow_tf_ops"],
            latency_runs=config["latency_runs"],
            report_path=os.path.join(self.output, "export.md"),
        )
        result = report.to_dict()
        result["markdown"] = report.to_markdown()
        return result


def _strategy(name):
    """The `tf.distribute` strategy a config's `training.distribute` names."""
    from tf_distill.backend import tf

    if name == "mirrored":
        # Every local GPU (or the CPU): the loss is averaged over the global batch.
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _check_finite(history, role):
    losses = history.get("loss") or []
    if any(not np.isfinite(value) for value in losses):
        raise TrainingDivergedError(
            f"Training the {role} diverged: its loss became {losses[-1]}. Lower "
            "the learning rate, and check the data for extreme values."
        )


def _summary(rows):
    by_model = {row["model"]: row for row in rows}
    distilled = by_model.get("distilled student")
    alone = by_model.get("student alone")
    if not distilled or not alone:
        return None
    change = (alone["test_error"] - distilled["test_error"]) * 100
    direction = "fewer" if change >= 0 else "more"
    return (
        f"The distilled student makes {abs(change):.2f} points {direction} test errors "
        f"than the same student trained alone ({distilled['test_error']:.4f} vs "
        f"{alone['test_error']:.4f}), with "
        f"{by_model['teacher']['parameters'] / distilled['parameters']:.1f}× fewer "
        "parameters than the teacher."
    )


def run(config, verbose=1, log=print):
    """Runs a validated config (see `tf_distill.config`); returns the metrics."""
    return Job(config, verbose=verbose, log=log).run()
