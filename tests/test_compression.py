"""Tests for tf_distill.compression: pruning and QAT students (TFMOT).

TFMOT wraps only tf_keras models, and TF_USE_LEGACY_KERAS must be set before
TensorFlow is imported, so these tests run in their own process:

    TF_USE_LEGACY_KERAS=1 pytest tests/test_compression.py   (`make test` runs it so)

Under Keras 3 they are skipped; the error raised there is tested in
tests/export/test_pipeline.py.
"""

import gzip
import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras

pytestmark = [
    pytest.mark.legacy_keras,
    pytest.mark.skipif(
        not LEGACY_KERAS, reason="needs TF_USE_LEGACY_KERAS=1 (`make test` runs it so)"
    ),
]

BATCH_SIZE = 64


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8×8 digits, flattened to 64 features in [0, 1]."""
    data = load_digits()
    x = (data.images / 16.0).astype("float32").reshape(-1, 64)
    y = data.target.astype("int64")
    return x[:1400], y[:1400], x[1400:], y[1400:]


def make_student(seed=0, hidden=64):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def make_cnn_student(seed=0):
    """A small convnet on the 8×8 digits: its first and last layers are small."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Reshape((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="first_conv"),  # 72 weights
            keras.layers.Conv2D(16, 3, activation="relu", name="second_conv"),  # 1,152
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="features"),  # 8,192
            keras.layers.Dense(10, name="logits"),  # 320
        ]
    )


CNN_KERNEL_SIZES = {"first_conv": 72, "second_conv": 1152, "features": 8192, "logits": 320}


def compile_for_labels(model):
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def steps_for(epochs, num_examples):
    return epochs * math.ceil(num_examples / BATCH_SIZE)


def kernels(model):
    return [layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")]


@pytest.fixture(scope="module")
def pruned(digits):
    """A student pruned to 70%, every layer, in a plain `fit`: (wrapped, stripped)."""
    from tf_distill import compression

    x_train, y_train, _, _ = digits
    epochs = 6
    # Full sparsity one epoch before the end, so the last epoch fine-tunes.
    end_step = steps_for(epochs - 1, len(x_train))
    wrapped = compression.prune_student(
        make_student(), target_sparsity=0.7, end_step=end_step, frequency=5, exclude=()
    )
    compile_for_labels(wrapped)
    wrapped.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        verbose=0,
        callbacks=compression.pruning_callbacks(),
    )
    return wrapped, compression.strip_pruning(wrapped)


def test_pruning_reaches_target_sparsity(pruned, digits):
    from tf_distill import compression

    wrapped, stripped = pruned
    _, _, x_val, y_val = digits
    assert compression.sparsity(wrapped) == pytest.approx(0.7, abs=0.02)
    assert compression.sparsity(stripped) == pytest.approx(0.7, abs=0.02)
    # With `exclude=()`, each kernel is pruned on its own, not only on average.
    assert len(kernels(stripped)) == 2
    for kernel in kernels(stripped):
        assert np.mean(kernel == 0) == pytest.approx(0.7, abs=0.02)
    assert not any(type(layer).__name__ == "PruneLowMagnitude" for layer in stripped.layers)
    np.testing.assert_allclose(
        stripped.predict(x_val, verbose=0), wrapped.predict(x_val, verbose=0), atol=1e-5
    )
    accuracy = np.mean(stripped.predict(x_val, verbose=0).argmax(-1) == y_val)
    assert accuracy > 0.8


def test_sparsity_counts_only_prunable_kernels():
    from tf_distill import compression

    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )
    first, _, second = model.layers
    first.set_weights([np.array([[0, 1, 0, 1, 0]] * 4, "float32"), np.zeros(5, "float32")])
    second.set_weights([np.ones((5, 2), "float32"), np.zeros(2, "float32")])
    # 12 zeros in 20 + 10 kernel entries; zero biases and the batch-norm
    # moving mean do not count.
    assert compression.sparsity(model) == pytest.approx(12 / 30)
    # Nested models are searched.
    outer = keras.Sequential([keras.Input((4,)), model])
    assert compression.sparsity(outer) == pytest.approx(12 / 30)
    assert compression.sparsity(keras.Sequential([keras.Input((3,)), keras.layers.ReLU()])) == 0.0


