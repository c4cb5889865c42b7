"""Tests of `tf_distill.adapters` and of the Distiller's use of them."""

import numpy as np
import pytest

from tf_distill import Distiller
from tf_distill import LogitsDistillation
from tf_distill import losses
from tf_distill.backend import keras
from tf_distill.teachers import adapters


def fitnets(teacher_layer_name, student_layer_name):
    """The registry's FitNets loss (`needs_adapter = True`)."""
    loss = losses.get(
        {
            "name": "fitnets",
            "teacher_layer_name": teacher_layer_name,
            "student_layer_name": student_layer_name,
        }
    )
    assert loss.needs_adapter
    return loss


def conv_model(name, channels, size=8, pool=1):
    """NHWC CNN: `<name>_features` is a [size/pool, size/pool, channels] map."""
    inputs = keras.Input((size, size, 1))
    features = keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(inputs)
    if pool > 1:
        features = keras.layers.AveragePooling2D(pool)(features)
    features = keras.layers.Activation("linear", name=f"{name}_features")(features)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    return keras.Model(inputs, keras.layers.Dense(5, name=f"{name}_logits")(pooled), name=name)


# ---------------------------------------------------------------------------
# build_adapter.


def test_vector_adapter_is_a_dense_projection():
    adapter, pool = adapters.build_adapter((None, 32), (None, 8), name="vector")
    assert pool is None
    assert [type(layer).__name__ for layer in adapter.layers[1:]] == ["Dense"]
    features = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    kernel, bias = adapter.get_weights()
    np.testing.assert_allclose(adapter(features), features @ kernel + bias, rtol=1e-5, atol=1e-6)
    assert adapter.output.shape == (None, 32)


def test_feature_map_adapter_is_a_1x1_convolution():
    adapter, pool = adapters.build_adapter((None, 4, 4, 16), (None, 4, 4, 6), name="maps")
    assert pool is None
    conv = adapter.get_layer("maps_conv")
    assert conv.kernel_size == (1, 1)
    maps = np.random.default_rng(0).normal(size=(2, 4, 4, 6)).astype("float32")
    kernel, bias = conv.get_weights()
    expected = np.einsum("bhwc,cd->bhwd", maps, kernel[0, 0]) + bias
    np.testing.assert_allclose(adapter(maps), expected, rtol=1e-5, atol=1e-5)


def test_feature_map_adapter_with_batch_norm():
    adapter, _ = adapters.build_adapter((None, 4, 4, 16), (None, 4, 4, 6), batch_norm=True)
    assert adapter.get_layer("adapter_conv").use_bias is False
    assert isinstance(adapter.layers[-1], keras.layers.BatchNormalization)


def test_larger_student_maps_are_pooled_in_the_adapter():
    adapter, pool = adapters.build_adapter((None, 2, 2, 8), (None, 8, 8, 3), name="down")
    assert pool is None
    assert adapter.get_layer("down_pool").pool_size == (4, 4)
    assert adapter.output.shape == (None, 2, 2, 8)


def test_larger_teacher_maps_get_a_teacher_pool():
    adapter, pool = adapters.build_adapter((None, 8, 8, 8), (None, 4, 4, 3))
    assert adapter.output.shape == (None, 4, 4, 8)
    maps = np.arange(2 * 8 * 8 * 8, dtype="float32").reshape(2, 8, 8, 8)
    expected = maps.reshape(2, 4, 2, 4, 2, 8).mean(axis=(2, 4))
    np.testing.assert_allclose(pool(maps), expected, rtol=1e-6)


def test_adapter_errors():
    with pytest.raises(
        ValueError,
        match=r"Cannot match the spatial sizes of the tapped features: teacher \(None, 6, 6, 8\) "
        r"and student \(None, 4, 4, 3\). One size must be a multiple of the other",
    ):
        adapters.build_adapter((None, 6, 6, 8), (None, 4, 4, 3))
    with pytest.raises(ValueError, match="pooled by the same factor along height and width"):
        adapters.build_adapter((None, 8, 4, 8), (None, 4, 8, 3))
    with pytest.raises(
        ValueError,
        match=r"Received: teacher features \(None, 4, 4, 8\), student features \(None, 8\)",
    ):
        adapters.build_adapter((None, 4, 4, 8), (None, 8))
    with pytest.raises(ValueError, match=r"Received: teacher features \(None, 3, 8\)"):
        adapters.build_adapter((None, 3, 8), (None, 3, 4))


# ---------------------------------------------------------------------------
# The Distiller's adapters.


