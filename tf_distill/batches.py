"""What a batch's inputs may carry besides the model inputs.

A `Distiller` batch's `x` is the models' inputs, or a dict with the inputs
under `INPUTS` and, beside them:

- `TEACHER_OUTPUTS`: the teacher's outputs, precomputed (see
  `tf_distill.cache_teacher_outputs`); the Distiller then makes no teacher
  forward pass;
- `EXAMPLE_INDICES`: each example's index in the data set, `[batch]`
  integers, for losses that keep per-example state (a memory bank, see
  `tf_distill.losses.CRDistillation`). `with_example_indices` adds them.
"""

from tf_distill.backend import tf

INPUTS = "inputs"
TEACHER_OUTPUTS = "teacher_outputs"
EXAMPLE_INDICES = "example_indices"

_CARRIED = (TEACHER_OUTPUTS, EXAMPLE_INDICES)


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
