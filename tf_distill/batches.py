"""What a batch carries, and the one place where it is unpacked.

Every distiller's step starts with `unpack(data, models)`, which returns a
`Batch`: the models' inputs, the labels, the sample weight, and what `x`
may carry besides the inputs. A batch's `x` is the models' inputs, or a dict
with the inputs under `INPUTS` and, beside them:

- `TEACHER_OUTPUTS`: the teacher's outputs, precomputed (see
  `tf_distill.cache_teacher_outputs`); the Distiller then makes no teacher
  forward pass;
- `EXAMPLE_INDICES`: each example's index in the data set, `[batch]`
  integers, for losses that keep per-example state (a memory bank, see
  `tf_distill.losses.CRDistillation`). `with_example_indices` adds them;
- `TEACHER_INPUTS`: the teacher's own inputs, when its tokenizer differs
  from the student's: `{"token_ids", "padding_mask", "alignment"}` (see
  `tf_distill.language.alignment`); the teacher reads them instead of the
  student's inputs, and its outputs are aligned to the student's positions.

Token batches (KerasHub's `{"token_ids", "padding_mask"}`) are checked
against the models' maximum length, and weighted by their padding mask when
no sample weight is given (see `tf_distill.language.models`).
"""

from typing import Any
from typing import NamedTuple

from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.language import models as language_models

INPUTS = "inputs"
TEACHER_OUTPUTS = "teacher_outputs"
EXAMPLE_INDICES = "example_indices"
TEACHER_INPUTS = "teacher_inputs"

_CARRIED = (TEACHER_OUTPUTS, EXAMPLE_INDICES, TEACHER_INPUTS)


def is_wrapped(x):
    """Whether `x` is `{INPUTS: ..., ...}` rather than the inputs themselves."""
    return (
        isinstance(x, dict)
        and INPUTS in x
        and len(x) > 1
        and all(key == INPUTS or key in _CARRIED for key in x)
    )


def split_inputs(x):
    """Returns `(inputs, teacher_outputs or None, example_indices or None)`."""
    if not is_wrapped(x):
        return x, None, None
    return x[INPUTS], x.get(TEACHER_OUTPUTS), x.get(EXAMPLE_INDICES)


class Batch(NamedTuple):
    """One unpacked batch, as every distiller's step reads it.

    Attributes:
        x: The models' inputs.
        y: The labels, or `None` (unlabeled data).
        sample_weight: Per-example weights, a `[batch, time]` mask for
            token-level losses, or `None`.
        teacher_outputs: Cached teacher outputs `{key: tensor}`, or `None`.
        example_indices: Each example's index in the data set, or `None`.
        labeled: A float32 mask (`[batch]`, or `[batch, time]` for token
            labels) of the labels that count in the label loss, set by a
            distiller that trains on batches without labels (the on-policy
            distiller's samples), or `None`: every label counts, but those
            marked unlabeled (see `tf_distill.losses.labels.UNLABELED`).
        teacher_inputs: The teacher's own inputs (another tokenizer's
            tokens, with their alignment to the student's), or `None`: the
            teacher reads `x`.
    """

    x: Any
    y: Any = None
    sample_weight: Any = None
    teacher_outputs: Any = None
    example_indices: Any = None
    labeled: Any = None
    teacher_inputs: Any = None


def unpack(data, models=()):
    """Unpacks any batch a distiller is given into a `Batch`.

    `keras.utils.unpack_x_y_sample_weight` first; then the inputs are split
    from what they carry (`split_inputs`); a token batch is checked against
    each model's maximum sequence length (before any work, at trace time)
    and, without sample weight, weighted by its padding mask.

    Args:
        data: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`.
        models: The models that will read the inputs.

    Returns:
        A `Batch`.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    teacher_inputs = x.get(TEACHER_INPUTS) if is_wrapped(x) else None
    x, teacher_outputs, example_indices = split_inputs(x)
    language_models.check_sequence_length(models, x)
    sample_weight = language_models.padding_sample_weight(x, sample_weight)
    return Batch(x, y, sample_weight, teacher_outputs, example_indices,
                 teacher_inputs=teacher_inputs)


def with_example_indices(dataset):
    """Adds each example's index to an unbatched `tf.data.Dataset`.

    Each element `(x, ...)` becomes `({"inputs": x, "example_indices": i},
    ...)`, with `i` the element's position (an int64 scalar); batch it
    afterwards. An element whose `x` already carries `TEACHER_OUTPUTS` keeps
    them.

    Args:
        dataset: An unbatched `tf.data.Dataset` of `x`, `(x, y)` or
            `(x, y, sample_weight)`, in a fixed order (index before
            shuffling).

    Returns:
        The dataset with indices.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            "`dataset` must be a tf.data.Dataset. Received: dataset of type "
            f"{type(dataset).__name__}"
        )

    def add(index, element):
        if isinstance(element, tuple):
            x, rest = element[0], element[1:]
        else:
            x, rest = element, ()
        if is_wrapped(x):
            x = dict(x)
        else:
            x = {INPUTS: x}
        x[EXAMPLE_INDICES] = index
        return (x, *rest) if rest else x

    return dataset.enumerate().map(add)
