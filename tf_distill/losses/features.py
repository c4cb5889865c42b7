"""Feature distillation: matching intermediate activations.

Each function takes `(teacher_features, student_features)`, teacher first,
and returns one value per example.
"""

from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.base import DistillationLoss
from tf_distill.losses.base import deserialize_keras_loss
from tf_distill.losses.base import reduce_per_example
from tf_distill.losses.base import serialize_keras_loss
from tf_distill.losses.base import static_shape
from tf_distill.losses.registry import register
from tf_distill.losses.registry import register_former_name


def _flatten_features(features):
    features = tf.cast(features, tf.float32)
    return tf.reshape(features, [tf.shape(features)[0], -1])


def feature_mse(teacher_features, student_features):
    """Mean squared difference per example: `mean((f_t − f_s)²)`."""
    difference = _flatten_features(teacher_features) - _flatten_features(student_features)
    return tf.reduce_mean(tf.square(difference), axis=-1)


def feature_l1(teacher_features, student_features):
    """Mean absolute difference per example: `mean(|f_t − f_s|)`."""
    difference = _flatten_features(teacher_features) - _flatten_features(student_features)
    return tf.reduce_mean(tf.abs(difference), axis=-1)


def feature_cosine(teacher_features, student_features, epsilon=1e-12):
    """Cosine distance per example: `1 − cos(f_t, f_s)`, in [0, 2].

    (Keras's `cosine_similarity` loss returns `−cos`, which is 0 for
    orthogonal features and negative when they agree; a distance that is 0
    when they agree reads better in a history.)
    """
    teacher = tf.math.l2_normalize(_flatten_features(teacher_features), -1, epsilon)
    student = tf.math.l2_normalize(_flatten_features(student_features), -1, epsilon)
    return 1.0 - tf.reduce_sum(teacher * student, axis=-1)


def fitnets_hint(teacher_hint, student_guided):
    """FitNets hint loss per example: `mean((u_h − r(v_g))²)`.

    Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015), hint-based training:

        L_HT = ½ · ‖u_h(x) − r(v_g(x))‖²

    where `u_h` is the teacher's hint layer, `v_g` the student's guided layer
    and `r` the trainable regressor (the adapter the `Distiller` applies to
    the student's features before calling this loss). This function returns
    the *mean* of the squared differences rather than the paper's half sum,
    as mdistiller does: the two differ by the constant factor
    `D / 2` (`D` the number of features), and the mean keeps a loss weight
    meaningful whatever the width of the hint layer.

    Args:
        teacher_hint: Tensor `[batch, ...]`, the teacher's hint features.
        student_guided: Tensor of the same shape, the student's guided
            features already projected by the adapter.

    Returns:
        A `[batch]` float32 tensor.

    Raises:
        ValueError: if the shapes are known and differ.
    """
    t_shape = static_shape(teacher_hint)
    s_shape = static_shape(student_guided)
    if not t_shape[1:].is_compatible_with(s_shape[1:]):
        raise ValueError(
            "FitNets compares the teacher's hint with the student's features "
            "after the adapter, so their shapes must match. Received: "
            f"teacher {tuple(t_shape)} and student {tuple(s_shape)}."
        )
    return feature_mse(teacher_hint, student_guided)


def _check_power(power):
    # Below 1, d|a|^p/da is infinite at a = 0 (any ReLU zero), so training
    # would see NaN gradients; the paper uses p >= 1.
    if isinstance(power, bool) or not isinstance(power, (int, float)):
        raise ValueError(f"`power` must be a number >= 1. Received: power={power!r}")
    if not power >= 1:
        raise ValueError(f"`power` must be >= 1. Received: power={power!r}")


def _attention_map(features, power):
    """`vec(Σ_c |A_c|^p)` L2-normalized: the spatial attention of a map."""
    features = tf.cast(features, tf.float32)
    attention = tf.reduce_sum(tf.pow(tf.abs(features), power), axis=-1)
    attention = tf.reshape(attention, [tf.shape(attention)[0], -1])
    return tf.math.l2_normalize(attention, axis=-1, epsilon=1e-12)


def _safe_norm(vectors):
    """Euclidean norm over the last axis, exactly 0 (with zero gradient) at 0.

    `sqrt` has an infinite derivative at 0, which would turn the gradient of
    a loss that is 0 (student equal to teacher) into NaN.
    """
    squared = tf.reduce_sum(tf.square(vectors), axis=-1)
    positive = squared > 0.0
    safe = tf.where(positive, squared, tf.ones_like(squared))
    return tf.where(positive, tf.sqrt(safe), tf.zeros_like(squared))


