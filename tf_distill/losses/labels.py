"""The student's loss on the true labels, and how sample weights apply to it.

The `Distiller`'s student outputs logits, so the loss given to `compile` is
read as a loss *from logits*: `"sparse_categorical_crossentropy"` and
`"categorical_crossentropy"` both mean `crossentropy_from_logits`, whatever
the label format.
"""

import warnings

from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf

_CROSSENTROPY_NAMES = (
    "auto",
    "crossentropy",
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
)


@register_serializable()
def crossentropy_from_logits(y_true, logits):
    """Cross-entropy of logits with sparse integer or one-hot labels.

    The label format is read from the ranks: labels with one axis fewer than
    the logits (or a trailing axis of 1) are class indices, labels of the
    logits' rank are one-hot or soft targets.

    Args:
        y_true: Class indices `[batch, ...]` (or `[batch, ..., 1]`), or
            one-hot or soft targets of the logits' shape.
        logits: Tensor `[batch, ..., classes]`.

    Returns:
        A float32 tensor `[batch, ...]`: one value per example (or position).
    """
    logits = tf.cast(logits, tf.float32)
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == logits.shape.rank and (y_true.shape[-1] != 1 or logits.shape[-1] == 1):
        return tf.nn.softmax_cross_entropy_with_logits(tf.cast(y_true, tf.float32), logits)
    if y_true.shape.rank == logits.shape.rank:
        y_true = tf.squeeze(y_true, -1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y_true, tf.int32), logits)


def resolve_student_loss(loss):
    """Turns the `loss` given to `Distiller.compile` into a per-example function.

    Args:
        loss: `None`, a crossentropy name (applied to logits), another Keras
            loss name, a `keras.losses.Loss` or a callable
            `fn(y_true, logits)`.

    Returns:
        A callable `fn(y_true, logits)`, or `None` for `loss=None`.

    Raises:
        ValueError: for anything else.
    """
    if loss is None:
        return None
    if isinstance(loss, str) and loss.lower() in _CROSSENTROPY_NAMES:
        # A Distiller's student outputs logits: the crossentropy names mean
        # crossentropy *from logits*, whatever the label format.
        return crossentropy_from_logits
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        if getattr(loss, "_fn_kwargs", {}).get("from_logits") is False or (
            getattr(loss, "from_logits", True) is False
        ):
            warnings.warn(
                f"The student loss {type(loss).__name__} has "
                "from_logits=False, but a Distiller's student outputs logits. "
                "Pass from_logits=True (or the loss's name, which tf_distill "
                "applies to logits).",
                stacklevel=3,
            )
        return loss.call
    if callable(loss):
        return loss
    raise ValueError(
        "Invalid value for argument `loss`. Expected a loss name, a Keras "
        f"loss or a callable. Received: loss={loss!r}"
    )


def label_mask(logits, sample_weight):
    """Per-position weights for token-level losses, or None.

    A `[batch, time]` (or `[batch, time, 1]`, as Keras accepts it) sample
    weight with `[batch, time, classes]` logits masks positions.
    """
    if sample_weight is None or logits.shape.rank is None or logits.shape.rank < 3:
        return None
    sample_weight = tf.convert_to_tensor(sample_weight)
    if sample_weight.shape.rank == logits.shape.rank and sample_weight.shape[-1] == 1:
        sample_weight = tf.squeeze(sample_weight, -1)
    if sample_weight.shape.rank == logits.shape.rank - 1:
        return sample_weight
    return None


def example_weights(sample_weight, mask):
    """One weight per example, or None (no weights, or used as a mask)."""
    if sample_weight is None or mask is not None:
        return None
    sample_weight = tf.cast(sample_weight, tf.float32)
    if sample_weight.shape.rank and sample_weight.shape.rank > 1:
        sample_weight = tf.reshape(sample_weight, [tf.shape(sample_weight)[0], -1])
        sample_weight = tf.reduce_mean(sample_weight, axis=-1)
    return sample_weight


# A sparse label of -1 marks an example without a label (a transfer set mixed
# into the labeled data): it is distilled, not scored against a label.
UNLABELED = -1


def fill_unlabeled(y, logits, teacher_logits):
    """Splits a batch's sparse labels into the labeled and the unlabeled.

    Sparse integer labels may hold `UNLABELED` (-1) for examples without a
    label. The student's label loss must skip those, and a loss that reads
    labels (DKD, DIST) gets the teacher's prediction in their place.

    Args:
        y: The batch's labels (or None).
        logits: The student's `[batch, classes]` logits.
        teacher_logits: The teacher's logits of the same shape.

    Returns:
        `(labels, labeled)`: the labels with -1 replaced by the teacher's
        argmax, and a float32 `[batch]` mask of the labeled examples; or
        `(y, None)` for one-hot, token-level or absent labels.
    """
    if y is None or logits.shape.rank != 2:
        return y, None
    y = tf.convert_to_tensor(y)
    if not y.dtype.is_integer:
        return y, None
    if y.shape.rank == 2 and y.shape[-1] == 1:
        y = tf.squeeze(y, -1)
    if y.shape.rank != 1:
        return y, None
    labeled = y >= 0
    guess = tf.cast(tf.argmax(teacher_logits, axis=-1), y.dtype)
    return tf.where(labeled, y, guess), tf.cast(labeled, tf.float32)


def keep_labeled(values, labeled):
    """Per-example label-loss `values` with unlabeled examples set to 0."""
    return values if labeled is None else values * labeled
