"""The Distiller's scheduled values: set as training goes, logged in the history.

Kept apart from the `Distiller`: a schedule's place in a training step is one
read (`tf_distill.schedules.scheduled`); setting it at each epoch and
logging it is the work of a callback that `fit` adds by itself.
"""

from tf_distill.backend import keras
from tf_distill.schedules import Schedule


def _entries(distiller):
    """`[(name, index or None, Schedule or a function returning a float)]`."""
    entries = []
    if isinstance(distiller.student_loss_weight, Schedule):
        entries.append(("student_loss_weight", None, distiller.student_loss_weight))
    for index, weight in enumerate(distiller.distillation_loss_weights):
        if isinstance(weight, Schedule):
            entries.append((f"distillation_loss_weight_{index}", None, weight))
    for index, loss in enumerate(distiller.distillation_losses):
        for attribute, value in vars(loss).items():
            if isinstance(value, Schedule):
                entries.append((attribute, index, value))
        for name, read in dict(getattr(loss, "logged_values", dict)()).items():
            entries.append((name, index, read))
    return entries


def logged_values(distiller):
    """`{history name: Schedule or function}` for what the history logs.

    A loss's schedules are named after their attribute (`temperature`), and
    a loss may add values of its own with a `logged_values()` method
    returning `{name: function}` (CTKD's learned temperature). A name two
    losses share takes the loss's index: `temperature_0`, `temperature_1`.
    The Distiller's weights are `student_loss_weight` and
    `distillation_loss_weight_<i>`.
    """
    entries = _entries(distiller)
    counts = {}
    for name, _, _ in entries:
        counts[name] = counts.get(name, 0) + 1
    return {
        (name if index is None or counts[name] == 1 else f"{name}_{index}"): value
        for name, index, value in entries
    }


class ScheduleCallback(keras.callbacks.Callback):
    """Sets each schedule of the Distiller at each epoch's start and logs
    every scheduled (or learned) value at each epoch's end.

    Added to `fit` by the `Distiller` itself; a step-unit schedule is bound
    to the optimizer's iteration count, which the step reads.
    """

    def on_train_begin(self, logs=None):
        for value in logged_values(self.model).values():
            if isinstance(value, Schedule):
                value.bind_step(self.model.optimizer.iterations)

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        step = self._step()
        for value in logged_values(self.model).values():
            if isinstance(value, Schedule):
                value.update(step, epoch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # A step-unit schedule: its value at the epoch's last step.
        step = max(self._step() - 1, 0)
        for name, value in logged_values(self.model).items():
            if isinstance(value, Schedule):
                logs[name] = value.update(step, epoch) if value.unit == "step" else float(
                    value.variable.numpy()
                )
            else:
                logs[name] = float(value())


def with_schedule_callback(distiller, callbacks):
    """`callbacks` (`None`, a list or a `CallbackList`) with a
    `ScheduleCallback` for `distiller` added, when it has something to log."""
    if not logged_values(distiller):
        return callbacks
    callback = ScheduleCallback()
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callback.set_model(distiller)
        callbacks.append(callback)
        return callbacks
    return [*(callbacks or []), callback]


class ScheduledFit:
    """Mixin of `Distiller`: `fit` adds the `ScheduleCallback` itself."""

    def fit(self, *args, **kwargs):
        # `callbacks` is `fit`'s sixth positional argument.
        if len(args) > 5:
            args = (*args[:5], with_schedule_callback(self, args[5]), *args[6:])
        else:
            kwargs["callbacks"] = with_schedule_callback(self, kwargs.get("callbacks"))
        return super().fit(*args, **kwargs)
