"""Token-level divergences for distilling language models.

The divergences that language-model distillation uses between the teacher's
next-token distribution `p = softmax(t/T)` and the student's
`q = softmax(s/T)`, at every position of `[batch, time, vocab]` logits (or
`[batch, classes]`), averaged per example over the positions a `[batch,
time]` padding mask keeps:

| name              | divergence                         | paper                   |
|-------------------|------------------------------------|-------------------------|
| `forward_kl`      | `KL(p ‖ q)`                        | Hinton et al. 2015      |
| `reverse_kl`      | `KL(q ‖ p)`                        | MiniLLM, Gu et al. 2024 |
| `generalized_jsd` | `β·KL(p ‖ m) + (1−β)·KL(q ‖ m)`,   | GKD, Agarwal et al. 2024|
|                   | `m = β·p + (1−β)·q`                |                         |
| `skew_kl`         | `KL(p ‖ α·p + (1−α)·q)`            | DistiLLM, Ko et al. 2024|
| `skew_reverse_kl` | `KL(q ‖ (1−α)·p + α·q)`            | DistiLLM, Ko et al. 2024|

Every value is multiplied by `T²`, as Hinton's KD is. Forward and reverse KL
are `soft_labels.soft_label_kl` and `soft_labels.reverse_kl`; this module adds
the skewed ones, the generalized JSD with its limits `β = 0` (forward KL) and
`β = 1` (reverse KL) as TRL's `generalized_jsd_loss` defines them, and
`TokenDistillation`, the loss that names one of them.

All of it is computed in log space (mixtures by log-sum-exp), so values and
gradients stay finite for vocabularies of 50k+ and logits of ±1e4; a row
that is all padding gives 0 and a zero gradient.
"""

from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.base import DistillationLoss
from tf_distill.losses.base import reduce_per_example
from tf_distill.losses.base import static_shape
from tf_distill.losses.registry import register
from tf_distill.losses.soft_labels import jensen_shannon
from tf_distill.losses.soft_labels import kl_from_log_probs
from tf_distill.losses.soft_labels import log_mixture
from tf_distill.losses.soft_labels import reverse_kl
from tf_distill.losses.soft_labels import scaled_log_probs
from tf_distill.losses.soft_labels import soft_label_kl
from tf_distill.validation import check_choice
from tf_distill.validation import check_positive
from tf_distill.validation import check_unit_interval


def generalized_jsd(teacher_logits, student_logits, temperature=1.0, beta=0.5, mask=None):
    """Generalized Jensen–Shannon divergence of GKD, `T² · JSD(β)(p ‖ q)`.

    Agarwal et al., "On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes" (ICLR 2024):

        m = β · p + (1 − β) · q
        JSD(β) = β · KL(p ‖ m) + (1 − β) · KL(q ‖ m)

    JSD(β) itself tends to 0 at both ends (as `β · KL(p ‖ q)` near 0); as in
    TRL's `generalized_jsd_loss`, `β = 0` is defined as the forward KL
    `KL(p ‖ q)` and `β = 1` as the reverse KL `KL(q ‖ p)`, the divergences
    the interpolation runs between.

    Args:
        teacher_logits: Tensor `[batch, time, vocab]` or `[batch, classes]`.
        student_logits: Tensor of the same shape.
        temperature: Softening temperature `T > 0`.
        beta: Interpolation `0 ≤ β ≤ 1`.
        mask: Optional `[batch, time]` tensor; positions where it is 0 or
            False (padding) do not count.

    Returns:
        A `[batch]` float32 tensor.
    """
    check_unit_interval("beta", beta)
    if beta == 0.0:
        return soft_label_kl(teacher_logits, student_logits, temperature, mask=mask)
    if beta == 1.0:
        return reverse_kl(teacher_logits, student_logits, temperature, mask=mask)
    return jensen_shannon(teacher_logits, student_logits, temperature, beta=beta, mask=mask)