def _check_attention_shapes(teacher_features, student_features):
    """Raises unless both are maps of rank >= 3 with the same spatial size."""
    t_shape = static_shape(teacher_features)
    s_shape = static_shape(student_features)
    for role, shape in (("teacher", t_shape), ("student", s_shape)):
        if shape.rank is not None and shape.rank < 3:
            raise ValueError(
                "Attention transfer needs feature maps of rank >= 3 "
                "(`[batch, height, width, channels]`). Received: "
                f"{role} features of shape {tuple(shape)}."
            )
    if t_shape.rank is not None and s_shape.rank is not None:
        if not t_shape[1:-1].is_compatible_with(s_shape[1:-1]):
            raise ValueError(
                "Attention transfer needs teacher and student feature maps of "
                "the same spatial size (channels may differ). Received: "
                f"teacher {tuple(t_shape)} and student {tuple(s_shape)}."
            )


def attention_transfer(teacher_features, student_features, power=2.0):
    """Activation-based attention transfer per example.

    Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the
    Performance of Convolutional Neural Networks via Attention Transfer"
    (ICLR 2017). For a feature map `A` of shape `[h, w, c]`:

        Q = vec(Σ_c |A_c|^p)                 # spatial attention, h·w values
        loss = ‖ Q_s / ‖Q_s‖₂ − Q_t / ‖Q_t‖₂ ‖₂

    This is the paper's formula (the `p = 2` norm of the difference, not
    squared). The authors' code and mdistiller use instead the *mean of the
    squared* difference, with channel means instead of sums (which the
    normalization cancels) and a weight `β = 1000`; the paper's `β / 2`
    weight is left to the `Distiller`'s loss weights here.

    Attention maps sum over channels, so the teacher and student may have
    different channel counts; their spatial sizes must match.

    Args:
        teacher_features: Tensor `[batch, height, width, channels]`
            (channels last; any rank ≥ 3 works, e.g. `[batch, time,
            channels]`).
        student_features: Tensor `[batch, height, width, channels']` with the
            teacher's spatial size.
        power: The exponent `p >= 1` applied to absolute activations. The
            paper uses 2 (larger values weigh the most active positions more).

    Returns:
        A `[batch]` float32 tensor, in [0, 2].

    Raises:
        ValueError: if a rank is below 3, the spatial sizes differ, or
            `power < 1`.

    Example:

    >>> maps = tf.random.normal([2, 4, 4, 8])
    >>> round(float(attention_transfer(maps, maps * 3.0)[0]), 6)
    0.0
    """
    _check_power(power)
    _check_attention_shapes(teacher_features, student_features)
    teacher_attention = _attention_map(teacher_features, power)
    student_attention = _attention_map(student_features, power)
    return _safe_norm(student_attention - teacher_attention)


_FEATURE_LOSSES = {"mse": feature_mse, "l1": feature_l1, "cosine": feature_cosine}
_FEATURE_ALIASES = {
    "mean_squared_error": "mse",
    "mae": "l1",
    "mean_absolute_error": "l1",
    "cosine_similarity": "cosine",
}


