"""Curriculum temperature KD (CTKD): a temperature learned against the student.

Li et al., "Curriculum Temperature for Knowledge Distillation" (AAAI 2023);
the global variant of the official code (github.com/zhengli97/CTKD,
`models/temp_global.py`). The temperature is a learned scalar

    T = min_temperature + temperature_range · sigmoid(θ)

read through a gradient reversal layer: the student minimises the KD loss
at `T` while `θ` follows the reversed gradient, so it *maximises* the loss
(makes the task harder). The reversal's weight `λ` follows a cosine
curriculum from 0 to `lambda_max` over `curriculum_epochs` epochs: easy
first, harder as the student learns. Epochs count from 1, as in the official
script (`gradient_decay.get_value(epoch)` for `epoch in range(1, epochs +
1)`), so the first epoch already trains `θ` at `λ(1) > 0`.
"""

import math

from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.base import DistillationLoss
from tf_distill.losses.registry import register
from tf_distill.losses.registry import register_former_name
from tf_distill.losses.soft_labels import soft_label_kl
from tf_distill.schedules import Cosine
from tf_distill.schedules import scheduled
from tf_distill.validation import check_positive


def reverse_gradient(x, coefficient):
    """The identity forward; backward, the gradient times `−coefficient`.

    The gradient reversal layer of Ganin & Lempitsky, "Unsupervised Domain
    Adaptation by Backpropagation" (ICML 2015), as CTKD uses it.

    Args:
        x: A float tensor or variable.
        coefficient: `λ`, a number or scalar tensor (no gradient flows to it).

    Returns:
        `x`, whose gradient is reversed and scaled by `λ`.

    Example:

    >>> theta = tf.Variable(2.0)
    >>> with tf.GradientTape() as tape:
    ...     y = 3.0 * reverse_gradient(theta, 0.5)
    >>> float(tape.gradient(y, theta))
    -1.5
    """
    coefficient = tf.stop_gradient(tf.cast(coefficient, tf.float32))

    @tf.custom_gradient
    def reversed_identity(value):
        def gradient(upstream):
            return -tf.cast(coefficient, upstream.dtype) * upstream

        return tf.identity(value), gradient

    return reversed_identity(tf.convert_to_tensor(x))


class ReversalCurriculum(Cosine):
    """CTKD's `λ`: a cosine from `start` to `end`, epochs counted from 1.

        λ(e) = end + (start − end) · (1 + cos(π · min(e / duration, 1))) / 2,
        e = epoch + 1  (the training's first epoch, 0 for Keras, is e = 1)

    The official code's `CosineDecay.get_value(epoch)`, called with `epoch`
    from 1 (`train_student.py`): at `start = 0`, `end = 1` and
    `duration = 10`, λ is 0.024, 0.095, ... in the first epochs and reaches
    1 at the tenth. A plain `Cosine` counts Keras's 0-based epochs, which
    would run one epoch late (λ = 0 in the first epoch). In `"step"` units
    steps count from 1 likewise.

    Args: as `tf_distill.schedules.Cosine`.

    Example:

    >>> [round(float(ReversalCurriculum(0.0, 1.0, 2).value(0, epoch)), 4) for epoch in (0, 1, 2)]
    [0.5, 1.0, 1.0]
    """

    def at(self, t):
        return super().at(t + 1.0)


@register_serializable()
class GlobalTemperature(keras.layers.Layer):
    """One learned temperature `T = minimum + range · sigmoid(θ)` for every example.

    The range keeps `T` within `(minimum, minimum + range)` whatever `θ`
    becomes. Called with the reversal weight `λ`, it returns `T` with `θ`'s
    gradient reversed (see `reverse_gradient`).

    Args:
        minimum: The lowest temperature, > 0. The official code's `t_start`, 1.
        range: The width of the temperature's range, > 0 (`t_end`, 20).
        initial_logit: `θ` at the start. The official code starts at 1
            (`T ≈ 15.6` with the defaults).
    """

    def __init__(self, minimum=1.0, range=20.0, initial_logit=1.0, **kwargs):  # noqa: A002
        # float32 under a mixed-precision policy too: `T` divides float32 logits.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.minimum = float(minimum)
        self.range = float(range)
        self.initial_logit = float(initial_logit)

    def build(self, input_shape=None):
        self.logit = self.add_weight(
            name="logit",
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(self.initial_logit),
        )
        self.built = True

    def call(self, coefficient):
        if not self.built:
            self.build()
        logit = reverse_gradient(self.logit, coefficient)
        return self.minimum + self.range * tf.sigmoid(logit)

    def value(self):
        """The current temperature, a float."""
        if not self.built:
            self.build()
        return self.minimum + self.range * float(tf.sigmoid(tf.convert_to_tensor(self.logit)))

    def get_config(self):
        config = super().get_config()
        config.update(minimum=self.minimum, range=self.range, initial_logit=self.initial_logit)
        return config