def test_pruned_model_compresses_better(pruned, digits, tmp_path):
    from tf_distill import compression
    from tf_distill import export

    _, stripped = pruned
    dense = make_student(seed=1)
    export.export_litert(stripped, tmp_path / "pruned.tflite", latency_runs=0)
    export.export_litert(dense, tmp_path / "dense.tflite", latency_runs=0)
    pruned_bytes = (tmp_path / "pruned.tflite").read_bytes()
    dense_bytes = (tmp_path / "dense.tflite").read_bytes()
    # Zeros take as much room as any float until the file is compressed.
    assert len(pruned_bytes) == pytest.approx(len(dense_bytes), rel=0.05)
    pruned_gzipped = compression.gzipped_size(tmp_path / "pruned.tflite")
    assert pruned_gzipped == len(gzip.compress(pruned_bytes, compresslevel=9, mtime=0))
    assert pruned_gzipped < 0.6 * compression.gzipped_size(tmp_path / "dense.tflite")


def test_export_strips_pruning_wrappers(pruned, digits, tmp_path):
    from tf_distill import export

    wrapped, stripped = pruned
    _, _, x_val, y_val = digits
    from_wrapped = export.export_litert(
        wrapped,
        tmp_path / "wrapped.tflite",
        quantization="dynamic",
        validation_data=(x_val, y_val),
        latency_runs=0,
    )
    from_stripped = export.export_litert(
        stripped,
        tmp_path / "stripped.tflite",
        quantization="dynamic",
        validation_data=(x_val, y_val),
        latency_runs=0,
    )
    # Wrapped, the kernels would be computed as kernel * mask at run time:
    # kept in float32 twice over instead of quantized once.
    assert from_wrapped.file_size_bytes == from_stripped.file_size_bytes
    assert from_wrapped.verified and from_wrapped.accuracy_drop_points <= 1.0


def test_export_tf_keras_model_in_every_mode(pruned, digits, tmp_path):
    from tf_distill import export

    _, stripped = pruned
    x_train, _, x_val, y_val = digits
    sizes = {}
    for quantization in export.QUANTIZATION_MODES:
        report = export.export_litert(
            stripped,
            tmp_path / f"{quantization}.tflite",
            quantization=quantization,
            representative_data=x_train[:100],
            validation_data=(x_val, y_val),
            latency_runs=5,
        )
        assert report.verified
        assert report.top1_agreement >= 0.95
        sizes[quantization] = report.file_size_bytes
        if quantization == "float32":
            assert report.max_abs_difference <= 1e-4
    assert sizes["int8"] < 0.5 * sizes["float32"]
    assert sizes["dynamic"] < 0.5 * sizes["float32"]
    assert sizes["float16"] < 0.75 * sizes["float32"]


def test_quantization_aware_student_exports_to_int8(digits, tmp_path):
    from tf_distill import compression
    from tf_distill import export

    x_train, y_train, x_val, y_val = digits
    student = compression.quantize_aware(make_student())
    assert any("Quantize" in type(layer).__name__ for layer in student.layers)
    compile_for_labels(student)
    student.fit(x_train, y_train, epochs=4, batch_size=BATCH_SIZE, verbose=0)
    report = export.export_litert(
        student,
        tmp_path / "qat.tflite",
        quantization="int8",
        representative_data=x_train[:100],
        validation_data=(x_val, y_val),
        int8_io=True,
        latency_runs=5,
    )
    assert report.verified
    assert (report.input_dtype, report.output_dtype) == ("int8", "int8")
    assert report.keras_accuracy > 0.8
    assert report.accuracy_drop_points <= 1.0
    assert report.top1_agreement >= 0.97
    assert report.latency_ms > 0

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tmp_path / "qat.tflite"))
    interpreter.allocate_tensors()
    assert interpreter.get_input_details()[0]["dtype"] == np.int8


