"""Self-distillation from the student's own past: an EMA teacher.

The teacher is a frozen copy of the student whose weights follow an
exponential moving average of the student's weights, updated after each
optimizer step (the "mean teacher" of Tarvainen & Valpola, NeurIPS 2017;
the EMA teacher of BYOL and DINO). No pretrained model is needed.
"""

import copy

from tf_distill import teachers as teachers_lib
from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.distillers.distiller import Distiller
from tf_distill.validation import check_non_negative_integer
from tf_distill.validation import check_unit_interval


def ema_decay(decay, step, warmup_steps=0, adaptive=False):
    """The EMA decay used after optimizer step `step` (1 after the first).

    Args:
        decay: The target decay `d` in [0, 1].
        step: The number of optimizer steps taken, a scalar tensor or int.
        warmup_steps: For `step <= warmup_steps` the decay is 0: the
            teacher copies the student.
        adaptive: Use `min(d, (1 + step) / (10 + step))`, the schedule of
            `tf.train.ExponentialMovingAverage` with `num_updates`: a
            young teacher follows the student closely.

    Returns:
        A float32 scalar tensor.
    """
    step = tf.cast(step, tf.float32)
    value = tf.constant(decay, tf.float32)
    if adaptive:
        value = tf.minimum(value, (1.0 + step) / (10.0 + step))
    if warmup_steps:
        value = tf.where(step <= float(warmup_steps), 0.0, value)
    return value


def clone_frozen(model):
    """A copy of `model` with its weights, frozen (`trainable=False`)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.trainable = False
    return clone


@register_serializable()
class SelfDistiller(Distiller):
    """Distils a student from an exponential moving average of itself.

    The teacher is a frozen clone of the student. After each optimizer
    step its weights move towards the student's:

        θ_teacher ← d · θ_teacher + (1 − d) · θ_student

    inside the training step, with `d` from `ema_decay` (constant `decay`,
    optionally `min(decay, (1 + t)/(10 + t))` at step `t`, and `d = 0` for
    the first `warmup_steps` steps). Every weight of the student is
    averaged, non-trainable ones (batch-norm statistics) included; integer
    variables are copied. The teacher runs in inference mode and is never
    changed by gradients. Everything else is the `Distiller`'s: any
    distillation loss (logits or features: the teacher has the student's
    layer names), `student_loss_weight`, the metrics.

    Cached teacher outputs (`tf_distill.cache_teacher_outputs`) are refused:
    the teacher changes at every step.

    Save or export `distiller.student` alone to deploy; `distiller.teacher`
    (the averaged model) often generalizes better and can be saved too.

    Args:
        student: A built `keras.Model` outputting logits.
        decay: `d` in [0, 1]. Defaults to 0.999.
        distillation_losses: As for `Distiller`. Defaults to
            `LogitsDistillation(temperature=1.0)`.
        distillation_loss_weights: As for `Distiller`.
        student_loss_weight: As for `Distiller`. Defaults to 0.5.
        warmup_steps: Number of first steps during which the teacher copies
            the student (`d = 0`). Defaults to 0.
        adaptive_decay: Use `min(decay, (1 + t)/(10 + t))` at step `t`.
        adapter_batch_norm: As for `Distiller`.
        name: The model's name.

    Raises:
        ValueError: for a student that is not a built Keras model, or
            invalid `decay` or `warmup_steps`.

    Example:

    ```python
    distiller = tf_distill.SelfDistiller(
        student,
        decay=0.99,
        distillation_losses=tf_distill.LogitsDistillation(temperature=2.0),
        student_loss_weight=0.5,
        adaptive_decay=True,
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    distiller.fit(x_train, y_train, epochs=5)
    distiller.student.save("student.keras")
    ```
    """

    def __init__(
        self,
        student=None,
        decay=0.999,
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=0.5,
        warmup_steps=0,
        adaptive_decay=False,
        adapter_batch_norm=False,
        name="self_distiller",
        **kwargs,
    ):
        if not isinstance(student, keras.Model):
            raise ValueError(
                "`student` must be a keras.Model. Received: "
                f"student={student!r} of type {type(student).__name__}"
            )
        if not student.built or not student.weights:
            raise ValueError(
                f"`student` ({student.name!r}) must be built: its EMA teacher "
                "starts from a copy of its weights. Give it an `Input` or call "
                "it on a batch first."
            )
        if teachers_lib.applies_softmax(student):
            raise ValueError(
                f"The student {student.name!r} ends with a softmax. A student "
                "must output logits (apply the softmax at inference instead)."
            )
        check_unit_interval("decay", decay)
        check_non_negative_integer("warmup_steps", warmup_steps)
        if distillation_losses is None:
            distillation_losses = {"name": "kd", "temperature": 1.0}
        super().__init__(
            teacher=clone_frozen(student),
            student=student,
            distillation_losses=distillation_losses,
            distillation_loss_weights=distillation_loss_weights,
            student_loss_weight=student_loss_weight,
            adapter_batch_norm=adapter_batch_norm,
            name=name,
            **kwargs,
        )
        self.decay = float(decay)
        self.warmup_steps = warmup_steps
        self.adaptive_decay = bool(adaptive_decay)

    def current_decay(self):
        """The decay the next teacher update uses (after the step in progress)."""
        return ema_decay(
            self.decay, self.optimizer.iterations, self.warmup_steps, self.adaptive_decay
        )

    def update_teacher(self):
        """Moves the teacher's weights towards the student's (one EMA step)."""
        decay = self.current_decay()
        for average, weight in zip(self.teacher.weights, self.student.weights):
            if not tf.as_dtype(average.dtype).is_floating:
                average.assign(weight)
                continue
            rate = tf.cast(decay, average.dtype)
            average.assign(rate * average + (1.0 - rate) * tf.cast(weight, average.dtype))

    def prepare_batch(self, batch, training):
        """Refuses cached teacher outputs in training: the teacher changes."""
        if training and batch.teacher_outputs is not None:
            raise ValueError(
                "A SelfDistiller cannot train from cached teacher outputs: its "
                "teacher changes at every step. Pass the inputs alone."
            )
        return batch

    def after_train_step(self):
        self.update_teacher()

    def get_config(self):
        config = super().get_config()
        for key in ("teacher", "teacher_outputs"):
            config.pop(key, None)
        config.update(
            decay=self.decay,
            warmup_steps=self.warmup_steps,
            adaptive_decay=self.adaptive_decay,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = copy.deepcopy(config)
        config["student"] = keras.saving.deserialize_keras_object(
            config["student"], custom_objects=custom_objects
        )
        config["distillation_losses"] = [
            keras.saving.deserialize_keras_object(loss, custom_objects=custom_objects)
            for loss in config["distillation_losses"]
        ]
        return cls(**config)
