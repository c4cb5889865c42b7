"""Adapters: trainable projections from student to teacher feature shapes.

The "regressor" of FitNets (Romero et al. 2015): when a student layer is
narrower than the teacher's, a small trainable map (a Dense layer for
vectors, a 1×1 convolution for feature maps) projects it to the teacher's
width. Adapters belong to the Distiller, train with the student, and are
never part of the saved or exported student.
"""

from tf_distill import taps
from tf_distill.backend import keras


def _spatial_ratio(student_size, teacher_size, teacher_shape, student_shape):
    if student_size == teacher_size:
        return 1, 1
    if student_size > teacher_size and student_size % teacher_size == 0:
        return student_size // teacher_size, 1
    if teacher_size > student_size and teacher_size % student_size == 0:
        return 1, teacher_size // student_size
    raise ValueError(
        "Cannot match the spatial sizes of the tapped features: teacher "
        f"{tuple(teacher_shape)} and student {tuple(student_shape)}. One "
        "size must be a multiple of the other, to be average-pooled to it."
    )


def build_adapter(teacher_shape, student_shape, batch_norm=False, name="adapter"):
    """Builds the projection of student features onto the teacher's shape.

    Args:
        teacher_shape: The teacher feature shape, batch axis included.
        student_shape: The student feature shape, batch axis included.
        batch_norm: Follow a 1×1 convolution with BatchNormalization.
        name: The adapter's name.

    Returns:
        `(student_adapter, teacher_pool)`: a Keras model mapping student
        features to the teacher's shape, and a pooling layer for the teacher
        features (or `None`) when the teacher's maps are the larger ones.

    Raises:
        ValueError: for ranks other than 2 (vectors) and 4 (NHWC maps), or
            spatial sizes that are not multiples of each other.
    """
    teacher_shape = tuple(teacher_shape)
    student_shape = tuple(student_shape)
    if len(teacher_shape) != len(student_shape) or len(teacher_shape) not in (2, 4):
        raise ValueError(
            "Adapters map vectors `[batch, features]` or NHWC feature maps "
            "`[batch, height, width, channels]` of the same rank. Received: "
            f"teacher features {teacher_shape}, student features {student_shape}."
        )
    inputs = keras.Input(student_shape[1:])
    if len(teacher_shape) == 2:
        outputs = keras.layers.Dense(teacher_shape[-1], name=f"{name}_dense")(inputs)
        return keras.Model(inputs, outputs, name=name), None
    student_pool, teacher_pool = _spatial_ratio(
        student_shape[1], teacher_shape[1], teacher_shape, student_shape
    )
    if _spatial_ratio(student_shape[2], teacher_shape[2], teacher_shape, student_shape) != (
        student_pool,
        teacher_pool,
    ):
        raise ValueError(
            "The tapped feature maps must be pooled by the same factor along "
            f"height and width. Received: teacher {teacher_shape}, student "
            f"{student_shape}."
        )
    x = inputs
    if student_pool > 1:
        x = keras.layers.AveragePooling2D(student_pool, name=f"{name}_pool")(x)
    x = keras.layers.Conv2D(teacher_shape[-1], 1, use_bias=not batch_norm, name=f"{name}_conv")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    pool = None
    if teacher_pool > 1:
        pool = keras.layers.AveragePooling2D(teacher_pool, name=f"{name}_teacher_pool")
    return keras.Model(inputs, x, name=name), pool


def _symbolic_output(model, layer_name):
    if not taps.is_symbolic(model):
        return None
    if layer_name is None:
        return model.outputs[0]
    return taps.find_layer(model, layer_name).output


def build_loss_adapters(distillation_losses, teacher_models, student, batch_norm=False):
    """One adapter (or None) per loss, from the shapes of the tapped layers.

    Args:
        distillation_losses: The losses; those with `needs_adapter` get one.
        teacher_models: For each loss, the teacher model whose output it
            reads.
        student: The student model.
        batch_norm: As in `build_adapter`.

    Returns:
        `(adapters, teacher_pools)`: two lists with one entry per loss,
        `None` where a loss needs no adapter (or no teacher pooling).

    Raises:
        ValueError: for a loss needing an adapter with a subclassed model,
            or as `build_adapter`.
    """
    adapters, pools = [], []
    for index, (loss, teacher) in enumerate(zip(distillation_losses, teacher_models)):
        if not loss.needs_adapter:
            adapters.append(None)
            pools.append(None)
            continue
        teacher_tensor = _symbolic_output(teacher, loss.teacher_layer_name)
        student_tensor = _symbolic_output(student, loss.student_layer_name)
        if teacher_tensor is None or student_tensor is None:
            raise ValueError(
                f"{type(loss).__name__} learns an adapter from the tapped "
                "shapes, which needs Functional or Sequential models."
            )
        adapter, pool = build_adapter(
            teacher_tensor.shape, student_tensor.shape, batch_norm=batch_norm, name=f"adapter_{index}"
        )
        adapters.append(adapter)
        pools.append(pool)
    return adapters, pools