@register("feature", "Feature matching (mse, l1 or cosine) between tapped layers")
@register_serializable()
class FeatureDistillation(DistillationLoss):
    """Distills intermediate features, as `keras.distillation` does.

    Compares the output of `teacher_layer_name` with that of
    `student_layer_name` (or the final outputs when both are `None`). The
    shapes must match; for different widths use `FitNetsDistillation`,
    which learns an adapter.

    Args:
        loss: `"mse"`, `"l1"` (`"mae"`), `"cosine"` (`"cosine_similarity"`,
            computed as the distance `1 − cos`), or a Keras loss object or
            function `fn(teacher, student)`.
        teacher_layer_name: Name of the teacher layer to read, or `None`.
        student_layer_name: Name of the student layer to read, or `None`.
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.
    """

    def __init__(self, loss="mse", teacher_layer_name=None, student_layer_name=None, teacher=None):
        super().__init__(teacher=teacher)
        if loss is None:
            raise ValueError(
                "The `loss` argument in `FeatureDistillation` must "
                "contain at least one non-`None` value."
            )
        if isinstance(loss, str):
            key = _FEATURE_ALIASES.get(loss.lower(), loss.lower())
            if key not in _FEATURE_LOSSES:
                valid = sorted(set(_FEATURE_LOSSES) | set(_FEATURE_ALIASES))
                raise ValueError(
                    "Invalid value for argument `loss`. Expected one of "
                    f"{valid}, a Keras loss or a callable. Received: loss={loss!r}"
                )
            self._fn = _FEATURE_LOSSES[key]
        elif isinstance(loss, keras.losses.Loss):
            # Called, a Loss object reduces over the batch; `call` gives the
            # per-example values the Distiller weighs.
            self._fn = loss.call
        elif callable(loss):
            self._fn = loss
        else:
            raise ValueError(
                "Invalid value for argument `loss`. Expected a name, a Keras "
                f"loss or a callable. Received: loss={loss!r}"
            )
        self.loss = loss
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def call(self, teacher_outputs, student_outputs, mask=None):
        values = self._fn(teacher_outputs, student_outputs)
        return reduce_per_example(tf.cast(values, tf.float32))

    def validate_outputs(self, teacher_outputs, student_outputs):
        super().validate_outputs(teacher_outputs, student_outputs)
        t_shape = static_shape(teacher_outputs)
        s_shape = static_shape(student_outputs)
        if not t_shape[1:].is_compatible_with(s_shape[1:]):
            raise ValueError(
                "FeatureDistillation needs teacher and student features of "
                f"the same shape. Received: teacher {tuple(t_shape)} from "
                f"layer {self.teacher_layer_name!r} and student "
                f"{tuple(s_shape)} from layer {self.student_layer_name!r}. "
                "Use FitNetsDistillation ('fitnets'), which learns an adapter, "
                "for different shapes."
            )

    def get_config(self):
        return {
            "loss": serialize_keras_loss(self.loss),
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            **super().get_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = deserialize_keras_loss(config.get("loss", "mse"))
        return cls(**config)


@register("fitnets", "FitNets hints: MSE between teacher hint and adapted student layer")
@register_serializable()
class FitNetsDistillation(DistillationLoss):
    """FitNets hint training (Romero et al., ICLR 2015).

    The student's guided layer (`student_layer_name`) is projected to the
    shape of the teacher's hint layer (`teacher_layer_name`) by a trainable
    regressor, and the two are compared with `fitnets_hint`:

        loss = mean((u_h(x) − r(v_g(x)))²)     (the paper: ½‖u_h − r(v_g)‖²)

    `needs_adapter = True` tells the `Distiller` to build and train the
    regressor `r`; this loss only ever sees same-shaped tensors. The paper
    trains the hints first and then the whole student with KD; with the
    `Distiller`, combine `"fitnets"` with `"kd"` (or run two stages).

    Args:
        teacher_layer_name: Name of the teacher's hint layer, or `None`.
        student_layer_name: Name of the student's guided layer, or `None`.
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.

    Example:

    >>> loss = FitNetsDistillation("teacher_block_2", "student_block_1")
    >>> hint = tf.ones([2, 8])
    >>> float(loss(hint, hint * 0.5)[0])
    0.25
    """

    needs_adapter = True

    def __init__(self, teacher_layer_name=None, student_layer_name=None, teacher=None):
        super().__init__(teacher=teacher)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def call(self, teacher_outputs, student_outputs, mask=None):
        return fitnets_hint(teacher_outputs, student_outputs)

    def validate_outputs(self, teacher_outputs, student_outputs):
        # Any shapes are fine before the adapter; only the batch must agree.
        super().validate_outputs(teacher_outputs, student_outputs)

    def get_config(self):
        return {
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            **super().get_config(),
        }


@register(
    "attention_transfer",
    "Attention transfer: distance between normalized spatial attention maps",
)
@register_serializable()
class AttentionDistillation(DistillationLoss):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017).

    Compares where the teacher and the student "look": each channels-last
    feature map is reduced to its spatial attention `Q = vec(Σ_c |A_c|^p)`,
    normalized, and the loss is `‖Q_s/‖Q_s‖ − Q_t/‖Q_t‖‖₂` per example (see
    `attention_transfer`). Channel counts may differ, so no adapter is
    needed; spatial sizes must match.

    Its weight is the `Distiller`'s (`distillation_loss_weights`): the
    paper's β = 1000/2 over the map's size hurt the student on the method
    benchmark (docs/BENCHMARKS.md, Quality 4); a tenth of it did not, see
    `examples/recipes/attention_transfer.yaml`.

    Args:
        power: The exponent `p >= 1`. Defaults to 2, as in the paper.
        teacher_layer_name: Name of the teacher layer to read, or `None`.
        student_layer_name: Name of the student layer to read, or `None`.
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.

    Raises:
        ValueError: for `power < 1`.
    """

    def __init__(
        self, power=2.0, teacher_layer_name=None, student_layer_name=None, teacher=None
    ):
        super().__init__(teacher=teacher)
        _check_power(power)
        self.power = float(power)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def call(self, teacher_outputs, student_outputs, mask=None):
        return attention_transfer(teacher_outputs, student_outputs, self.power)

    def validate_outputs(self, teacher_outputs, student_outputs):
        super().validate_outputs(teacher_outputs, student_outputs)
        _check_attention_shapes(teacher_outputs, student_outputs)

    def get_config(self):
        return {
            "power": self.power,
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            **super().get_config(),
        }


# Former names, kept for code and saved configs that use them.
FitNets = register_former_name(FitNetsDistillation, "FitNets")
AttentionTransfer = register_former_name(AttentionDistillation, "AttentionTransfer")
