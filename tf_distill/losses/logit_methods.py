"""Logit-based methods beyond Hinton's KD: DKD and DIST.

Both take `(teacher_logits, student_logits)`, teacher first, of shape
`[batch, classes]`, compute in float32 and log space, and return one value per
example.
"""

import numpy as np

from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.base import DistillationLoss
from tf_distill.losses.labels import class_indices
from tf_distill.losses.registry import register
from tf_distill.losses.registry import register_former_name
from tf_distill.schedules import number_or_schedule
from tf_distill.schedules import scheduled
from tf_distill.schedules import serialize
from tf_distill.validation import check_non_negative
from tf_distill.validation import check_positive


def _check_classification_logits(method, teacher_logits, student_logits):
    """Casts to float32; raises unless both are `[batch, classes]` alike."""
    teacher_logits = tf.convert_to_tensor(teacher_logits)
    student_logits = tf.convert_to_tensor(student_logits)
    for role, logits in (("teacher", teacher_logits), ("student", student_logits)):
        if logits.shape.rank is not None and logits.shape.rank != 2:
            raise ValueError(
                f"{method} needs logits of shape `[batch, classes]`. Received: "
                f"{role} logits of shape {tuple(logits.shape)}."
            )
    if not teacher_logits.shape.is_compatible_with(student_logits.shape):
        raise ValueError(
            f"{method} needs teacher and student logits of the same shape. "
            f"Received: teacher {tuple(teacher_logits.shape)} and student "
            f"{tuple(student_logits.shape)}."
        )
    return tf.cast(teacher_logits, tf.float32), tf.cast(student_logits, tf.float32)


def _target_mask(labels, teacher_logits):
    """Boolean `[batch, classes]`, true at each example's target class.

    `labels` may be sparse class indices (`[batch]` or `[batch, 1]`), one-hot
    or soft `[batch, classes]` (their argmax is the target), or `None` (the
    teacher's prediction is the target).
    """
    num_classes = tf.shape(teacher_logits)[-1]
    if labels is None:
        indices = tf.argmax(teacher_logits, axis=-1)
    else:
        indices = class_indices(labels)
    return tf.one_hot(indices, num_classes, on_value=True, off_value=False)


