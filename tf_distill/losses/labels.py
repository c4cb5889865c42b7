"""Temporary (replaced at merge)."""

from tf_distill.backend import tf


def crossentropy_from_logits(y_true, logits):
    """Cross-entropy of logits with sparse integer or one-hot labels.

    The label format is read from the ranks: labels with one axis fewer than
    the logits (or a trailing axis of 1) are class indices, labels of the
    logits' rank are one-hot or soft targets.
    """
    logits = tf.cast(logits, tf.float32)
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == logits.shape.rank and (y_true.shape[-1] != 1 or logits.shape[-1] == 1):
        return tf.nn.softmax_cross_entropy_with_logits(tf.cast(y_true, tf.float32), logits)
    if y_true.shape.rank == logits.shape.rank:
        y_true = tf.squeeze(y_true, -1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y_true, tf.int32), logits)
