"""Callbacks that keep long runs safe: stop on a diverged loss, keep the last
good student."""

import math

from tf_distill import saving
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