def skew_kl(teacher_logits, student_logits, temperature=1.0, alpha=0.1, mask=None):
    """Skew KL of DistiLLM, `T² · KL(p ‖ α·p + (1−α)·q)`.

    Ko et al., "DistiLLM: Towards Streamlined Distillation for Large Language
    Models" (ICML 2024). Mixing a share `α` of the teacher into the student's
    distribution bounds the divergence by `log(1/α)` and its gradient, where
    the forward KL explodes on tokens the student gives almost no mass.
    `α = 0` is the forward KL; `α = 1` gives 0.

    Args:
        alpha: Skew `0 ≤ α ≤ 1` (the paper uses 0.1).
        Other args and Returns: as `generalized_jsd`.
    """
    check_unit_interval("alpha", alpha)
    log_p_teacher = scaled_log_probs(teacher_logits, temperature)
    log_p_student = scaled_log_probs(student_logits, temperature)
    log_m = log_mixture(log_p_teacher, log_p_student, alpha)
    values = kl_from_log_probs(log_p_teacher, log_m)
    return reduce_per_example(values * temperature**2, mask)


def skew_reverse_kl(teacher_logits, student_logits, temperature=1.0, alpha=0.1, mask=None):
    """Skew reverse KL of DistiLLM, `T² · KL(q ‖ (1−α)·p + α·q)`.

    Ko et al., "DistiLLM" (ICML 2024): the reverse KL with a share `α` of the
    student mixed into the teacher. `α = 0` is the reverse KL `KL(q ‖ p)`;
    `α = 1` gives 0. It is `skew_kl` with the two distributions' roles
    swapped.

    Args:
        alpha: Skew `0 ≤ α ≤ 1` (the paper uses 0.1).
        Other args and Returns: as `generalized_jsd`.
    """
    return skew_kl(student_logits, teacher_logits, temperature, alpha, mask)


def _forward_kl(teacher_logits, student_logits, temperature, mask=None):
    return soft_label_kl(teacher_logits, student_logits, temperature, mask=mask)


def _reverse_kl(teacher_logits, student_logits, temperature, mask=None):
    return reverse_kl(teacher_logits, student_logits, temperature, mask=mask)


# name -> (function, the parameter it takes besides the temperature, if any)
_TOKEN_DIVERGENCES = {
    "forward_kl": (_forward_kl, None),
    "reverse_kl": (_reverse_kl, None),
    "generalized_jsd": (generalized_jsd, "beta"),
    "skew_kl": (skew_kl, "alpha"),
    "skew_reverse_kl": (skew_reverse_kl, "alpha"),
}
TOKEN_DIVERGENCES = tuple(_TOKEN_DIVERGENCES)


def token_divergence(
    teacher_logits,
    student_logits,
    divergence="forward_kl",
    temperature=1.0,
    beta=0.5,
    alpha=0.1,
    mask=None,
    chunk_size=None,
):
    """One of the token-level divergences, by name, per example.

    Args:
        teacher_logits: Tensor `[batch, time, vocab]` or `[batch, classes]`.
        student_logits: Tensor of the same shape.
        divergence: One of `TOKEN_DIVERGENCES`: `"forward_kl"`,
            `"reverse_kl"`, `"generalized_jsd"`, `"skew_kl"`,
            `"skew_reverse_kl"`.
        temperature: Softening temperature `T > 0`.
        beta: `β` of `"generalized_jsd"`, in [0, 1].
        alpha: `α` of the skewed divergences, in [0, 1].
        mask: Optional `[batch, time]` padding mask.
        chunk_size: Positions computed at a time, or None for all at once.
            With `[batch, time, vocab]` logits of a known `time`, each chunk's
            intermediates (several tensors of the logits' size) are
            recomputed in the backward pass instead of kept, which bounds
            the memory of long sequences over large vocabularies.

    Returns:
        A `[batch]` float32 tensor.

    Example:

    >>> token_divergence(teacher_logits, student_logits, "skew_kl", alpha=0.1,
    ...                  mask=padding_mask)
    """
    check_choice("divergence", divergence, TOKEN_DIVERGENCES)
    check_positive("temperature", temperature)
    function, parameter = _TOKEN_DIVERGENCES[divergence]
    kwargs = {"temperature": temperature}
    if parameter is not None:
        kwargs[parameter] = beta if parameter == "beta" else alpha
    if chunk_size is None:
        return function(teacher_logits, student_logits, mask=mask, **kwargs)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(
            f"`chunk_size` must be an integer > 0 or None. Received: chunk_size={chunk_size!r}"
        )
    return _chunked(function, teacher_logits, student_logits, mask, chunk_size, kwargs)


