"""The model and data an export receives, as the converter and interpreter need them.

A `Distiller` becomes its student, a pruned student loses its wrappers, and
arrays or `tf.data` pipelines become NumPy batches of the model's input rank
and dtype.
"""

import numpy as np

from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.backend import tf


def unwrap_student(model):
    """The model to export: a Distiller's student, else the model itself."""
    student = getattr(model, "student", None)
    if student is not None:
        model = student
    if not isinstance(model, keras.Model):
        hint = ""
        if not LEGACY_KERAS and type(model).__module__.startswith("tf_keras"):
            hint = (
                " This is a tf_keras model: set TF_USE_LEGACY_KERAS=1 before "
                "importing TensorFlow and tf_distill to export it."
            )
        raise TypeError(
            "`model` must be a Keras model or a Distiller with a `.student`. "
            f"Received: model of type {type(model).__name__}.{hint}"
        )
    return model


def strip_pruning_wrappers(model):
    """`model` without TFMOT pruning wrappers, which would ship their masks.

    A pruned student still wrapped for training computes `kernel * mask` at
    run time, so the converter can neither fold nor quantize its kernels.
    """
    if not LEGACY_KERAS or not _has_pruning_wrapper(model):
        return model
    from tf_distill import compression

    return compression.strip_pruning(model)


def _has_pruning_wrapper(layer):
    # By class name, so that TFMOT is imported only when it is in use.
    if type(layer).__name__ == "PruneLowMagnitude":
        return True
    return any(_has_pruning_wrapper(inner) for inner in getattr(layer, "layers", []))


def validation_xy(validation_data, model):
    """`validation_data` as NumPy `(x, y)`; `y` is `None` for inputs alone."""
    if isinstance(validation_data, tf.data.Dataset):
        input_rank, _ = _input_rank_and_dtype(model)
        xs, ys = [], []
        for element in validation_data.as_numpy_iterator():
            if isinstance(element, (tuple, list)):
                xs.append(_batched(element[0], input_rank))
                if len(element) > 1:
                    ys.append(np.asarray(element[1]).reshape(len(xs[-1]), -1))
            else:
                xs.append(_batched(element, input_rank))
        if not xs:
            raise ValueError("`validation_data` is an empty dataset.")
        x = np.concatenate(xs)
        y = np.concatenate(ys) if ys else None
    elif isinstance(validation_data, tuple):
        if len(validation_data) != 2:
            raise ValueError(
                "`validation_data` must be `(x, y)`. Received a tuple of "
                f"{len(validation_data)} items."
            )
        x, y = validation_data
    else:
        x, y = validation_data, None
    x = examples(x, model, "validation_data")
    if y is not None:
        y = np.asarray(y)
        if len(x) != len(y):
            raise ValueError(
                "`validation_data` must be `(x, y)` with as many labels as "
                f"inputs. Received {len(x)} inputs and {len(y)} labels."
            )
    return x, y


def examples(data, model, argument, limit=None):
    """Inputs (an array, or tf.data of inputs or `(inputs, ...)`) as NumPy.

    Args:
        data: The inputs.
        model: The Keras model they are for (its input rank and dtype).
        argument: The argument's name, for error messages.
        limit: Keep at most this many examples.

    Returns:
        A NumPy array of the model's input dtype, batch axis first.
    """
    input_rank, input_dtype = _input_rank_and_dtype(model)
    if isinstance(data, tf.data.Dataset):
        batches, count = [], 0
        for element in data.as_numpy_iterator():
            if isinstance(element, (tuple, list)):
                element = element[0]
            batches.append(_batched(element, input_rank))
            count += len(batches[-1])
            if limit is not None and count >= limit:
                break
        if not batches:
            raise ValueError(f"`{argument}` is an empty dataset.")
        data = np.concatenate(batches)
    array = np.asarray(data)
    if array.dtype == object or array.ndim == 0:
        raise ValueError(
            f"`{argument}` must be a NumPy array of inputs or a "
            f"tf.data.Dataset. Received: {argument} of type {type(data).__name__}"
        )
    if input_rank is not None and array.ndim != input_rank:
        raise ValueError(
            f"`{argument}` must hold a batch of inputs of rank {input_rank} "
            f"(the model's input rank, batch included). Received an array of "
            f"shape {array.shape}."
        )
    input_shape = _input_shape(model)
    if input_shape is not None and any(
        size is not None and size != given for size, given in zip(input_shape, array.shape[1:])
    ):
        # Caught here, before converting: the converter itself fails deep
        # inside (`conv.cc ... input_channel % filter_input_channel != 0`).
        raise ValueError(
            f"The model takes inputs of shape {input_shape} but `{argument}` "
            f"holds inputs of shape {tuple(array.shape[1:])}. Give data of the "
            f"model's input shape. Received: {argument} of shape {tuple(array.shape)}."
        )
    if len(array) == 0:
        raise ValueError(f"`{argument}` is empty.")
    if limit is not None:
        array = array[:limit]
    return array.astype(input_dtype)


def _batched(element, input_rank):
    element = np.asarray(element)
    if input_rank is not None and element.ndim == input_rank - 1:
        return element[None]
    return element


def _input_shape(model):
    # The input shape without the batch axis; None for a model not yet built.
    inputs = getattr(model, "inputs", None)
    return tuple(inputs[0].shape)[1:] if inputs else None


def _input_rank_and_dtype(model):
    inputs = getattr(model, "inputs", None)
    if inputs:
        return len(inputs[0].shape), np.dtype(_dtype_name(inputs[0].dtype))
    return None, np.dtype("float32")


def _dtype_name(dtype):
    return dtype if isinstance(dtype, str) else tf.as_dtype(dtype).name
