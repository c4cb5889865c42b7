"""The student's loss on the true labels, and how sample weights apply to it.

The `Distiller`'s student outputs logits, so the loss given to `compile` is
read as a loss *from logits*: `"sparse_categorical_crossentropy"` and
`"categorical_crossentropy"` both mean `crossentropy_from_logits`, whatever
the label format. So does the `"accuracy"` metric (`resolve_metrics`): both
read the format of each batch's labels (`label_format`), and refuse labels
that fit neither form.
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


SPARSE = "sparse"
ONE_HOT = "one_hot"


def label_format(y_true, logits):
    """Reads the format of labels from the static shapes: sparse or one-hot.

    Labels with one axis fewer than the logits (or a trailing axis of 1) are
    class indices; labels of the logits' shape are one-hot or soft targets.

    Args:
        y_true: The labels (a tensor or an array).
        logits: The student's logits `[batch, ..., classes]`.

    Returns:
        `SPARSE` or `ONE_HOT`.

    Raises:
        ValueError: for labels of a shape that fits neither form, such as
            `(batch, 2)` for 10 classes.
    """
    labels_shape = tf.TensorShape(getattr(y_true, "shape", None))
    logits_shape = tf.TensorShape(logits.shape)
    if labels_shape.rank is None or logits_shape.rank is None:
        return SPARSE  # Unknown ranks: read as class indices, as before.
    rank, classes = logits_shape.rank, logits_shape[-1]
    batch_shape = logits_shape[:-1]
    if labels_shape.rank == rank and (labels_shape[-1] != 1 or classes == 1):
        if labels_shape.is_compatible_with(logits_shape):
            return ONE_HOT
    elif labels_shape.rank == rank and labels_shape[:-1].is_compatible_with(batch_shape):
        return SPARSE
    elif labels_shape.rank == rank - 1 and labels_shape.is_compatible_with(batch_shape):
        return SPARSE
    raise ValueError(
        "Invalid value for argument `y` (the labels) for logits of shape "
        f"{_shape(logits_shape)}. Expected class indices of shape {_shape(batch_shape)} "
        f"or {_shape(batch_shape + [1])}, or one-hot labels of shape "
        f"{_shape(logits_shape)}. Received: y with shape {_shape(labels_shape)}"
    )


def class_indices(labels):
    """Each example's class, from the labels a loss is given (DKD, CRD).

    Args:
        labels: Class indices `[batch]` (or `[batch, 1]`), or one-hot (or
            soft) labels `[batch, classes]`, whose argmax is the class.

    Returns:
        An integer `[batch]` tensor (int64 unless the indices were integers).

    Raises:
        ValueError: for labels of another rank.
    """
    labels = tf.convert_to_tensor(labels)
    rank = labels.shape.rank
    last = labels.shape[-1] if rank else None
    if rank == 2 and last != 1:
        indices = tf.argmax(labels, axis=-1)
    elif rank == 2 or rank == 1:
        indices = tf.reshape(labels, [-1])
    else:
        raise ValueError(
            "`labels` must be class indices `[batch]` or one-hot "
            f"`[batch, classes]`. Received: labels of shape {tuple(labels.shape)}."
        )
    if not indices.dtype.is_integer:
        indices = tf.cast(indices, tf.int64)
    return indices


def _shape(shape):
    return str(tuple(shape.as_list()))


@register_serializable()
def crossentropy_from_logits(y_true, logits):
    """Cross-entropy of logits with sparse integer or one-hot labels.

    The label format is read from the ranks (`label_format`): labels with one
    axis fewer than the logits (or a trailing axis of 1) are class indices,
    labels of the logits' shape are one-hot or soft targets.

    Args:
        y_true: Class indices `[batch, ...]` (or `[batch, ..., 1]`), or
            one-hot or soft targets of the logits' shape.
        logits: Tensor `[batch, ..., classes]`.

    Returns:
        A float32 tensor `[batch, ...]`: one value per example (or position).

    Raises:
        ValueError: for labels that fit neither form.
    """
    logits = tf.cast(logits, tf.float32)
    y_true = tf.convert_to_tensor(y_true)
    if label_format(y_true, logits) == ONE_HOT:
        return tf.nn.softmax_cross_entropy_with_logits(tf.cast(y_true, tf.float32), logits)
    if y_true.shape.rank == logits.shape.rank:
        y_true = tf.squeeze(y_true, -1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y_true, tf.int32), logits)


@register_serializable()
def accuracy_from_logits(y_true, logits):
    """1.0 where the logits' argmax is the labels' class, else 0.0.

    The label format is read from each batch's labels (`label_format`), as
    the label loss reads it: Keras's `"accuracy"` instead picks sparse or
    categorical accuracy once, from the first labels it sees, and then
    misreads labels of the other format. One logit: binary accuracy, as in
    Keras.

    Args:
        y_true: Class indices or one-hot labels (see `label_format`).
        logits: Tensor `[batch, ..., classes]`.

    Returns:
        A float tensor `[batch, ...]`.

    Raises:
        ValueError: for labels that fit neither form.
    """
    logits = tf.convert_to_tensor(logits)
    y_true = tf.convert_to_tensor(y_true)
    if logits.shape.rank and logits.shape[-1] == 1:
        return keras.metrics.binary_accuracy(y_true, logits)
    if label_format(y_true, logits) == ONE_HOT:
        return keras.metrics.categorical_accuracy(y_true, logits)
    return keras.metrics.sparse_categorical_accuracy(y_true, logits)


_ACCURACY_NAMES = ("accuracy", "acc")


class LogitsAccuracy(keras.metrics.MeanMetricWrapper):
    """The accuracy of logits against sparse or one-hot labels, read per
    batch (`accuracy_from_logits`); higher is better, as Keras's `Accuracy`
    (so `EarlyStopping(monitor="val_accuracy")` maximizes it)."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(accuracy_from_logits, name=name, dtype=dtype)
        self._direction = "up"

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def resolve_metrics(metrics):
    """The `metrics` given to `compile`, with each accuracy name
    (`"accuracy"`, `"acc"`) made a metric of `accuracy_from_logits`, so that
    it follows the format of each batch's labels.

    Args:
        metrics: `None`, or a list (or a dict of lists) of metric names and
            objects.

    Returns:
        The same structure, each accuracy name a new metric of that name.
    """

    def resolve(metric):
        if isinstance(metric, str) and metric.lower() in _ACCURACY_NAMES:
            return LogitsAccuracy(name=metric)
        return metric

    if metrics is None:
        return None
    return tf.nest.map_structure(resolve, metrics)


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