def _chunked(function, teacher_logits, student_logits, mask, chunk_size, kwargs):
    """The per-example mean over all positions, from chunks of positions.

    Each chunk's mean is weighted by its count of kept positions, so the
    result equals the unchunked one.
    """
    shape = static_shape(student_logits)
    if shape.rank != 3 or shape[1] is None or shape[1] <= chunk_size:
        return function(teacher_logits, student_logits, mask=mask, **kwargs)
    teacher_logits = tf.convert_to_tensor(teacher_logits)
    student_logits = tf.convert_to_tensor(student_logits)
    length = shape[1]
    if mask is None:
        mask = tf.ones(tf.shape(student_logits)[:2], tf.float32)
    mask = tf.cast(mask, tf.float32)
    total = count = 0.0
    for start in range(0, length, chunk_size):
        stop = min(length, start + chunk_size)
        chunk_mask = mask[:, start:stop]

        @tf.recompute_grad
        def chunk_mean(teacher, student, chunk_mask=chunk_mask):
            return function(teacher, student, mask=chunk_mask, **kwargs)

        chunk_count = tf.reduce_sum(chunk_mask, axis=1)
        mean = chunk_mean(teacher_logits[:, start:stop], student_logits[:, start:stop])
        total += mean * chunk_count
        count += chunk_count
    return tf.math.divide_no_nan(total, count)


@register(
    "token_kd",
    "Token-level KD for language models: forward/reverse KL, GKD's JSD(β), skew KL (α)",
)
@register_serializable()
class TokenDistillation(DistillationLoss):
    """Token-level distillation of language models (Agarwal et al. 2024).

    Compares the teacher's and the student's next-token distributions at every
    position of `[batch, time, vocab]` logits with one divergence of
    `token_divergence`: forward KL (Hinton), reverse KL (MiniLLM),
    generalized JSD(β) (GKD, Agarwal et al. 2024), skew KL or skew reverse
    KL (DistiLLM, Ko et al. 2024). Padding (a `[batch, time]` mask, given to
    `fit` as the sample weight) does not count, and an all-padding row gives 0.

    Args:
        divergence: One of `TOKEN_DIVERGENCES`. Defaults to `"forward_kl"`.
        temperature: Softening temperature `T > 0`. Defaults to 1.0, the
            usual setting for language models.
        beta: `β` of `"generalized_jsd"`, in [0, 1] (0: forward KL, 1:
            reverse KL).
        alpha: `α` of `"skew_kl"` and `"skew_reverse_kl"`, in [0, 1].
        chunk_size: Positions computed at a time (see `token_divergence`),
            or None.
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.

    Example:

    >>> loss = TokenDistillation("skew_kl", alpha=0.1)
    >>> distiller = tf_distill.Distiller(teacher_lm, student_lm, loss)
    """

    def __init__(
        self,
        divergence="forward_kl",
        temperature=1.0,
        beta=0.5,
        alpha=0.1,
        chunk_size=None,
        teacher=None,
    ):
        super().__init__(teacher=teacher)
        check_choice("divergence", divergence, TOKEN_DIVERGENCES)
        check_positive("temperature", temperature)
        check_unit_interval("beta", beta)
        check_unit_interval("alpha", alpha)
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0
        ):
            raise ValueError(
                f"`chunk_size` must be an integer > 0 or None. Received: chunk_size={chunk_size!r}"
            )
        self.divergence = divergence
        self.temperature = float(temperature)
        self.beta = float(beta)
        self.alpha = float(alpha)
        self.chunk_size = chunk_size

    # What computes the divergence per example from the two models' outputs;
    # `ChunkedHeadDistillation` computes it from their LM heads, in chunks.
    divergence_function = staticmethod(token_divergence)

    def call(self, teacher_outputs, student_outputs, mask=None):
        return self.divergence_function(
            teacher_outputs,
            student_outputs,
            self.divergence,
            temperature=self.temperature,
            beta=self.beta,
            alpha=self.alpha,
            mask=mask,
            chunk_size=self.chunk_size,
        )

    def validate_outputs(self, teacher_outputs, student_outputs):
        super().validate_outputs(teacher_outputs, student_outputs)
        t_shape = static_shape(teacher_outputs)
        s_shape = static_shape(student_outputs)
        if not t_shape.is_compatible_with(s_shape):
            raise ValueError(
                "Teacher and student logits must have the same shape (one "
                "vocabulary). Received: teacher logits of shape "
                f"{tuple(t_shape)} and student logits of shape {tuple(s_shape)}."
            )

    def get_config(self):
        return {
            "divergence": self.divergence,
            "temperature": self.temperature,
            "beta": self.beta,
            "alpha": self.alpha,
            "chunk_size": self.chunk_size,
            **super().get_config(),
        }
