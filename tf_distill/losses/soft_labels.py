"""Soft-label (logit) distillation: Hinton's KD and its divergences.

Every function takes `(teacher_logits, student_logits)`, teacher first like
`(y_true, y_pred)`, works in log space (`log_softmax`, never `softmax` then
`log`), computes in float32 whatever the inputs' dtype, and returns one value
per example. Logits of any rank are accepted: `[batch, classes]`, or
`[batch, time, vocab]` for token-level distillation of language models, where
positions are averaged per example (only those where `mask` is true).
"""

import math

from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.base import DistillationLoss
from tf_distill.losses.base import reduce_per_example
from tf_distill.losses.base import static_shape
from tf_distill.losses.registry import register
from tf_distill.schedules import number_or_schedule
from tf_distill.schedules import scheduled
from tf_distill.schedules import serialize
from tf_distill.validation import check_positive

# How `standardize` divides: True (or "sample") by the sample standard
# deviation (`ddof = 1`, `torch.std`'s default, which the authors' code uses),
# "population" by the population one (`ddof = 0`, tf_distill 0.1.0).
STANDARDIZE_FORMS = (False, True, "sample", "population")


def check_standardize(standardize):
    """`standardize` as `False`, `True` (the sample form) or `"population"`.

    Raises:
        ValueError: naming the argument, the accepted values and what was
            received.
    """
    if isinstance(standardize, str):
        form = standardize.lower()
        if form in ("sample", "population"):
            return True if form == "sample" else "population"
    elif isinstance(standardize, (bool, int)) and standardize in (0, 1):
        return bool(standardize)
    raise ValueError(
        "Invalid value for argument `standardize`. Expected one of "
        f"{list(STANDARDIZE_FORMS)}. Received: standardize={standardize!r}"
    )


def standardize_logits(logits, epsilon=1e-7, ddof=1):
    """Z-scores logits over the class axis (Sun et al. 2024).

    "Logit Standardization in Knowledge Distillation" (CVPR 2024): the
    student need not match the teacher's logit *range*, only their relations,
    so both are mapped to a z-score before the temperature:

        Z(z) = (z − mean(z)) / (std(z) + ε),
        std(z) = sqrt(Σ_k (z_k − mean(z))² / (C − ddof))

    The authors' code (github.com/sunshangquan/logit-standardization-KD,
    `normalize`) divides by `torch.std`, whose default is the sample
    standard deviation (`ddof = 1`, over `C − 1`), with ε = 1e-7: the default
    here. `ddof = 0` (over `C`, `tf.nn.moments`) is the form of tf_distill 0.1.0;
    it makes the standardized logits `sqrt(C / (C − 1))` times
    larger: ±1 instead of ±0.71 with 2 classes; at 10 classes, T = 2 acts
    as the authors' T = 1.90 with the loss weighed ×1.11 (`T²`). With one
    class both forms give zeros.

    Args:
        logits: Tensor `[..., classes]`.
        epsilon: Added to the standard deviation, for constant logits.
        ddof: `1` (the authors', default) or `0` (population).

    Returns:
        Tensor of the same shape, float32.

    Raises:
        ValueError: for a `ddof` other than 0 or 1.

    Example:

    >>> [round(float(v), 4) for v in standardize_logits(tf.constant([[3.0, 1.0]]))[0]]
    [0.7071, -0.7071]
    """
    if isinstance(ddof, bool) or ddof not in (0, 1):
        raise ValueError(f"`ddof` must be 0 or 1. Received: ddof={ddof!r}")
    logits = tf.cast(logits, tf.float32)
    mean, variance = tf.nn.moments(logits, axes=[-1], keepdims=True)
    if ddof:
        count = tf.cast(tf.shape(logits)[-1], tf.float32)
        # One class: no spread to estimate; the logits standardize to 0.
        variance = variance * tf.math.divide_no_nan(count, count - 1.0)
    return (logits - mean) / (tf.sqrt(variance) + epsilon)


def scaled_log_probs(logits, temperature, standardize=False):
    """`log_softmax(logits / T)` in float32, optionally standardized first.

    `standardize`: `False`, `True` (or `"sample"`: the authors' sample
    standard deviation) or `"population"` (see `standardize_logits`).
    """
    logits = tf.cast(logits, tf.float32)
    if standardize:
        ddof = 0 if standardize == "population" else 1
        logits = standardize_logits(logits, ddof=ddof)
    return tf.nn.log_softmax(logits / temperature, axis=-1)


def kl_from_log_probs(log_p, log_q):
    """KL(p || q) over the last axis, from log-probabilities."""
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def log_mixture(log_p, log_q, weight):
    """`log(w · p + (1 − w) · q)` from log-probabilities, for `0 ≤ w ≤ 1`.

    Computed with a log-sum-exp, so it stays finite where `p` and `q`
    underflow (logits of ±1e4). At `w = 0` or `1` it is `log q` or `log p`
    exactly (no `log 0` is formed).
    """
    if weight == 1.0:
        return log_p
    if weight == 0.0:
        return log_q
    return tf.reduce_logsumexp(
        tf.stack([log_p + math.log(weight), log_q + math.log(1.0 - weight)]), axis=0
    )


