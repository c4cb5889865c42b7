"""`Distiller(teacher_preprocessing=...)`: a teacher with its own inputs."""

import numpy as np
import pytest

import tf_distill
import tf_distill.cache
from tf_distill.backend import keras
from tf_distill.backend import tf


def _teacher(size):
    return keras.Sequential(
        [keras.Input((size, size, 1)), keras.layers.Flatten(), keras.layers.Dense(3)],
        name=f"teacher_{size}",
    )


def _student(size):
    return keras.Sequential(
        [keras.Input((size, size, 1)), keras.layers.Flatten(), keras.layers.Dense(3)],
        name=f"student_{size}",
    )


def _data(size=4, n=12):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, size, size, 1)).astype("float32")
    y = rng.integers(0, 3, size=n)
    return x, y


def test_teacher_sees_the_preprocessed_inputs():
    teacher, student = _teacher(8), _student(4)
    resize = keras.layers.Resizing(8, 8)
    distiller = tf_distill.Distiller(
        teacher=teacher, student=student, distillation_losses="kd",
        teacher_preprocessing=resize,
    )
    x, _ = _data()
    outputs = distiller.teacher_forward(tf.constant(x))
    expected = teacher(resize(x), training=False)
    np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-5, atol=1e-5)


def test_fit_traces_the_preprocessing_once_and_trains():
    calls = []

    def upsample(x):
        calls.append(1)  # runs only while tracing
        return tf.image.resize(x, (8, 8))

    teacher, student = _teacher(8), _student(4)
    distiller = tf_distill.Distiller(
        teacher=teacher, student=student, distillation_losses="kd",
        teacher_preprocessing=upsample,
    )
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = _data(n=24)
    teacher_weights = [w.numpy().copy() for w in teacher.weights]
    history = distiller.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert len(calls) == 1
    assert np.all(np.isfinite(history.history["loss"]))
    for before, after in zip(teacher_weights, teacher.weights):
        np.testing.assert_array_equal(before, after.numpy())
    # Without the preprocessing the teacher cannot read the student's inputs.
    plain = tf_distill.Distiller(teacher=teacher, student=student, distillation_losses="kd")
    plain.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="incompatible|expected shape|Input 0"):
        plain.fit(x, y, epochs=1, verbose=0)


def test_preprocessing_is_saved_with_the_distiller(tmp_path):
    distiller = tf_distill.Distiller(
        teacher=_teacher(8), student=_student(4), distillation_losses="kd",
        teacher_preprocessing=keras.layers.Resizing(8, 8),
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, _ = _data()
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.teacher_preprocessing, keras.layers.Resizing)
    np.testing.assert_allclose(
        loaded.teacher_forward(tf.constant(x))["logits"],
        distiller.teacher_forward(tf.constant(x))["logits"],
        rtol=1e-5, atol=1e-5,
    )


def test_the_cache_stores_the_preprocessed_teachers_outputs():
    teacher = _teacher(8)

    def distiller(interpolation):
        return tf_distill.Distiller(
            teacher=teacher, student=_student(4), distillation_losses="kd",
            teacher_preprocessing=keras.layers.Resizing(8, 8, interpolation=interpolation),
        )

    x, y = _data()
    cache = tf_distill.build_teacher_cache(distiller("bilinear"), (x, y), inference_batch_size=4)
    np.testing.assert_allclose(
        cache.outputs["logits"], teacher(tf.image.resize(x, (8, 8))), rtol=1e-5, atol=1e-5
    )
    # The preprocessing is part of the fingerprint.
    assert tf_distill.cache.cache_fingerprint(distiller("bilinear"), (x, y)) != (
        tf_distill.cache.cache_fingerprint(distiller("nearest"), (x, y))
    )


def test_a_non_callable_preprocessing_is_refused():
    with pytest.raises(ValueError, match=r"teacher_preprocessing.*Received: teacher_preprocessing=3"):
        tf_distill.Distiller(
            teacher=_teacher(4), student=_student(4), distillation_losses="kd",
            teacher_preprocessing=3,
        )


def test_preprocessing_layers_from_safe_steps():
    from tf_distill.teachers import preprocessed_shape
    from tf_distill.teachers import preprocessing_layers

    preprocessing = preprocessing_layers(
        [{"resize": [16, 16]}, {"repeat_channels": 3}, {"rescale": 2.0, "offset": 1.0}])
    x = np.arange(8 * 8, dtype="float32").reshape(1, 8, 8, 1)
    y = keras.ops.convert_to_numpy(preprocessing(x))
    assert y.shape == (1, 16, 16, 3)
    resized = keras.ops.convert_to_numpy(keras.layers.Resizing(16, 16)(x))
    for channel in range(3):
        np.testing.assert_allclose(y[..., channel], resized[..., 0] * 2.0 + 1.0, rtol=1e-6)
    assert preprocessed_shape(preprocessing, (8, 8, 1)) == (16, 16, 3)
    assert preprocessed_shape(None, (8, 8, 1)) == (8, 8, 1)
    assert preprocessing_layers([]) is None
    # Saved with the Distiller: the layers round-trip through their configs.
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(preprocessing))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), y, rtol=1e-6)


@pytest.mark.parametrize("steps, message", [
    ([{"resize": [32, 32]}, {"crop": 4}],
     "Invalid step `teacher_preprocessing[1]`. Expected one of {resize: ...}, "
     "{repeat_channels: ...}, {rescale: ..., offset: ...}. Received: "
     "teacher_preprocessing[1]={'crop': 4}"),
    ([{"resize": [32]}], "`teacher_preprocessing[0].resize` must be [height, width]"),
    ([{"repeat_channels": 0}], "`teacher_preprocessing[0].repeat_channels` must be a positive"),
    ([{"rescale": "x"}], "`teacher_preprocessing[0]` must give numbers for `rescale`"),
    ([{"resize": [8, 8], "repeat_channels": 3}], "Invalid step `teacher_preprocessing[0]`"),
    ("resize", "`teacher_preprocessing` must be a list of steps"),
])
def test_a_bad_preprocessing_step_is_refused_naming_it(steps, message):
    from tf_distill.teachers import preprocessing_layers

    with pytest.raises(ValueError) as error:
        preprocessing_layers(steps)
    assert message in str(error.value)