def decoupled_kd(teacher_logits, student_logits, labels=None, alpha=1.0, beta=8.0, temperature=4.0):
    """Decoupled knowledge distillation (DKD) per example.

    Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation"
    (CVPR 2022). Hinton's KD loss splits into a target-class term
    and a non-target-class term, which DKD weighs separately. With `g` the
    target class, `p = softmax(z / T)`:

        b = [p_g, 1 − p_g]                      # binary: target vs the rest
        p̂_k = p_k / (1 − p_g) = softmax_{k≠g}(z_k / T)
        TCKD = KL(b^T ‖ b^S),   NCKD = KL(p̂^T ‖ p̂^S)
        loss = T² · (α · TCKD + β · NCKD)

    (KD itself is `TCKD + (1 − p_g^T) · NCKD`.) The `T²` factor is the one
    of the authors' code. All terms are computed from log-probabilities,
    masking the target class out of the non-target softmax, so logits of any
    magnitude stay finite.

    Args:
        teacher_logits: Tensor `[batch, classes]`.
        student_logits: Tensor `[batch, classes]`.
        labels: The ground truth: class indices `[batch]` (or `[batch, 1]`),
            or one-hot (or soft) `[batch, classes]`, whose argmax is used.
            `None` uses the teacher's argmax instead, for unlabelled data.
        alpha: Weight `α ≥ 0` of TCKD. The paper uses 1.
        beta: Weight `β ≥ 0` of NCKD. The paper uses 8 on CIFAR-100 and 0.5
            on ImageNet.
        temperature: `T > 0`. The paper uses 4 on CIFAR-100, 1 on ImageNet.

    Returns:
        A `[batch]` float32 tensor.

    Raises:
        ValueError: for logits that are not `[batch, classes]` with at least
            two classes, labels of another rank, or invalid weights.

    Example:

    >>> logits = tf.constant([[3.0, 1.0, 0.2]])
    >>> float(decoupled_kd(logits, logits, labels=[0])[0])
    0.0
    """
    check_non_negative("alpha", alpha)
    check_non_negative("beta", beta)
    if not tf.is_tensor(temperature):  # a schedule's value is a tensor
        check_positive("temperature", temperature)
    teacher_logits, student_logits = _check_classification_logits(
        "DKD", teacher_logits, student_logits
    )
    num_classes = teacher_logits.shape[-1]
    if num_classes is not None and num_classes < 2:
        raise ValueError(
            "DKD needs at least two classes. Received: logits of shape "
            f"{tuple(teacher_logits.shape)}."
        )
    target = _target_mask(labels, teacher_logits)

    def log_parts(logits):
        scaled = logits / temperature
        log_total = tf.reduce_logsumexp(scaled, axis=-1)
        # -inf at the target leaves it out of the non-target softmax; its
        # gradient stops at the constant, so no NaN reaches the logits.
        others = tf.where(target, tf.fill(tf.shape(scaled), -float("inf")), scaled)
        log_others_total = tf.reduce_logsumexp(others, axis=-1)
        log_target = tf.reduce_sum(tf.where(target, scaled, 0.0), axis=-1) - log_total
        log_binary = tf.stack([log_target, log_others_total - log_total], axis=-1)
        # The target's own entry is set to log 1 = 0 on both sides, so its
        # KL term is exactly 0: `scaled − log_others_total` there can be
        # large enough for `exp` to overflow, and `inf · 0` is NaN.
        log_non_target = tf.where(target, tf.zeros_like(scaled), scaled - log_others_total[:, None])
        return log_binary, log_non_target

    teacher_binary, teacher_non_target = log_parts(teacher_logits)
    student_binary, student_non_target = log_parts(student_logits)
    tckd = tf.reduce_sum(tf.exp(teacher_binary) * (teacher_binary - student_binary), axis=-1)
    nckd = tf.reduce_sum(
        tf.exp(teacher_non_target) * (teacher_non_target - student_non_target),
        axis=-1,
    )
    return (alpha * tckd + beta * nckd) * temperature**2


# A vector whose standard deviation is at most this fraction of its largest
# magnitude is constant: float32 rounding (a few ulps, ~1e-7 relative) leaves
# such a spread in a vector that is constant in exact arithmetic, and the
# correlation of rounding noise depends on the CPU's instruction set.
CONSTANT_RELATIVE_TOLERANCE = 1e-5


def _centred_unit(vectors, axis):
    """`vectors` centred and scaled to unit norm along `axis`, and which are constant.

    A constant vector (see `CONSTANT_RELATIVE_TOLERANCE`) comes back as zeros,
    so its correlation with anything is 0, with a zero (not NaN) gradient.
    """
    centred = vectors - tf.reduce_mean(vectors, axis=axis, keepdims=True)
    squares = tf.reduce_sum(tf.square(centred), axis=axis, keepdims=True)
    count = tf.cast(tf.shape(vectors)[axis], vectors.dtype)
    scale = tf.reduce_max(tf.abs(vectors), axis=axis, keepdims=True)
    # Sums of squares below the smallest normal float have lost their precision.
    tiny = np.finfo(vectors.dtype.as_numpy_dtype).tiny
    constant = squares <= count * tf.square(CONSTANT_RELATIVE_TOLERANCE * scale) + tiny
    norm = tf.sqrt(tf.where(constant, tf.ones_like(squares), squares))
    return tf.where(constant, tf.zeros_like(centred), centred / norm)


def _pearson_distance(a, b, axis):
    """`1 − ρ(a, b)` along `axis`, with ρ = 0 when `a` or `b` is constant.

    A vector counts as constant when its standard deviation is at most
    `CONSTANT_RELATIVE_TOLERANCE` times its largest magnitude. The authors
    (and mdistiller) add 1e-8 to the product of the norms instead, which
    gives ρ = 0 for an exactly constant vector but rounding noise for one
    constant up to rounding; a tolerance relative to the vector's scale gives
    the same defined value for both, on any CPU.
    """
    return 1.0 - tf.reduce_sum(_centred_unit(a, axis) * _centred_unit(b, axis), axis=axis)