def soft_label_kl(
    teacher_logits, student_logits, temperature=1.0, mask=None, standardize=False
):
    """Hinton's KD loss: `T² · KL(softmax(t/T) ‖ softmax(s/T))` per example.

    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network"
    (2015). The `T²` factor keeps the gradient's scale independent of the
    temperature, so the weight between hard and soft targets means the same
    at every `T`.

        p_t = softmax(t / T),  log p_s = log_softmax(s / T)
        loss = T² · Σ_k p_t[k] · (log p_t[k] − log p_s[k])

    Args:
        teacher_logits: Tensor `[batch, ..., classes]`.
        student_logits: Tensor of the same shape.
        temperature: Softening temperature `T > 0`.
        mask: Optional `[batch, ...]` tensor; positions where it is 0 or
            False do not count (padding of sequences).
        standardize: Z-score both logits first (logit standardization,
            Sun et al. 2024): `True` (or `"sample"`) divides by the sample
            standard deviation as the authors' code does, `"population"` by
            the population one (see `standardize_logits`).

    Returns:
        A `[batch]` float32 tensor.
    """
    log_p_teacher = scaled_log_probs(teacher_logits, temperature, standardize)
    log_p_student = scaled_log_probs(student_logits, temperature, standardize)
    values = kl_from_log_probs(log_p_teacher, log_p_student)
    return reduce_per_example(values * temperature**2, mask)


def reverse_kl(
    teacher_logits, student_logits, temperature=1.0, mask=None, standardize=False
):
    """Reverse KD: `T² · KL(softmax(s/T) ‖ softmax(t/T))` per example.

    The mode-seeking direction used in language-model distillation (MiniLLM,
    Gu et al. 2024): the student is penalised for mass where the teacher has
    little, rather than for missing mass the teacher has.

    Args and Returns: as `soft_label_kl`.
    """
    log_p_teacher = scaled_log_probs(teacher_logits, temperature, standardize)
    log_p_student = scaled_log_probs(student_logits, temperature, standardize)
    values = kl_from_log_probs(log_p_student, log_p_teacher)
    return reduce_per_example(values * temperature**2, mask)


