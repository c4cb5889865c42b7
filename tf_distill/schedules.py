"""Schedules: a temperature or a loss weight that changes during training.

A schedule is a pure function of the training step and epoch,
`value(step, epoch)`, plus the little state that lets a compiled train step
read it. TextBrewer's temperature and weight schedulers are the model; here
each is a serializable object that any temperature or weight argument
accepts in place of a number:

    tf_distill.LogitsDistillation(temperature=Cosine(8.0, 2.0, duration=10))
    tf_distill.Distiller(..., student_loss_weight=Linear(0.9, 0.1, 10),
                         distillation_loss_weights=[Step([1.0, 2.0], [5])])

**How a step reads it.** Each schedule holds a non-trainable `tf.Variable`.
An epoch-unit schedule's variable is set at each epoch's start by a callback
every distiller adds to `fit` itself (`ScheduleCallback`, below),
and the step reads the variable. A step-unit schedule is computed inside the
step from the optimizer's iteration count, so it changes every step even
with `steps_per_execution`. The history holds each scheduled value per epoch
(`temperature`, `student_loss_weight`, `distillation_loss_weight_0`, ...).

Losses and the `Distiller` read a number-or-schedule with `scheduled(value)`.
"""

import inspect
import math

from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.validation import check_choice
from tf_distill.validation import check_unit_interval

UNITS = ("epoch", "step")


class Schedule:
    """Base class of the schedules: a value per epoch (or per step).

    Subclasses implement `at(t)`: the value at `t` epochs (or steps) from the
    start, with tensor operations, and report their lowest and highest
    values (`bounds`) so that a weight's range can be checked up front.

    Args:
        unit: `"epoch"` (default: the value changes at each epoch's start)
            or `"step"` (every training step, from the optimizer's
            iteration count).
    """

    name = None

    def __init__(self, unit="epoch"):
        check_choice("unit", unit, UNITS)
        self.unit = unit
        self._step = None
        with tf.init_scope():
            self.variable = tf.Variable(
                float(self.value(0, 0)), trainable=False, dtype=tf.float32,
                name=f"{type(self).__name__.lower()}_schedule",
            )

    def at(self, t):
        """The value at `t` (a float32 tensor) epochs or steps."""
        raise NotImplementedError

    @property
    def bounds(self):
        """`(lowest, highest)` value the schedule takes."""
        raise NotImplementedError

    def value(self, step, epoch):
        """The value at this `step` (0-based, counted over the whole run) and
        `epoch` (0-based): a pure function, a float32 scalar tensor."""
        t = step if self.unit == "step" else epoch
        return self.at(tf.cast(t, tf.float32))

    def bind_step(self, iterations):
        """Makes a step-unit schedule read `iterations` (the optimizer's
        iteration count) inside the train step."""
        self._step = iterations

    def update(self, step, epoch):
        """Sets the variable to `value(step, epoch)` (eagerly); returns it as a float."""
        value = float(self.value(step, epoch))
        self.variable.assign(value)
        return value

    def read(self):
        """The value inside a train step: computed from the bound iteration
        count for a step-unit schedule, else the variable."""
        if self.unit == "step" and self._step is not None:
            return self.value(self._step, 0)
        return tf.convert_to_tensor(self.variable)

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __format__(self, spec):
        # `f"{weight:g}"` in summaries: a schedule shows itself.
        return repr(self)

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    __hash__ = object.__hash__


def _check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
    return float(value)


def _check_duration(duration):
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration <= 0:
        raise ValueError(
            f"`duration` must be a number of epochs (or steps) > 0. Received: duration={duration!r}"
        )
    return duration


def _progress(t, duration):
    """`t / duration`, clipped to [0, 1]."""
    return tf.clip_by_value(t / float(duration), 0.0, 1.0)


@register_serializable()
class Constant(Schedule):
    """The same value throughout: `value(step, epoch) = value`.

    Example:

    >>> float(Constant(4.0).value(step=100, epoch=3))
    4.0
    """

    name = "constant"

    def __init__(self, value, unit="epoch"):
        self.constant = _check_number("value", value)
        super().__init__(unit)

    def at(self, t):
        return tf.fill(tf.shape(t), self.constant)

    @property
    def bounds(self):
        return self.constant, self.constant

    def get_config(self):
        return {"value": self.constant, "unit": self.unit}


@register_serializable()
class Linear(Schedule):
    """From `start` to `end` linearly over `duration` epochs (or steps), then `end`.

        value(t) = start + (end − start) · min(t / duration, 1)

    TextBrewer's `linear_growth_weight_scheduler` and
    `linear_decay_weight_scheduler` are `Linear(0, 1, ...)` and
    `Linear(1, 0, ...)`.

    Args:
        start: The value at `t = 0`.
        end: The value from `t = duration` on.
        duration: Epochs (or steps) to go from `start` to `end`, > 0.
        unit: `"epoch"` or `"step"`.

    Example:

    >>> round(float(Linear(0.9, 0.1, duration=4).value(step=0, epoch=2)), 4)
    0.5
    """

    name = "linear"

    def __init__(self, start, end, duration, unit="epoch"):
        self.start = _check_number("start", start)
        self.end = _check_number("end", end)
        self.duration = _check_duration(duration)
        super().__init__(unit)

    def at(self, t):
        return self.start + (self.end - self.start) * _progress(t, self.duration)

    @property
    def bounds(self):
        return min(self.start, self.end), max(self.start, self.end)

    def get_config(self):
        return {"start": self.start, "end": self.end, "duration": self.duration, "unit": self.unit}


@register_serializable()
class Cosine(Linear):
    """From `start` to `end` along half a cosine over `duration`, then `end`.

        value(t) = end + (start − end) · (1 + cos(π · min(t / duration, 1))) / 2

    It changes slowly at both ends. CTKD's curriculum for its
    gradient-reversal weight (Li et al., AAAI 2023) is this cosine from 0 to
    1 over 10 epochs, with epochs counted from 1 as its official script
    counts them (`tf_distill.losses.ctkd.ReversalCurriculum`).

    Args: as `Linear`.

    Example:

    >>> round(float(Cosine(8.0, 2.0, duration=10).value(step=0, epoch=5)), 4)
    5.0
    """

    name = "cosine"

    def at(self, t):
        half = (1.0 + tf.cos(math.pi * _progress(t, self.duration))) / 2.0
        return self.end + (self.start - self.end) * half


@register_serializable()
class Step(Schedule):
    """Piecewise constant: `values[i]` from `boundaries[i - 1]` on.

        value(t) = values[k],  k = #{b in boundaries : t >= b}

    Args:
        values: The values, one more than `boundaries`.
        boundaries: Increasing epochs (or steps) at which the next value
            starts.
        unit: `"epoch"` or `"step"`.

    Example:

    >>> schedule = Step([8.0, 4.0, 2.0], boundaries=[5, 10])
    >>> [float(schedule.value(0, epoch)) for epoch in (4, 5, 10)]
    [8.0, 4.0, 2.0]
    """

    name = "step"

    def __init__(self, values, boundaries, unit="epoch"):
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"`values` must be a non-empty list of numbers. Received: values={values!r}")
        if not isinstance(boundaries, (list, tuple)):
            raise ValueError(f"`boundaries` must be a list of numbers. Received: boundaries={boundaries!r}")
        self.values = [_check_number("values", value) for value in values]
        self.boundaries = [_check_number("boundaries", boundary) for boundary in boundaries]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                "`values` must hold one more entry than `boundaries`. Received: "
                f"values={list(values)!r}, boundaries={list(boundaries)!r}"
            )
        if any(b <= a for a, b in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"`boundaries` must increase. Received: boundaries={list(boundaries)!r}")
        super().__init__(unit)

    def at(self, t):
        passed = tf.add_n([tf.cast(t >= b, tf.int32) for b in self.boundaries]) if self.boundaries else 0
        return tf.gather(tf.constant(self.values, tf.float32), passed)

    @property
    def bounds(self):
        return min(self.values), max(self.values)

    def get_config(self):
        return {"values": list(self.values), "boundaries": list(self.boundaries), "unit": self.unit}