def test_distill_into_pruned_student(digits):
    from tf_distill import compression
    from tf_distill.distillers.distiller import Distiller

    x_train, y_train, x_val, y_val = digits
    teacher = compile_for_labels(make_student(seed=3, hidden=128))
    teacher.fit(x_train, y_train, epochs=5, batch_size=BATCH_SIZE, verbose=0)
    epochs = 5
    # The default keeps the first and last layers dense.
    pruned_student = compression.prune_student(
        make_cnn_student(seed=4),
        target_sparsity=0.8,
        end_step=steps_for(epochs - 1, len(x_train)),
        frequency=5,
    )
    distiller = Distiller(teacher, pruned_student, "kd", student_loss_weight=0.5)
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    teacher_kernels = kernels(teacher)
    history = distiller.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        verbose=0,
        callbacks=compression.pruning_callbacks(),
    )
    assert np.isfinite(history.history["distillation_loss"]).all()
    student = compression.strip_pruning(distiller.student)
    assert compression.sparsity(student) == pytest.approx(0.8, abs=0.02)
    total = sum(CNN_KERNEL_SIZES.values())
    pruned_share = (CNN_KERNEL_SIZES["second_conv"] + CNN_KERNEL_SIZES["features"]) / total
    for name in CNN_KERNEL_SIZES:
        kernel = student.get_layer(name).kernel.numpy()
        zeros = np.count_nonzero(kernel == 0)
        if name in ("first_conv", "logits"):
            # Trained float weights are never exactly zero by chance.
            assert zeros == 0
        else:
            assert zeros / kernel.size == pytest.approx(0.8 / pruned_share, abs=0.01)
    accuracy = np.mean(student.predict(x_val, verbose=0).argmax(-1) == y_val)
    assert accuracy > 0.8
    # The frozen teacher was not pruned or trained.
    for before, after in zip(teacher_kernels, kernels(teacher)):
        np.testing.assert_array_equal(before, after)
    assert compression.sparsity(teacher) < 0.01


def test_default_exclusion_keeps_first_and_last_layers_dense():
    from tf_distill import compression

    student = make_cnn_student()
    wrapped = compression.prune_student(student, target_sparsity=0.8, end_step=100)
    schedules = {
        layer.layer.name: layer.pruning_schedule
        for layer in wrapped.layers
        if type(layer).__name__ == "PruneLowMagnitude"
    }
    assert {"second_conv", "features"} <= set(schedules)
    assert "first_conv" not in schedules and "logits" not in schedules
    # 80 % of all 9,736 kernel weights, all taken from the 9,344 pruned ones.
    expected = 0.8 * 9736 / 9344
    assert schedules["features"].final_sparsity == pytest.approx(expected)
    assert schedules["second_conv"].final_sparsity == pytest.approx(expected)
    assert compression.sparsity(wrapped) == 0.0  # Nothing pruned before training.

    # Named layers, and the initial sparsity scaled the same way.
    wrapped = compression.prune_student(
        student, 0.5, end_step=100, initial_sparsity=0.25, exclude=["logits"]
    )
    schedules = {
        layer.layer.name: layer.pruning_schedule
        for layer in wrapped.layers
        if type(layer).__name__ == "PruneLowMagnitude"
    }
    assert "logits" not in schedules and "first_conv" in schedules
    assert schedules["first_conv"].final_sparsity == pytest.approx(0.5 * 9736 / 9416)
    assert schedules["first_conv"].initial_sparsity == pytest.approx(0.25 * 9736 / 9416)