def dist(teacher_logits, student_logits, beta=1.0, gamma=1.0, temperature=4.0):
    """DIST: relation-matching KD, one value per example.

    Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger
    Teacher" (NeurIPS 2022). With `Y = softmax(Z / T)` row-wise for
    a batch of `b` examples and `C` classes, and `d_p(u, v) = 1 − ρ(u, v)`
    (Pearson correlation):

        inter = (1 / b) Σ_i d_p(Y_s[i, :], Y_t[i, :])    # each example
        intra = (1 / C) Σ_c d_p(Y_s[:, c], Y_t[:, c])    # each class
        loss = T² · (β · inter + γ · intra)

    The inter-class term is per example. The intra-class term correlates each
    class's probabilities across the batch, so it exists only for the batch:
    its value is given to every example, and the batch mean of the result is
    the paper's loss. It needs a batch of at least two examples (for one
    example, a column's correlation is 0 and `intra` is 1).

    A constant row or column has no correlation: ρ = 0, so its distance is 1
    (even against itself). "Constant" means a standard deviation at most
    `CONSTANT_RELATIVE_TOLERANCE` (1e-5) times the vector's largest value, so
    a vector that is constant up to float32 rounding gets this defined value
    rather than the correlation of its rounding noise, which would differ
    from one CPU to another.

    Args:
        teacher_logits: Tensor `[batch, classes]`.
        student_logits: Tensor `[batch, classes]`.
        beta: Weight `β ≥ 0` of the inter-class relation. The paper uses 1.
        gamma: Weight `γ ≥ 0` of the intra-class relation. The paper uses 1
            (2 for some ImageNet students).
        temperature: `T > 0`. The paper uses 1 on ImageNet and 4 on
            CIFAR-100 (the default here).

    Returns:
        A `[batch]` float32 tensor.

    Raises:
        ValueError: for logits that are not `[batch, classes]`, or invalid
            weights.

    Example:

    >>> logits = tf.constant([[3.0, 1.0, 0.2], [0.1, 2.0, 0.5]])
    >>> [round(float(v), 6) for v in dist(logits, logits)]
    [0.0, 0.0]
    """
    check_non_negative("beta", beta)
    check_non_negative("gamma", gamma)
    if not tf.is_tensor(temperature):  # a schedule's value is a tensor
        check_positive("temperature", temperature)
    teacher_logits, student_logits = _check_classification_logits(
        "DIST", teacher_logits, student_logits
    )
    teacher = tf.nn.softmax(teacher_logits / temperature, axis=-1)
    student = tf.nn.softmax(student_logits / temperature, axis=-1)
    inter = _pearson_distance(student, teacher, axis=1)
    intra = tf.reduce_mean(_pearson_distance(student, teacher, axis=0))
    return temperature**2 * (beta * inter + gamma * intra)