@register(
    "ctkd",
    "Curriculum temperature KD: T²·KL at a temperature learned through gradient reversal",
)
@register_serializable()
class CurriculumTemperatureDistillation(DistillationLoss):
    """Curriculum temperature knowledge distillation (Li et al., AAAI 2023).

    Hinton's KD, `T² · KL(softmax(t/T) ‖ softmax(s/T))` (see
    `soft_label_kl`), at a temperature that is learned adversarially:

        T = min_temperature + temperature_range · sigmoid(θ)
        λ(e) = lambda_max · (1 − cos(π · min(e / E, 1))) / 2
        student: minimises the loss;  θ: its gradient is −λ · ∂loss/∂θ

    with `e` the epoch counted from 1, as the official script counts it
    (see `ReversalCurriculum`): λ > 0 from the first epoch, `lambda_max`
    from epoch `E` on. (tf_distill 0.1.0 counted from 0: λ ran one epoch
    late.)

    The temperature is a Keras layer the loss owns (`layers`): the
    `Distiller` trains `θ` with the student's optimizer, and it is not part
    of the saved student. The history logs the learned `temperature` and
    the curriculum's `reversal_lambda` at each epoch.

    Args:
        lambda_max: The reversal weight reached at the curriculum's end,
            >= 0 (the official code: 1).
        curriculum_epochs: `E`, the epochs over which `λ` rises from 0
            (the official code: 10).
        min_temperature: The lowest temperature, > 0 (the official `t_start`: 1).
        temperature_range: The width of the temperature's range, > 0 (the
            official `t_end`: 20; `T` stays in (1, 21)).
        initial_temperature: `T` at the start, strictly inside the range.
            Defaults to the official start, `θ = 1` (`T ≈ 15.6`).
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.

    Example:

    >>> loss = CurriculumTemperatureDistillation(lambda_max=1.0, curriculum_epochs=10)
    >>> logits = tf.constant([[2.0, 1.0, 0.1]])
    >>> float(loss(logits, logits)[0])
    0.0
    """

    def __init__(
        self,
        lambda_max=1.0,
        curriculum_epochs=10,
        min_temperature=1.0,
        temperature_range=20.0,
        initial_temperature=None,
        teacher=None,
    ):
        super().__init__(teacher=teacher)
        if isinstance(lambda_max, bool) or not isinstance(lambda_max, (int, float)) or not (
            lambda_max >= 0
        ):
            raise ValueError(f"`lambda_max` must be a number >= 0. Received: lambda_max={lambda_max!r}")
        check_positive("curriculum_epochs", curriculum_epochs)
        check_positive("min_temperature", min_temperature)
        check_positive("temperature_range", temperature_range)
        initial_logit = 1.0
        if initial_temperature is not None:
            check_positive("initial_temperature", initial_temperature)
            share = (initial_temperature - min_temperature) / temperature_range
            if not 0.0 < share < 1.0:
                raise ValueError(
                    "`initial_temperature` must lie strictly between `min_temperature` and "
                    f"`min_temperature + temperature_range` ({min_temperature}, "
                    f"{min_temperature + temperature_range}). Received: "
                    f"initial_temperature={initial_temperature!r}"
                )
            initial_logit = math.log(share / (1.0 - share))
        self.lambda_max = float(lambda_max)
        self.curriculum_epochs = curriculum_epochs
        self.initial_temperature = initial_temperature
        self.reversal_lambda = ReversalCurriculum(0.0, self.lambda_max, curriculum_epochs)
        self.temperature_layer = GlobalTemperature(
            float(min_temperature), float(temperature_range), initial_logit, name="ctkd_temperature"
        )

    @property
    def layers(self):
        return [self.temperature_layer]

    def validate_model_compatibility(self, teacher, student):
        super().validate_model_compatibility(teacher, student)
        # Built here, under the Distiller's distribution strategy (if any).
        if not self.temperature_layer.built:
            self.temperature_layer.build()

    def temperature(self):
        """The learned temperature now, a float."""
        return self.temperature_layer.value()

    def logged_values(self):
        """What the history logs besides the schedules: the learned `temperature`."""
        return {"temperature": self.temperature}

    def call(self, teacher_outputs, student_outputs, mask=None):
        temperature = self.temperature_layer(scheduled(self.reversal_lambda))
        return soft_label_kl(teacher_outputs, student_outputs, temperature, mask=mask)

    def get_config(self):
        return {
            "lambda_max": self.lambda_max,
            "curriculum_epochs": self.curriculum_epochs,
            "min_temperature": self.temperature_layer.minimum,
            "temperature_range": self.temperature_layer.range,
            "initial_temperature": self.initial_temperature,
            **super().get_config(),
        }


# Former names, kept for code and saved configs that use them.
CTKD = register_former_name(CurriculumTemperatureDistillation, "CTKD")