def jensen_shannon(
    teacher_logits,
    student_logits,
    temperature=1.0,
    beta=0.5,
    mask=None,
    standardize=False,
):
    """Generalized Jensen–Shannon divergence, `T² · JSD_β(p_t ‖ p_s)`.

    Agarwal et al., "On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes" (GKD, ICLR 2024):

        m = β · p_t + (1 − β) · p_s
        JSD_β = β · KL(p_t ‖ m) + (1 − β) · KL(p_s ‖ m)

    `β = 0.5` is the symmetric Jensen–Shannon divergence; as `β → 0` it
    behaves like forward KL, as `β → 1` like reverse KL (up to scale).

    Args:
        beta: Interpolation `0 < β < 1`.
        Other args and Returns: as `soft_label_kl`.
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"`beta` must be in (0, 1). Received: beta={beta!r}")
    log_p_teacher = scaled_log_probs(teacher_logits, temperature, standardize)
    log_p_student = scaled_log_probs(student_logits, temperature, standardize)
    log_m = log_mixture(log_p_teacher, log_p_student, beta)
    values = beta * kl_from_log_probs(log_p_teacher, log_m) + (
        1.0 - beta
    ) * kl_from_log_probs(log_p_student, log_m)
    return reduce_per_example(values * temperature**2, mask)


_DIVERGENCES = {
    "kl_divergence": soft_label_kl,
    "reverse_kl": reverse_kl,
    "jensen_shannon": jensen_shannon,
}
_DIVERGENCE_ALIASES = {
    "kl": "kl_divergence",
    "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence",
    "forward_kl": "kl_divergence",
    # Cross-entropy with the teacher's soft labels differs from the forward
    # KL by the teacher's entropy, a constant: same gradients.
    "categorical_crossentropy": "kl_divergence",
    "js": "jensen_shannon",
    "jsd": "jensen_shannon",
    "generalized_jsd": "jensen_shannon",
}


def _divergence_name(loss):
    """Maps the `loss` argument of LogitsDistillation to a divergence name."""
    if isinstance(loss, str):
        name = _DIVERGENCE_ALIASES.get(loss.lower(), loss.lower())
        if name not in _DIVERGENCES:
            valid = sorted(set(_DIVERGENCES) | set(_DIVERGENCE_ALIASES))
            raise ValueError(
                "Invalid value for argument `loss`. Expected one of "
                f"{valid}, a Keras loss object or a callable. "
                f"Received: loss={loss!r}"
            )
        return name
    if isinstance(loss, keras.losses.KLDivergence):
        return "kl_divergence"
    if isinstance(loss, keras.losses.CategoricalCrossentropy):
        return "kl_divergence"
    if loss is keras.losses.kl_divergence:
        return "kl_divergence"
    return None


@register("kd", "Hinton's soft-label KD: T²·KL(softmax(t/T) ‖ softmax(s/T))")
@register_serializable()
class LogitsDistillation(DistillationLoss):
    """Soft-label distillation from the teacher's logits (Hinton et al. 2015).

    Accepts the arguments of `keras.distillation.LogitsDistillation`, with the
    maths done right: the divergence is computed between
    `softmax(teacher/T)` and `softmax(student/T)` in log space and multiplied
    by `T²`, whether `loss` is given as a name or a Keras loss object.

    Args:
        temperature: Softening temperature `T > 0`. Defaults to 3.0.
        loss: The divergence: `"kl_divergence"` (forward KL, Hinton's KD),
            `"reverse_kl"`, `"jensen_shannon"` (generalized JSD, with
            `beta`), a `keras.losses.KLDivergence` object, or any callable
            `fn(teacher_probs, student_probs)` returning per-example values
            (then multiplied by `T²`); another Keras `Loss` object is called
            unreduced (its `call`), so it too gives per-example values.
        beta: For `"jensen_shannon"`, the interpolation `0 < β < 1`.
        standardize: Z-score the logits before the temperature (logit
            standardization, Sun et al. 2024): `False` (default), `True` or
            `"sample"` (the authors' form: the sample standard deviation,
            `torch.std`), or `"population"` (the population standard
            deviation, tf_distill's form before; see `standardize_logits`).
            A saved config's `standardize: true` now means the authors' form.
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.

    Example:

    >>> loss = LogitsDistillation(temperature=4.0)
    >>> teacher = tf.constant([[2.0, 1.0, 0.1]])
    >>> float(loss(teacher, teacher)[0])
    0.0
    """

    def __init__(
        self,
        temperature=3.0,
        loss="kl_divergence",
        beta=0.5,
        standardize=False,
        teacher=None,
    ):
        super().__init__(teacher=teacher)
        temperature = number_or_schedule(
            "temperature", temperature, check_positive, low=0.0, low_open=True
        )
        if not callable(loss) and not isinstance(loss, str):
            raise ValueError(
                "Invalid value for argument `loss`. Expected a name, a Keras "
                f"loss object or a callable. Received: loss={loss!r}"
            )
        self.divergence = _divergence_name(loss)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise ValueError(
                f"`beta` must be a number in (0, 1). Received: beta={beta!r}"
            )
        if self.divergence == "jensen_shannon" and not 0.0 < beta < 1.0:
            raise ValueError(f"`beta` must be in (0, 1). Received: beta={beta!r}")
        self.temperature = temperature
        self.loss = loss
        self.beta = float(beta)
        self.standardize = check_standardize(standardize)

    def call(self, teacher_outputs, student_outputs, mask=None):
        kwargs = dict(
            temperature=scheduled(self.temperature), mask=mask, standardize=self.standardize
        )
        if self.divergence == "jensen_shannon":
            kwargs["beta"] = self.beta
        if self.divergence is not None:
            return _DIVERGENCES[self.divergence](
                teacher_outputs, student_outputs, **kwargs
            )
        # A user callable sees probabilities, as keras.io's example passes
        # them to `keras.losses.KLDivergence`.
        temperature = scheduled(self.temperature)
        teacher_probs = tf.exp(
            scaled_log_probs(teacher_outputs, temperature, self.standardize)
        )
        student_probs = tf.exp(
            scaled_log_probs(student_outputs, temperature, self.standardize)
        )
        if isinstance(self.loss, keras.losses.Loss):
            # A Loss object reduces over the batch when called; its `call`
            # gives the per-example values the Distiller weighs.
            values = self.loss.call(teacher_probs, student_probs)
        else:
            values = self.loss(teacher_probs, student_probs)
        return reduce_per_example(
            tf.cast(values, tf.float32) * temperature**2, mask
        )

    def validate_outputs(self, teacher_outputs, student_outputs):
        super().validate_outputs(teacher_outputs, student_outputs)
        t_shape = static_shape(teacher_outputs)
        s_shape = static_shape(student_outputs)
        if not t_shape.is_compatible_with(s_shape):
            raise ValueError(
                "Teacher and student logits must have the same shape. "
                f"Received: teacher logits of shape {tuple(t_shape)} and "
                f"student logits of shape {tuple(s_shape)}."
            )

    def get_config(self):
        loss = self.loss
        if not isinstance(loss, str):
            loss = self.divergence if self.divergence else keras.losses.serialize(loss)
        return {
            "temperature": serialize(self.temperature),
            "loss": loss,
            "beta": self.beta,
            "standardize": self.standardize,
            **super().get_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)
