"""A teacher's input preprocessing from a fixed vocabulary of safe steps.

A teacher made for other images (a `keras.applications` model at 32×32×3
teaching an MNIST student at 28×28×1) reads the student's inputs through
`Distiller(teacher_preprocessing=...)`. A config names that preprocessing as
data, a list of steps from `PREPROCESSING_STEPS`, which
`preprocessing_layers` turns into Keras layers; no step runs user code.
"""

import numpy as np

from tf_distill.backend import keras
from tf_distill.backend import register_serializable

# Each step: its keys, the first naming it. `{resize: [height, width]}`,
# `{repeat_channels: 3}` (grey → RGB), `{rescale: 255.0, offset: 0.0}`.
PREPROCESSING_STEPS = {
    "resize": ("resize",),
    "repeat_channels": ("repeat_channels",),
    "rescale": ("rescale", "offset"),
}


@register_serializable()
class RepeatChannels(keras.layers.Layer):
    """Repeats each channel of `[batch, ..., channels]` inputs `repeats` times.

    `RepeatChannels(3)` turns grey images (1 channel) into the 3 channels an
    RGB model reads.
    """

    def __init__(self, repeats, **kwargs):
        super().__init__(**kwargs)
        self.repeats = int(repeats)

    def call(self, inputs):
        return keras.ops.repeat(inputs, self.repeats, axis=-1)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        return (*input_shape[:-1], None if channels is None else channels * self.repeats)

    def get_config(self):
        return {**super().get_config(), "repeats": self.repeats}


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _step_layer(index, step, argument_name):
    where = f"{argument_name}[{index}]"
    valid = ", ".join(f"{{{', '.join(f'{key}: ...' for key in keys)}}}"
                      for keys in PREPROCESSING_STEPS.values())
    kind = next((name for name in PREPROCESSING_STEPS if isinstance(step, dict) and name in step),
                None)
    if kind is None or set(step) - set(PREPROCESSING_STEPS[kind]):
        raise ValueError(
            f"Invalid step `{where}`. Expected one of {valid}. Received: {where}={step!r}"
        )
    value = step[kind]
    if kind == "resize":
        if not (isinstance(value, (list, tuple)) and len(value) == 2
                and all(_positive_int(size) for size in value)):
            raise ValueError(f"`{where}.resize` must be [height, width], two positive "
                             f"integers. Received: resize={value!r}")
        return keras.layers.Resizing(int(value[0]), int(value[1]))
    if kind == "repeat_channels":
        if not _positive_int(value):
            raise ValueError(f"`{where}.repeat_channels` must be a positive integer. "
                             f"Received: repeat_channels={value!r}")
        return RepeatChannels(value)
    offset = step.get("offset", 0.0)
    if not (_number(value) and _number(offset)):
        raise ValueError(f"`{where}` must give numbers for `rescale` and `offset`. "
                         f"Received: rescale={value!r}, offset={offset!r}")
    return keras.layers.Rescaling(float(value), float(offset))


def preprocessing_layers(steps, argument_name="teacher_preprocessing"):
    """Keras layers that prepare a teacher's inputs, from a list of safe steps.

    Args:
        steps: A list of one-step mappings, applied in order:
            `{"resize": [height, width]}` (`keras.layers.Resizing`),
            `{"repeat_channels": n}` (each channel repeated `n` times: 3 makes
            grey images RGB), `{"rescale": scale, "offset": offset}`
            (`keras.layers.Rescaling`: `x * scale + offset`, `offset`
            defaulting to 0).
        argument_name: What errors call the steps (a config's
            `teacher.preprocessing`).

    Returns:
        A `keras.Sequential` of the steps' layers, for
        `Distiller(teacher_preprocessing=...)`, or None for no steps.

    Raises:
        ValueError: naming the first invalid step and listing the valid ones.

    Example:

    >>> preprocessing = preprocessing_layers(
    ...     [{"resize": [32, 32]}, {"repeat_channels": 3}, {"rescale": 255.0}])
    >>> Distiller(teacher, student, teacher_preprocessing=preprocessing)
    """
    if steps is None:
        return None
    if not isinstance(steps, (list, tuple)):
        raise ValueError(f"`{argument_name}` must be a list of steps. Received: "
                         f"{argument_name}={steps!r}")
    if not steps:
        return None
    layers = [_step_layer(index, step, argument_name) for index, step in enumerate(steps)]
    return keras.Sequential(layers, name="teacher_preprocessing")


def preprocessed_shape(preprocessing, input_shape):
    """The shape of one example `input_shape` after `preprocessing` (None: as is)."""
    if preprocessing is None:
        return tuple(input_shape)
    example = np.zeros((1, *input_shape), dtype="float32")
    return tuple(int(size) for size in keras.ops.shape(preprocessing(example))[1:])
