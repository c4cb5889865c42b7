"""Callbacks that keep long runs safe: stop on a diverged loss, keep the last
good student, save the student alone during `fit`, and let an interrupted
`fit` resume as if never interrupted (`EpochOrder`, `EpochLog`)."""

import json
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

class EpochOrder(keras.callbacks.Callback):
    """Shuffles a pipeline in an order that is a function of `(seed, epoch)`.

    A `shuffle(seed=..., reshuffle_each_iteration=True)` pipeline draws each
    epoch's order from a generator that `BackupAndRestore` does not restore:
    a `fit` resumed at epoch N sees epoch 0's order again, and trains another
    model than the run it resumes. Here the order of epoch `e` is
    `stateless_shuffle(range(n), seed=(seed, e))`, read when Keras starts the
    epoch's iterator (after `on_epoch_begin`), so a resumed `fit` sees the
    same orders as one never interrupted. Pass the callback to `fit` and to
    the pipeline (`DataSplits.as_tf_dataset(order=...)`,
    `TeacherCache.dataset(order=...)`).

    A `fit(steps_per_epoch=...)` on a repeated pipeline keeps one iterator
    across epochs, so its epochs need not start a pass over the data: with
    `examples_per_epoch`, the indices run on forever, pass `p` in the order
    `stateless_shuffle(range(n), seed=(seed, p))`, and a `fit` starting at
    epoch `e` starts at index `e * examples_per_epoch` of that stream.

    Args:
        seed: An integer: the same seed gives the same orders on every run.
        examples_per_epoch: The examples one epoch takes (`steps_per_epoch`
            times the batch size) when the pipeline repeats forever; `None`
            when each epoch is one pass.
    """

    def __init__(self, seed: int, examples_per_epoch: int | None = None):
        super().__init__()
        self.seed = int(seed)
        self.examples_per_epoch = None if examples_per_epoch is None else int(examples_per_epoch)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = int(epoch)

    def indices(self, size: int) -> "tf.data.Dataset":
        """A dataset of the `size` example indices (int64), in this epoch's
        order; with `examples_per_epoch`, the endless stream from this epoch on."""

        def permutation(number):
            seed = tf.stack([tf.constant(self.seed, tf.int64), tf.reshape(number, [])])
            return tf.data.Dataset.from_tensor_slices(
                tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64), seed)
            )

        def epoch(_):
            return tf.py_function(lambda: tf.constant(self.epoch, tf.int64), [], tf.int64)

        if self.examples_per_epoch is not None:

            def stream(_):
                start = epoch(_) * self.examples_per_epoch
                passes = tf.data.Dataset.range(start // size, tf.int64.max)
                return passes.flat_map(permutation).skip(start % size)

            return tf.data.Dataset.from_tensors(0).flat_map(stream)
        # A known length: Keras then counts the epoch's steps instead of
        # warning that the input "ran out of data".
        return tf.data.Dataset.from_tensors(0).flat_map(
            lambda _: permutation(epoch(_))).apply(tf.data.experimental.assert_cardinality(size))


class EpochLog(keras.callbacks.Callback):
    """Keeps every epoch's logs in a file, so a resumed `fit` has the whole history.

    Keras's `History` holds only the epochs of one `fit` call: one resumed by
    `BackupAndRestore` at epoch N forgets epochs 0..N-1. This callback appends
    each finished epoch's logs to `path` (one JSON line, fsynced) and, when
    the first epoch of a `fit` is N > 0, keeps the lines of epochs before N
    (a line written after the last backup, for an epoch that runs again, is
    dropped). Put it before the `BackupAndRestore` callback, whose folder may
    hold `path`.

    Attributes:
        history: `{metric: [value per epoch]}`, every epoch so far.
        resumed_at: The first epoch (0-based) this `fit` ran, if it resumed
            one interrupted after some epochs; else `None`.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.epochs = None
        self.resumed_at = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.epochs is not None:
            return
        self.epochs = [entry for entry in _read_lines(self.path) if entry["epoch"] < epoch]
        self.resumed_at = epoch if epoch > 0 else None
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(entry) + "\n" for entry in self.epochs)

    def on_train_end(self, logs=None):
        if self.epochs is None:  # resumed after its last epoch: nothing ran
            self.epochs = _read_lines(self.path)

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": int(epoch), "logs": {k: float(v) for k, v in (logs or {}).items()}}
        self.epochs.append(entry)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    @property
    def history(self):
        merged = {}
        for entry in self.epochs or ():
            for key, value in entry["logs"].items():
                merged.setdefault(key, []).append(value)
        return merged


def _read_lines(path):
    """The complete JSON lines of `path` (a line cut off by a kill is dropped)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries
