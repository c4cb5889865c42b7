"""The base class of every distillation loss, and the shared reductions."""

import inspect

from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.validation import check_teacher_identifier


def reduce_per_example(values, mask=None):
    """Averages `values` over every axis but the first (the batch).

    Token-level losses produce one value per position (`[batch, time]`); the
    Distiller weighs and averages per example, so positions are averaged here,
    counting only those where `mask` is true.

    Args:
        values: Tensor of shape `[batch, ...]`.
        mask: Optional boolean or 0/1 tensor broadcastable to `values`
            (`[batch, time]` for `[batch, time]` values). Masked positions do
            not count; an example with no valid position gets 0.

    Returns:
        A `[batch]` tensor.
    """
    values = tf.convert_to_tensor(values)
    if values.shape.rank == 0:
        raise ValueError(
            "A distillation loss must keep the batch axis. Received a scalar."
        )
    if values.shape.rank == 1 and mask is None:
        return values
    axes = list(range(1, values.shape.rank))
    if mask is None:
        return tf.reduce_mean(values, axis=axes)
    mask = tf.cast(mask, values.dtype)
    mask = tf.broadcast_to(mask, tf.shape(values))
    total = tf.reduce_sum(values * mask, axis=axes)
    count = tf.reduce_sum(mask, axis=axes)
    return tf.math.divide_no_nan(total, count)


def static_shape(value):
    """The static shape of a tensor, array or KerasTensor, as a TensorShape.

    Keras 3 `KerasTensor`s and NumPy arrays report shapes as tuples, which
    lack `rank` and `is_compatible_with`.
    """
    return tf.TensorShape(value.shape)


class DistillationLoss:
    """Base class of the distillation losses.

    A distillation loss compares what the teacher and the student produce for
    the same batch and returns **one value per example** (shape `[batch]`);
    the `Distiller` weighs, masks and averages them. The math lives in pure
    functions (`tf_distill.losses.soft_label_kl`, ...); a class only carries
    their arguments, which outputs it reads, and its config.

    Which tensors a loss receives is data, not code: `teacher_layer_name` and
    `student_layer_name` name the layers whose outputs it compares (`None`
    means the model's final output, its logits). The `Distiller` taps every
    named layer in the one forward pass it makes of each model.

    Subclasses implement `call(teacher_outputs, student_outputs)`. A subclass
    written for `keras.distillation` that implements only
    `compute_loss(teacher_outputs, student_outputs)` returning a scalar also
    works: the scalar counts for every example of the batch.

    **Which teacher.** With several teachers (see `Distiller`), `teacher`
    names the one whose outputs a loss reads: a teacher's name or index, or
    `None` for the ensemble's logits. A subclass takes `teacher=None` in its
    `__init__`, passes it to `super().__init__(teacher=teacher)` and builds
    its `get_config` on `super().get_config()` (which reports `teacher` when
    set), so a config can name it: `losses.get({"name": "kd", "teacher":
    "resnet"})`. Setting `loss.teacher` after construction works too. A
    subclass whose `__init__` does not take `teacher` (one written for
    `keras.distillation`) still gets it from a config: `from_config` builds
    it without and then sets the attribute.

    Attributes:
        teacher: The teacher the loss reads (a name or an index), or `None`.
        teacher_layer_name: Layer of the teacher whose output the loss reads,
            or `None` for the final output.
        student_layer_name: Layer of the student whose output the loss reads,
            or `None` for the final output.
        needs_adapter: Whether the Distiller should project the student's
            tapped output to the teacher's shape with a trainable adapter.
        call_arguments: The keyword arguments `call` takes besides `mask`,
            among `"labels"` (the batch's labels, or `None`),
            `"example_indices"` (each example's index in the data set, see
            `tf_distill.batches`, or `None`) and `"training"` (whether this
            is a training step). Defaults to none; `needs_labels = True`
            (the older form) asks for `labels`.
        layers: The Keras layers the loss owns (embedding heads, a learned
            temperature, a memory bank), built by the loss itself. The
            `Distiller` tracks them: their trainable variables are trained
            with the student's, they are saved with the Distiller, and they
            are not part of `distiller.student`.

    A loss whose argument is a schedule (`tf_distill.schedules`) reads it
    with `scheduled(...)` in `call`; the history logs it per epoch under
    the attribute's name. A loss may log values of its own (CTKD's learned
    temperature) with a method `logged_values()` returning `{name:
    function}` (see `Distiller.scheduled_values`).
    """

    teacher = None
    teacher_layer_name = None
    student_layer_name = None
    needs_adapter = False
    call_arguments = ()
    layers = ()

    def __init__(self, teacher=None):
        self.teacher = check_teacher_identifier(teacher)

    def call(self, teacher_outputs, student_outputs, mask=None):
        """Returns the per-example loss, shape `[batch]`.

        `mask` (optional, `[batch, ...]`) marks the positions that count in
        token-level losses; example-level losses may ignore it.
        """
        value = self.compute_loss(teacher_outputs, student_outputs)
        value = tf.convert_to_tensor(value)
        if value.shape.rank == 0:
            batch = tf.shape(tf.nest.flatten(student_outputs)[0])[0]
            return tf.fill([batch], tf.cast(value, tf.float32))
        return reduce_per_example(tf.cast(value, tf.float32), mask)

    def __call__(self, teacher_outputs, student_outputs, mask=None, **kwargs):
        # `kwargs`: those of `call_arguments` (see `call_arguments`).
        return self.call(teacher_outputs, student_outputs, mask=mask, **kwargs)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Returns the batch's mean loss, as `keras.distillation` does."""
        if type(self).call is DistillationLoss.call:
            raise NotImplementedError(
                f"{type(self).__name__} must implement `call` (per-example "
                "values) or `compute_loss` (a scalar)."
            )
        return tf.reduce_mean(self.call(teacher_outputs, student_outputs))

    def validate_outputs(self, teacher_outputs, student_outputs):
        """Raises if the two outputs cannot be compared."""
        tf.nest.assert_same_structure(teacher_outputs, student_outputs)

    def validate_model_compatibility(self, teacher, student):
        """Raises if the models cannot feed this loss (named layers exist)."""
        for role, model, name in (
            ("teacher", teacher, self.teacher_layer_name),
            ("student", student, self.student_layer_name),
        ):
            if name is None:
                continue
            from tf_distill.taps import find_layer  # avoid an import cycle

            find_layer(model, name, role=role)

    def get_config(self):
        """The loss's arguments; `teacher` only when one is set."""
        return {} if self.teacher is None else {"teacher": self.teacher}

    @classmethod
    def from_config(cls, config):
        """Builds the loss from `get_config()`'s output.

        A `teacher` in `config` reaches a subclass whose `__init__` does not
        take one (a loss written for `keras.distillation`) as the attribute,
        set after construction.
        """
        config = dict(config)
        if "teacher" not in config or takes_teacher(cls):
            return cls(**config)
        teacher = config.pop("teacher")
        loss = cls(**config)
        loss.teacher = check_teacher_identifier(teacher)
        return loss

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def takes_teacher(cls):
    """Whether `cls.__init__` names a `teacher` argument of its own."""
    return "teacher" in inspect.signature(cls.__init__).parameters


CALL_ARGUMENTS = ("labels", "example_indices", "training")


def call_arguments(loss, **available):
    """The keyword arguments, besides `mask`, that `loss`'s `call` asks for.

    Args:
        loss: A `DistillationLoss`.
        **available: The values the caller has, by name (`labels`,
            `example_indices`, `training`).

    Raises:
        ValueError: if the loss asks for an argument not in `CALL_ARGUMENTS`.
    """
    names = list(getattr(loss, "call_arguments", ()) or ())
    if getattr(loss, "needs_labels", False) and "labels" not in names:
        names.append("labels")
    unknown = [name for name in names if name not in CALL_ARGUMENTS]
    if unknown:
        raise ValueError(
            f"{type(loss).__name__}.call_arguments must name arguments among "
            f"{list(CALL_ARGUMENTS)}. Received: call_arguments={names!r}"
        )
    return {name: available.get(name) for name in names}


def serialize_keras_loss(loss):
    """Serializes a Keras loss given by name, function or object."""
    if loss is None or isinstance(loss, str):
        return loss
    return keras.losses.serialize(loss)


def deserialize_keras_loss(config):
    """Inverse of `serialize_keras_loss`."""
    if config is None or isinstance(config, str):
        return config
    return keras.losses.deserialize(config)
