"""Distillation between language models with different tokenizers.

Universal Logit Distillation (Boizard et al., "Towards Cross-Tokenizer
Distillation: the Universal Logit Distillation Loss for LLMs", TMLR 2025,
arXiv:2402.12030): teacher and student next-token distributions over two
different vocabularies cannot be compared token by token, but their sorted
probability vectors can. With both vocabularies padded with zeros to the
larger size `V` and the probabilities sorted in decreasing order, the
Wasserstein-1 distance under a uniform transport cost has the closed form

    ULD(p, q) = Σᵢ |p₍ᵢ₎ − q₍ᵢ₎|,   i = 1 … V

at each aligned position. Positions are aligned as the paper does: the k-th
response token of the student with the k-th response token of the teacher,
up to the shorter of the two (`tf_distill.language.alignment`).
"""

from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.base import DistillationLoss
from tf_distill.losses.base import reduce_per_example
from tf_distill.losses.base import static_shape
from tf_distill.losses.registry import register
from tf_distill.validation import check_positive


def sorted_probabilities(logits, temperature, size):
    """`softmax(logits / T)` sorted in decreasing order, zero-padded to `size`."""
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)
    probabilities = tf.sort(probabilities, axis=-1, direction="DESCENDING")
    padding = size - tf.shape(probabilities)[-1]
    rank = probabilities.shape.rank
    return tf.pad(probabilities, [[0, 0]] * (rank - 1) + [[0, padding]])


def universal_logit_distillation(teacher_logits, student_logits, temperature=1.0, mask=None):
    """Universal Logit Distillation, per example: `Σᵢ |p₍ᵢ₎ − q₍ᵢ₎|` averaged
    over the positions `mask` keeps.

    Args:
        teacher_logits: `[batch, time, V_teacher]` (or `[batch, V_teacher]`),
            aligned with the student's positions.
        student_logits: `[batch, time, V_student]` (or `[batch, V_student]`);
            the vocabularies may differ in size.
        temperature: Softening temperature `T > 0` of both softmaxes.
            Defaults to 1.0 (the paper's setting).
        mask: `[batch, time]` positions that count (aligned response
            tokens), or `None` for all.

    Returns:
        A `[batch]` tensor, each value in [0, 2].
    """
    check_positive("temperature", temperature)
    size = tf.maximum(tf.shape(teacher_logits)[-1], tf.shape(student_logits)[-1])
    teacher = sorted_probabilities(teacher_logits, temperature, size)
    student = sorted_probabilities(student_logits, temperature, size)
    values = tf.reduce_sum(tf.abs(teacher - student), axis=-1)
    return reduce_per_example(values, mask)


@register(
    "uld",
    "Universal Logit Distillation: teacher and student with different tokenizers",
)
@register_serializable()
class UniversalLogitDistillation(DistillationLoss):
    """Universal Logit Distillation (Boizard et al. 2024) across tokenizers.

    Compares sorted next-token probability vectors (see
    `universal_logit_distillation`), so teacher and student may have
    different vocabularies and tokenizers. The `Distiller` aligns the
    teacher's positions to the student's when batches carry the teacher's
    own tokens (`tf_distill.data.load_instructions(...,
    teacher_tokenizer=...)`); the paper adds the student's cross-entropy,
    which is the `Distiller`'s label loss (`student_loss_weight`).

    Args:
        temperature: Softening temperature `T > 0`. Defaults to 1.0.
        teacher: With several teachers, the one whose outputs the loss
            reads; `None` for the ensemble's logits.

    Example:

    >>> loss = UniversalLogitDistillation()
    >>> distiller = tf_distill.Distiller(bpe_teacher, byte_student, loss,
    ...                                  student_loss_weight=0.5)
    """

    # Teacher and student may have different vocabularies and tokenizers.
    cross_tokenizer = True

    def __init__(self, temperature=1.0, teacher=None):
        super().__init__(teacher=teacher)
        check_positive("temperature", temperature)
        self.temperature = float(temperature)

    def call(self, teacher_outputs, student_outputs, mask=None):
        return universal_logit_distillation(
            teacher_outputs, student_outputs, self.temperature, mask=mask
        )

    def validate_outputs(self, teacher_outputs, student_outputs):
        teacher_shape = static_shape(teacher_outputs)
        student_shape = static_shape(student_outputs)
        if not teacher_shape[:-1].is_compatible_with(student_shape[:-1]):
            raise ValueError(
                "Teacher and student logits must have the same positions (aligned "
                "by the Distiller when batches carry the teacher's own tokens). "
                f"Received: teacher logits of shape {tuple(teacher_shape)} and "
                f"student logits of shape {tuple(student_shape)}."
            )

    def get_config(self):
        return {"temperature": self.temperature, **super().get_config()}