def test_fitnets_vector_adapter_trains_and_is_not_saved(make_mlp, tiny_data, tmp_path):
    x, y = tiny_data
    teacher, student = make_mlp("teacher", hidden=32), make_mlp("student", hidden=8)
    distiller = Distiller(
        teacher,
        student,
        [LogitsDistillation(2.0), fitnets("teacher_hidden", "student_hidden")],
        student_loss_weight=0.0,
    )
    adapter = distiller.adapters[1]
    assert distiller.adapters[0] is None
    adapter_ids = {id(v) for v in adapter.trainable_variables}
    assert len(adapter_ids) == 2
    assert adapter_ids <= {id(v) for v in distiller.trainable_variables}
    assert len(distiller.trainable_variables) == len(student.trainable_variables) + 2

    # The hint loss is mean((teacher_hidden − adapter(student_hidden))²).
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    history = distiller.fit(x, y, batch_size=64, verbose=0).history
    teacher_hidden = keras.Model(teacher.inputs[0], teacher.get_layer("teacher_hidden").output)(x)
    student_hidden = keras.Model(student.inputs[0], student.get_layer("student_hidden").output)(x)
    kernel, bias = adapter.get_weights()
    hint = ((np.asarray(teacher_hidden) - (np.asarray(student_hidden) @ kernel + bias)) ** 2).mean()
    teacher_logits, student_logits = np.asarray(teacher(x), np.float64), np.asarray(student(x))
    log_p_t = teacher_logits / 2 - np.log(np.exp(teacher_logits / 2).sum(1, keepdims=True))
    log_p_s = student_logits / 2 - np.log(np.exp(student_logits / 2).sum(1, keepdims=True))
    kd = 4 * (np.exp(log_p_t) * (log_p_t - log_p_s)).sum(1).mean()
    np.testing.assert_allclose(history["distillation_loss"][0], kd + hint, rtol=1e-5)

    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in adapter.get_weights()]
    history = distiller.fit(x, y, batch_size=16, epochs=3, verbose=0).history
    assert all(not np.allclose(a, b) for a, b in zip(before, adapter.get_weights()))
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]

    path = str(tmp_path / "student.keras")
    distiller.student.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.count_params() == student.count_params()
    assert loaded.count_params() + adapter.count_params() + teacher.count_params() == (
        distiller.count_params()
    )
    assert not any("adapter" in layer.name for layer in loaded.layers)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6
    )

    # The whole distiller, saved to resume, brings its adapter back.
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    for a, b in zip(adapter.get_weights(), restored.adapters[1].get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "teacher_pool, student_pool, adapter_pool, teacher_pool_size",
    [(1, 1, None, None), (2, 1, (2, 2), None), (1, 2, None, (2, 2))],
    ids=["same_size", "student_larger", "teacher_larger"],
)
@pytest.mark.slow
def test_fitnets_feature_maps(teacher_pool, student_pool, adapter_pool, teacher_pool_size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 5, 16)
    teacher = conv_model("teacher", channels=8, pool=teacher_pool)
    student = conv_model("student", channels=3, pool=student_pool)
    distiller = Distiller(
        teacher, student, fitnets("teacher_features", "student_features"), student_loss_weight=0.5
    )
    adapter, teacher_pool_layer = distiller.adapters[0], distiller.teacher_pools[0]
    assert adapter.get_layer("adapter_0_conv").kernel_size == (1, 1)
    if adapter_pool is None:
        assert "adapter_0_pool" not in [layer.name for layer in adapter.layers]
    else:
        assert adapter.get_layer("adapter_0_pool").pool_size == adapter_pool
    if teacher_pool_size is None:
        assert teacher_pool_layer is None
    else:
        assert teacher_pool_layer.pool_size == teacher_pool_size
    side = 4 if 2 in (teacher_pool, student_pool) else 8
    assert adapter.output.shape == (None, side, side, 8)

    # The hint compares the (pooled) teacher map with the adapted student map.
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    logged = distiller.fit(x, y, batch_size=16, verbose=0).history["distillation_loss"][0]
    teacher_maps = keras.Model(teacher.inputs[0], teacher.get_layer("teacher_features").output)(x)
    student_maps = keras.Model(student.inputs[0], student.get_layer("student_features").output)(x)
    teacher_maps = np.asarray(teacher_maps, np.float64)
    if teacher_pool_size is not None:
        teacher_maps = teacher_maps.reshape(16, side, 2, side, 2, 8).mean(axis=(2, 4))
    expected = ((teacher_maps - np.asarray(adapter(student_maps))) ** 2).mean()
    np.testing.assert_allclose(logged, expected, rtol=1e-5)

    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in adapter.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["distillation_loss"]))
    assert all(not np.allclose(a, b) for a, b in zip(before, adapter.get_weights()))


def test_feature_maps_of_unrelated_sizes_are_refused():
    teacher = conv_model("teacher", channels=8, size=12, pool=1)
    student = conv_model("student", channels=3, size=12, pool=4)  # 12×12 vs 3×3: fine
    Distiller(teacher, student, fitnets("teacher_features", "student_features"))
    student = conv_model("student", channels=3, size=12, pool=3)  # 4×4 vs 12×12: fine
    Distiller(teacher, student, fitnets("teacher_features", "student_features"))
    teacher = conv_model("teacher", channels=8, size=12, pool=2)  # 6×6 vs 4×4: no
    with pytest.raises(
        ValueError, match=r"teacher \(None, 6, 6, 8\) and student \(None, 4, 4, 3\)"
    ):
        Distiller(teacher, student, fitnets("teacher_features", "student_features"))


def test_adapters_need_symbolic_models(make_mlp):
    class Subclassed(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.out = keras.layers.Dense(5)

        def call(self, inputs):
            return self.out(inputs)

    student = Subclassed()
    student(np.zeros((1, 8), "float32"))
    with pytest.raises(ValueError, match="learns an adapter from the tapped shapes"):
        Distiller(make_mlp("teacher"), student, fitnets(None, None))


def test_batch_norm_adapter_is_in_inference_mode_in_evaluate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 5, 16)
    teacher, student = conv_model("teacher", channels=8), conv_model("student", channels=3)
    distiller = Distiller(
        teacher,
        student,
        fitnets("teacher_features", "student_features"),
        adapter_batch_norm=True,
    )
    batch_norm = distiller.adapters[0].get_layer("adapter_0_bn")
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    moving_mean = batch_norm.moving_mean.numpy().copy()
    distiller.fit(x, y, batch_size=8, verbose=0)
    # Training updates the moving statistics; evaluating must not.
    trained_mean = batch_norm.moving_mean.numpy().copy()
    assert not np.allclose(trained_mean, moving_mean)
    first = distiller.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_array_equal(batch_norm.moving_mean.numpy(), trained_mean)
    second = distiller.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(second["distillation_loss"], first["distillation_loss"], rtol=1e-6)