def test_first_and_last_skips_an_embedding():
    from tf_distill import compression

    keras.utils.set_random_seed(0)
    student = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Embedding(100, 16, name="embedding"),  # 1,600 weights
            keras.layers.Conv1D(16, 3, name="conv"),  # 768
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(10, name="logits"),  # 160
        ]
    )
    wrapped = compression.prune_student(student, 0.5, end_step=10, frequency=1)
    pruned = {
        layer.layer.name: layer.pruning_schedule.final_sparsity
        for layer in wrapped.layers
        if type(layer).__name__ == "PruneLowMagnitude"
    }
    # The first convolution or Dense layer stays dense, not the embedding table.
    # (TFMOT wraps the pooling layer too, with nothing to prune in it.)
    assert {"embedding", "conv", "logits"} & set(pruned) == {"embedding"}
    assert pruned["embedding"] == pytest.approx(0.5 * 2528 / 1600)


@pytest.mark.parametrize(
    "model_fn, kwargs, message",
    [
        (
            make_cnn_student,
            {"target_sparsity": 0.97},
            r"target_sparsity=0.97 is out of reach with layers \['first_conv', 'logits'\] "
            r"kept dense: they hold 392 of the 9,736 prunable kernel weights, so the "
            r"model's sparsity must stay below 0.960",
        ),
        (
            # Both layers of a two-layer MLP are its first and last.
            make_student,
            {},
            r"target_sparsity=0.8 is out of reach with layers \['dense\w*', 'dense\w*'\] "
            r"kept dense: they hold 4,736 of the 4,736 prunable kernel weights, so the "
            r"model's sparsity must stay below 0.000",
        ),
        (
            make_cnn_student,
            {"exclude": ["logits", "reshape", "nope"]},
            r"`exclude` names layers that are not in the model or have no prunable "
            r"kernels: \['reshape', 'nope'\]. Prunable layers: \['first_conv', "
            r"'second_conv', 'features', 'logits'\]",
        ),
        (
            make_cnn_student,
            {"exclude": "logits"},
            r"`exclude` must be 'first_and_last' or a list of layer names. "
            r"Received: exclude='logits' \(for one layer, pass \['logits'\]\)",
        ),
        (
            lambda: keras.Sequential([keras.Input((3,)), keras.layers.ReLU()]),
            {"exclude": ()},
            r"The student has no prunable kernels",
        ),
    ],
)
def test_prune_student_invalid_exclusion(model_fn, kwargs, message):
    from tf_distill import compression

    with pytest.raises(ValueError, match=message):
        compression.prune_student(model_fn(), **{"end_step": 10, "frequency": 1, **kwargs})


def test_pruning_summaries_callback(tmp_path):
    from tf_distill import compression

    callbacks = compression.pruning_callbacks(log_dir=str(tmp_path))
    assert [type(callback).__name__ for callback in callbacks] == [
        "UpdatePruningStep",
        "PruningSummaries",
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"target_sparsity": 1.0, "end_step": 10},
            r"`target_sparsity` must be in \[0, 1\). Received: target_sparsity=1.0",
        ),
        (
            {"end_step": 5, "begin_step": 5},
            r"`end_step` must be greater than `begin_step`. Received: "
            r"begin_step=5, end_step=5",
        ),
        (
            {"end_step": 10, "frequency": 20},
            r"`frequency` must be an integer in \[1, end_step - begin_step\] = "
            r"\[1, 10\]. Received: frequency=20",
        ),
        (
            {"end_step": -1},
            r"`end_step` must be an integer >= 0. Received: end_step=-1",
        ),
        (
            {"end_step": 10, "target_sparsity": 0.5, "initial_sparsity": 0.6},
            r"`initial_sparsity` must be in \[0, target_sparsity\]",
        ),
    ],
)
def test_prune_student_invalid_arguments(kwargs, message):
    from tf_distill import compression

    with pytest.raises(ValueError, match=message):
        compression.prune_student(make_student(), **kwargs)


def test_require_legacy_keras_passes_under_tf_keras():
    from tf_distill import compression

    assert compression.require_legacy_keras("anything") is None
    assert keras.__name__.startswith("tf_keras")