def linear_warmup(weight, warmup_epochs):
    """A loss weight ramped up as `weight · min(e / W, 1)`, epochs `e` from 1.

    DKD's warm-up (Zhao et al., CVPR 2022; mdistiller's `DKD.forward_train`
    scales its loss by `min(epoch / warmup, 1)`, warm-up 20, with `epoch`
    counted from 1): the first epoch trains at `weight / W`, epoch `W` and
    the following ones at `weight`. As a schedule over Keras's 0-based epochs
    `t` it is exactly

        Linear(weight / W, weight, duration=W − 1):
        weight / W + (weight − weight / W) · min(t / (W − 1), 1)
            = weight · min((t + 1) / W, 1)

    (`Linear(0, weight, W)` would start at 0 and reach `weight` one epoch
    late.) Give it as the loss's weight: `Distiller(...,
    distillation_loss_weights=[linear_warmup(1.0, 20)])`, or in a config
    `loss_weights: [{schedule: linear, start: 0.05, end: 1.0, duration: 19}]`.

    Args:
        weight: The weight after the warm-up, a number >= 0.
        warmup_epochs: `W`, a whole number of epochs >= 1 (1: no warm-up).

    Returns:
        A `Linear` schedule, or `weight` as a float when `W = 1`.

    Raises:
        ValueError: for a negative weight or a `warmup_epochs` that is not a
            whole number >= 1.

    Example:

    >>> schedule = linear_warmup(1.0, 4)
    >>> [float(schedule.value(step=0, epoch=t)) for t in range(6)]
    [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    """
    weight = _check_number("weight", weight)
    if weight < 0:
        raise ValueError(f"`weight` must be >= 0. Received: weight={weight!r}")
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 1:
        raise ValueError(
            "`warmup_epochs` must be a whole number of epochs >= 1. "
            f"Received: warmup_epochs={warmup_epochs!r}"
        )
    if warmup_epochs == 1:
        return weight
    return Linear(weight / warmup_epochs, weight, warmup_epochs - 1)


SCHEDULES = {cls.name: cls for cls in (Constant, Linear, Cosine, Step)}


def get(value):
    """A number, a `Schedule`, or a schedule given as data; returns a float or a `Schedule`.

    Accepted data: the short form `{"schedule": "cosine", "start": 8, "end":
    2, "duration": 10}` (what `serialize` writes and configs use) and Keras's
    `{"class_name": "Cosine", "config": {...}}`.

    Raises:
        ValueError: for anything else, an unknown schedule or bad arguments.
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and "schedule" in value:
        config = dict(value)
        kind = config.pop("schedule")
        check_choice("schedule", kind, list(SCHEDULES))
        parameters = inspect.signature(SCHEDULES[kind].__init__).parameters
        valid = [name for name in parameters if name != "self"]
        required = [name for name in valid if parameters[name].default is inspect.Parameter.empty]
        unknown = sorted(set(config) - set(valid))
        missing = [name for name in required if name not in config]
        if unknown or missing:
            raise ValueError(
                f"A {kind!r} schedule takes {valid} ({required} required). "
                f"Received: {value!r}"
            )
        return SCHEDULES[kind](**config)
    if isinstance(value, dict) and value.get("class_name") in {cls.__name__ for cls in SCHEDULES.values()}:
        cls = next(cls for cls in SCHEDULES.values() if cls.__name__ == value["class_name"])
        return cls.from_config(value.get("config") or {})
    raise ValueError(
        "Expected a number, a schedule (tf_distill.schedules.Linear, ...) or a mapping "
        f"{{schedule: {'|'.join(SCHEDULES)}, ...}}. Received: {value!r}"
    )


def serialize(value):
    """A float as is; a schedule as `{"schedule": name, **config}` (read back by `get`)."""
    if isinstance(value, Schedule):
        return {"schedule": value.name, **value.get_config()}
    return value


def scheduled(value):
    """A number as is, or a schedule's current value (a float32 tensor) inside a step."""
    if isinstance(value, Schedule):
        return value.read()
    return value


def can_be_positive(value):
    """Whether a number or schedule is ever > 0 (a term weighted by it then counts)."""
    if isinstance(value, Schedule):
        return value.bounds[1] > 0
    return value > 0


