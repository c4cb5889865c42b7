"""Aligning a teacher's positions to a student's when their tokenizers differ.

The same text tokenized by two tokenizers gives sequences of different
lengths whose positions do not correspond. Universal Logit Distillation
(Boizard et al. 2024) aligns them the simplest way: the k-th response token
of the student with the k-th response token of the teacher, for k below the
shorter response. `response_alignment` computes that map from the two loss
masks (NumPy, when the data is built); `align_teacher_outputs` applies it to
the teacher's outputs inside the step.

A batch carries the teacher's own tokens beside the student's inputs under
`tf_distill.batches.TEACHER_INPUTS`: `{"token_ids", "padding_mask",
"alignment"}`, with `alignment` int32 `[batch, student_time]`: the teacher
position aligned to each student position, or -1.
"""

import numpy as np

from tf_distill.backend import tf

ALIGNMENT = "alignment"
# The key of the aligned positions' mask among the teacher's outputs.
ALIGNED_MASK = "aligned_mask"


def response_alignment(student_mask, teacher_mask):
    """The teacher position aligned to each student position, or -1.

    Args:
        student_mask: `[batch, student_time]`, nonzero where a student
            position predicts a response token.
        teacher_mask: `[batch, teacher_time]`, the same for the teacher.

    Returns:
        int32 `[batch, student_time]`: for the k-th masked student position,
        the k-th masked teacher position; -1 elsewhere and beyond the
        teacher's last.
    """
    student_mask = np.asarray(student_mask) > 0
    teacher_mask = np.asarray(teacher_mask) > 0
    if len(student_mask) != len(teacher_mask):
        raise ValueError(
            "`student_mask` and `teacher_mask` must have one row per example. Received: "
            f"{len(student_mask)} and {len(teacher_mask)} rows"
        )
    alignment = np.full(student_mask.shape, -1, np.int32)
    for row, (student_row, teacher_row) in enumerate(zip(student_mask, teacher_mask)):
        student_positions = np.flatnonzero(student_row)
        teacher_positions = np.flatnonzero(teacher_row)
        count = min(len(student_positions), len(teacher_positions))
        alignment[row, student_positions[:count]] = teacher_positions[:count]
    return alignment


def align_teacher_outputs(outputs, alignment):
    """The teacher's token-level outputs at the student's positions.

    Args:
        outputs: `{key: tensor}`; tensors of rank ≥ 3 (`[batch,
            teacher_time, ...]`) are gathered along time, others kept.
        alignment: int `[batch, student_time]` from `response_alignment`.

    Returns:
        The outputs, each token-level one `[batch, student_time, ...]`
        (positions without a teacher position hold the teacher's first
        position's values, and are masked), and under `ALIGNED_MASK` the
        float32 `[batch, student_time]` mask of aligned positions.
    """
    alignment = tf.cast(alignment, tf.int32)
    positions = tf.maximum(alignment, 0)
    aligned = {}
    for key, value in outputs.items():
        if value.shape.rank is not None and value.shape.rank >= 3:
            value = tf.gather(value, positions, axis=1, batch_dims=1)
        aligned[key] = value
    aligned[ALIGNED_MASK] = tf.cast(alignment >= 0, tf.float32)
    return aligned


def distillation_mask(teacher_outputs, mask):
    """`mask` narrowed to the positions the teacher's outputs are aligned at."""
    aligned = teacher_outputs.get(ALIGNED_MASK)
    if aligned is None:
        return mask
    if mask is None:
        return aligned
    return tf.cast(mask, tf.float32) * aligned