@register("dkd", "Decoupled KD: weighted target-class and non-target-class KL")
@register_serializable()
class DecoupledDistillation(DistillationLoss):
    """Decoupled knowledge distillation (Zhao et al., CVPR 2022).

    See `decoupled_kd`. DKD needs each example's ground-truth class:
    `needs_labels = True` tells the `Distiller` to pass the batch's labels
    as `call(..., labels=labels)`. Without labels (`labels=None`) the
    teacher's argmax stands in for them.

    **Warm-up.** The authors' code (mdistiller) scales the DKD loss by
    `min(epoch / 20, 1)`, epochs counted from 1 (20 of 240 CIFAR-100
    epochs). A loss knows nothing of epochs, so the warm-up is the loss's
    weight: `tf_distill.schedules.linear_warmup(weight, 20)`, the schedule
    `Linear(weight / 20, weight, 19)`, is exactly that factor at every
    epoch (in a config: `loss_weights: [{schedule: linear, start: 0.05,
    end: 1.0, duration: 19}]`). Without it DKD trains at full weight from
    the first step.

    The defaults are the paper's CIFAR-100 values, kept because they are
    what users compare against; they are not a safe default everywhere. On
    the method benchmark (docs/BENCHMARKS.md, Quality 4: MNIST, 4,000
    images, 15 epochs) DKD made the student worse than training alone at
    every weight tried, with the paper's warm-up scaled to 3 of 15 epochs;
    see `examples/recipes/dkd.yaml`, and prefer DIST there.

    Args:
        alpha: Weight `α ≥ 0` of the target-class term (TCKD). Defaults to 1.
        beta: Weight `β ≥ 0` of the non-target-class term (NCKD). Defaults
            to 8 (CIFAR-100; the paper uses 0.5 on ImageNet).
        temperature: `T > 0`. Defaults to 4.
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.

    Raises:
        ValueError: for a negative weight or `temperature <= 0`.

    Example:

    >>> loss = DecoupledDistillation(alpha=1.0, beta=8.0, temperature=4.0)
    >>> logits = tf.constant([[3.0, 1.0, 0.2]])
    >>> float(loss(logits, logits, labels=[0])[0])
    0.0
    """

    needs_labels = True

    def __init__(self, alpha=1.0, beta=8.0, temperature=4.0, teacher=None):
        super().__init__(teacher=teacher)
        check_non_negative("alpha", alpha)
        check_non_negative("beta", beta)
        self.temperature = number_or_schedule(
            "temperature", temperature, check_positive, low=0.0, low_open=True
        )
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, teacher_outputs, student_outputs, mask=None, labels=None):
        return decoupled_kd(
            teacher_outputs,
            student_outputs,
            labels=labels,
            alpha=self.alpha,
            beta=self.beta,
            temperature=scheduled(self.temperature),
        )

    def __call__(self, teacher_outputs, student_outputs, mask=None, labels=None):
        return self.call(teacher_outputs, student_outputs, mask=mask, labels=labels)

    def get_config(self):
        temperature = serialize(self.temperature)
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "temperature": temperature,
            **super().get_config(),
        }


@register("dist", "DIST: Pearson inter- and intra-class relations of soft labels")
@register_serializable()
class CorrelationDistillation(DistillationLoss):
    """DIST, relation-matching KD from a stronger teacher (Huang et al. 2022).

    See `dist`. The intra-class term is a batch statistic, given to every
    example of the batch.

    Args:
        beta: Weight `β ≥ 0` of the inter-class relation. Defaults to 1.
        gamma: Weight `γ ≥ 0` of the intra-class relation. Defaults to 1.
        temperature: `T > 0`. Defaults to 4 (CIFAR-100; the paper uses 1 on
            ImageNet).
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.

    Raises:
        ValueError: for a negative weight or `temperature <= 0`.
    """

    def __init__(self, beta=1.0, gamma=1.0, temperature=4.0, teacher=None):
        super().__init__(teacher=teacher)
        check_non_negative("beta", beta)
        check_non_negative("gamma", gamma)
        self.temperature = number_or_schedule(
            "temperature", temperature, check_positive, low=0.0, low_open=True
        )
        self.beta = float(beta)
        self.gamma = float(gamma)

    def call(self, teacher_outputs, student_outputs, mask=None):
        return dist(
            teacher_outputs,
            student_outputs,
            beta=self.beta,
            gamma=self.gamma,
            temperature=scheduled(self.temperature),
        )

    def get_config(self):
        temperature = serialize(self.temperature)
        return {
            "beta": self.beta,
            "gamma": self.gamma,
            "temperature": temperature,
            **super().get_config(),
        }


# Former names, kept for code and saved configs that use them.
DecoupledKD = register_former_name(DecoupledDistillation, "DecoupledKD")
DIST = register_former_name(CorrelationDistillation, "DIST")
