"""Callbacks that keep long runs safe: stop on a diverged loss, keep the last
good student, save the student alone during `fit`."""

import math
import os
import warnings

from tf_distill import saving
from tf_distill import validation
from tf_distill.backend import keras
from tf_distill.backend import tf


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; training stopped."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, it remembers where it stopped
    (`self.diverged_at = (epoch, batch, loss)`), so the caller can report it
    and fail with a non-zero exit instead of carrying on with a broken model.
    """

    def __init__(self):
        super().__init__()
        self.diverged_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            self.diverged_at = (self._epoch + 1, batch + 1, loss)
            self.model.stop_training = True


class KeepLastGoodModel(keras.callbacks.Callback):
    """Saves `model` (the student) at each epoch end whose loss is finite.

    The file is replaced atomically, so it always holds the last epoch that
    ended with a finite loss, never a half-written or diverged model.

    Args:
        model_to_save: The model to save (the student, not the Distiller).
        path: The `.keras` file.
    """

    def __init__(self, model_to_save, path):
        super().__init__()
        self.model_to_save = model_to_save
        self.path = path
        self.saved_epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or not math.isfinite(float(loss)):
            return
        if not all(
            bool(tf.reduce_all(tf.math.is_finite(weight)))
            for weight in self.model_to_save.weights
            if tf.as_dtype(weight.dtype).is_floating
        ):
            return
        saving.save_model(self.model_to_save, self.path)
        self.saved_epochs = epoch + 1


class StudentCheckpoint(keras.callbacks.Callback):
    """Saves the distiller's student alone at the end of each epoch.

    `keras.callbacks.ModelCheckpoint` on a distiller saves the whole
    `Distiller`, teachers included; this saves `distiller.student` (for a
    `MutualDistiller`, its `predict_student`), which loads as a plain
    `keras.Model` for deployment or export. As in `ModelCheckpoint`,
    `filepath` may hold `{epoch}` (counted from 1) and the names of the
    epoch's logs (`"student-{epoch:02d}-{val_student_loss:.3f}.keras"`), and
    `save_best_only` keeps only the epochs that improve `monitor`. Each file
    is written atomically (`tf_distill.saving.save_model`): a crash never
    leaves a half-written student.

    Args:
        filepath: The `.keras` file to write, a format string as above.
        monitor: The logged value that decides the best epoch. Defaults to
            `"val_student_loss"`, the label loss on the validation data.
        save_best_only: If `True`, save only when `monitor` improves on the
            best value seen so far. An epoch without `monitor` in its logs
            is skipped with a warning, as in Keras.
        mode: `"min"`, `"max"` or `"auto"` (`"max"` for names holding
            `"acc"`, `"min"` otherwise).
        verbose: 1 prints a line for each saved student; 0 is silent.

    Raises:
        ValueError: for a `filepath` that does not end in `.keras`, or an
            unknown `mode`; when training starts, for a model without a
            `student`.

    Example:

    >>> checkpoint = tf_distill.callbacks.StudentCheckpoint(
    ...     "student-{epoch:02d}.keras", save_best_only=True)
    >>> distiller.fit(train, validation_data=validation, epochs=10,
    ...               callbacks=[checkpoint])
    """

    def __init__(self, filepath, monitor="val_student_loss", save_best_only=False,
                 mode="auto", verbose=0):
        super().__init__()
        filepath = os.fspath(filepath)
        if not filepath.endswith(".keras"):
            raise ValueError(
                "`filepath` must end in `.keras`: the student is saved as a Keras "
                f"model file. Received: filepath={filepath!r}"
            )
        validation.check_choice("mode", mode, ("auto", "min", "max"))
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.filepath = filepath
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.mode = mode
        self.verbose = verbose
        self.best = math.inf if mode == "min" else -math.inf
        self.saved_paths = []

    def on_train_begin(self, logs=None):
        if not isinstance(getattr(self.model, "student", None), keras.Model):
            raise ValueError(
                "StudentCheckpoint saves `model.student`, which this model lacks: "
                f"use it in the `fit` of a Distiller. Received: {type(self.model).__name__}"
            )

    def _improves(self, value):
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                warnings.warn(
                    f"StudentCheckpoint can save the best student only with "
                    f"{self.monitor!r} in the logs, skipping epoch {epoch + 1}. "
                    f"The logs hold: {sorted(logs)}.",
                    stacklevel=2,
                )
                return
            value = float(value)
            if not self._improves(value):
                return
            previous, self.best = self.best, value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        saving.save_model(self.model.student, path)
        self.saved_paths.append(path)
        if self.verbose:
            reason = (f", {self.monitor} improved from {previous:.5f} to {value:.5f}"
                      if self.save_best_only else "")
            print(f"\nEpoch {epoch + 1}: saving the student to {path}{reason}")