def check_range(name, value, low=None, high=None, low_open=False):
    """`get(value)`, checked to stay within `[low, high]` (or `(low, high]`).

    Raises:
        ValueError: naming the argument, the range and what was received.
    """
    try:
        value = get(value)
    except ValueError as error:
        raise ValueError(f"Invalid value for argument `{name}`: {error}") from None
    lowest, highest = value.bounds if isinstance(value, Schedule) else (value, value)
    too_low = low is not None and (lowest <= low if low_open else lowest < low)
    if too_low or (high is not None and highest > high):
        opening = "(" if low_open else "["
        expected = f"{opening}{low}, {high}]" if high is not None else f"{'> ' if low_open else '>= '}{low}"
        raise ValueError(
            f"`{name}` must be {'in ' if high is not None else ''}{expected}"
            f"{' at every epoch' if isinstance(value, Schedule) else ''}. Received: {name}={value!r}"
        )
    return value


def number_or_schedule(name, value, check, **limits):
    """A number checked by `check(name, value)` (its messages unchanged), or a
    schedule (or its data) checked by `check_range(name, value, **limits)`."""
    if isinstance(value, (Schedule, dict)):
        return check_range(name, value, **limits)
    check(name, value)
    return float(value)


def check_loss_weight(weight):
    """The student-loss weight `α`: a number in [0, 1] (returned as a float)
    or a schedule staying in [0, 1] (see `tf_distill.schedules`)."""
    return number_or_schedule(
        "student_loss_weight", weight, check_unit_interval, low=0.0, high=1.0
    )


def check_loss_weights(weights, count):
    """Validates one weight >= 0 per distillation loss; returns floats (or schedules).

    Args:
        weights: A number, a list of numbers or schedules (see
            `tf_distill.schedules`), or `None` (1 each).
        count: The number of losses.
    """
    if weights is None:
        weights = [1.0] * count
    if not isinstance(weights, (list, tuple)):
        weights = [weights]
    if len(weights) != count:
        raise ValueError(
            f"Number of distillation_loss_weights ({len(weights)}) must "
            f"match number of distillation_losses ({count}). "
            f"Received: distillation_loss_weights={list(weights)!r}"
        )
    weights = [
        check_range("distillation_loss_weights", weight, low=0.0)
        if isinstance(weight, (Schedule, dict))
        else weight
        for weight in weights
    ]
    for weight in weights:
        if isinstance(weight, Schedule):
            continue
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(
                "Each distillation loss weight must be a number >= 0. "
                f"Received: distillation_loss_weights={list(weights)!r}"
            )
    return [weight if isinstance(weight, Schedule) else float(weight) for weight in weights]


class ScheduleCallback(keras.callbacks.Callback):
    """Sets each schedule of a distiller at each epoch's start and logs
    every scheduled (or learned) value at each epoch's end.

    Added to `fit` by every distiller itself (see
    `tf_distill.distillers.DistillerEngine.fit`), for the values its
    `scheduled_values()` names; a step-unit schedule is bound to the
    optimizer's iteration count, which the step reads.
    """

    def on_train_begin(self, logs=None):
        for value in self.model.scheduled_values().values():
            if isinstance(value, Schedule):
                value.bind_step(self.model.optimizer.iterations)

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        step = self._step()
        for value in self.model.scheduled_values().values():
            if isinstance(value, Schedule):
                value.update(step, epoch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # A step-unit schedule: its value at the epoch's last step.
        step = max(self._step() - 1, 0)
        for name, value in self.model.scheduled_values().items():
            if isinstance(value, Schedule):
                logs[name] = value.update(step, epoch) if value.unit == "step" else float(
                    value.variable.numpy()
                )
            else:
                logs[name] = float(value())

__all__ = [
    "Constant",
    "Cosine",
    "Linear",
    "Schedule",
    "ScheduleCallback",
    "Step",
    "can_be_positive",
    "check_loss_weight",
    "check_loss_weights",
    "check_range",
    "get",
    "linear_warmup",
    "number_or_schedule",
    "scheduled",
    "serialize",
]
