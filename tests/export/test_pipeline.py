"""Tests for tf_distill.export: LiteRT conversion, verification, atomic writes.

The report and the argument checks are tested in test_export_report.py and
test_export_arguments.py.

Each exported file is reloaded here in the LiteRT interpreter and compared with
the Keras model independently of the report that `export_litert` returns.
"""

import os
import sys
import types

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tf_distill import export
from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.backend import tf

LATENCY_RUNS = 5


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8×8 digits as images in [0, 1]: (x_train, y_train, x_val, y_val)."""
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    return x[:1400], y[:1400], x[1400:], y[1400:]


def make_classifier(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            # Dropout and batch normalization behave differently in training:
            # the export must use inference mode for outputs to match.
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.3),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


@pytest.fixture(scope="module")
def classifier(digits):
    x_train, y_train, _, _ = digits
    model = make_classifier()
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, epochs=6, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def float32_size(classifier, digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("float32") / "model.tflite"
    report = export.export_litert(classifier, path, latency_runs=0)
    return report.file_size_bytes


def run_litert(path, x):
    """Float outputs of the `.tflite` file at `path`, quantizing int8 I/O."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    input_details = interpreter.get_input_details()[0]
    output_details = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(input_details["index"], list(x.shape))
    interpreter.allocate_tensors()
    if input_details["dtype"] == np.int8:
        scale, zero_point = input_details["quantization"]
        x = np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
    interpreter.set_tensor(input_details["index"], x)
    interpreter.invoke()
    outputs = interpreter.get_tensor(output_details["index"])
    if output_details["dtype"] == np.int8:
        scale, zero_point = output_details["quantization"]
        outputs = (outputs.astype(np.float32) - zero_point) * scale
    return outputs, input_details, output_details


def keras_outputs(model, x):
    return np.asarray(model.predict(x, verbose=0))


def test_float32_matches_keras(classifier, digits, tmp_path):
    _, _, x_val, y_val = digits
    path = tmp_path / "student.tflite"
    report = export.export_litert(
        classifier, path, validation_data=(x_val, y_val), latency_runs=LATENCY_RUNS
    )
    expected = keras_outputs(classifier, x_val)
    outputs, _, _ = run_litert(path, x_val)
    assert np.max(np.abs(outputs - expected)) <= 1e-4
    assert report.verified
    assert report.path == str(path)
    assert report.file_size_bytes == os.path.getsize(path)
    assert report.max_abs_difference <= export.FLOAT32_TOLERANCE
    assert report.top1_agreement == 1.0
    assert report.num_examples == len(x_val)
    keras_accuracy = np.mean(expected.argmax(-1) == y_val)
    assert report.keras_accuracy == pytest.approx(keras_accuracy)
    assert report.litert_accuracy == pytest.approx(keras_accuracy)
    assert report.accuracy_drop_points == pytest.approx(0.0)
    assert keras_accuracy > 0.8  # The fixture really learned the task.
    assert report.latency_ms > 0
    assert report.latency_runs == LATENCY_RUNS
    assert (report.input_dtype, report.output_dtype) == ("float32", "float32")


@pytest.mark.parametrize(
    "quantization, max_size_ratio",
    [("dynamic", 0.5), ("float16", 0.75), ("int8", 0.5)],
)
def test_quantized_modes_agree_with_keras(
    classifier, digits, float32_size, tmp_path, quantization, max_size_ratio
):
    x_train, _, x_val, y_val = digits
    path = tmp_path / f"{quantization}.tflite"
    report = export.export_litert(
        classifier,
        path,
        quantization=quantization,
        representative_data=x_train[:200] if quantization == "int8" else None,
        validation_data=(x_val, y_val),
        latency_runs=LATENCY_RUNS,
    )
    expected = keras_outputs(classifier, x_val)
    outputs, _, _ = run_litert(path, x_val)
    agreement = np.mean(outputs.argmax(-1) == expected.argmax(-1))
    assert agreement >= 0.95
    assert report.top1_agreement == pytest.approx(agreement)
    assert report.litert_accuracy == pytest.approx(np.mean(outputs.argmax(-1) == y_val))
    assert report.accuracy_drop_points <= 1.0
    assert report.verified
    assert report.file_size_bytes < max_size_ratio * float32_size


def test_int8_io_quantizes_inputs_and_outputs(classifier, digits, tmp_path):
    x_train, y_train, x_val, y_val = digits
    # Calibration from a tf.data pipeline of (x, y) batches, as in training.
    calibration = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(32)
    validation = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(50)
    path = tmp_path / "int8_io.tflite"
    report = export.export_litert(
        classifier,
        path,
        quantization="int8",
        representative_data=calibration,
        validation_data=validation,
        int8_io=True,
        latency_runs=LATENCY_RUNS,
        calibration_examples=200,
    )
    outputs, input_details, output_details = run_litert(path, x_val)
    assert input_details["dtype"] == np.int8
    assert output_details["dtype"] == np.int8
    assert (report.input_dtype, report.output_dtype) == ("int8", "int8")
    expected = keras_outputs(classifier, x_val)
    assert np.mean(outputs.argmax(-1) == expected.argmax(-1)) >= 0.95
    assert report.num_examples == len(x_val)
    assert report.litert_accuracy == pytest.approx(np.mean(outputs.argmax(-1) == y_val))
    assert report.accuracy_drop_points <= 1.0


def weight_scale_counts(path):
    """Scales per quantized constant tensor of a `.tflite` file, read by the interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    counts = {}
    for detail in interpreter.get_tensor_details():
        scales = detail["quantization_parameters"]["scales"]
        if np.issubdtype(detail["dtype"], np.integer) and len(scales):
            counts[detail["name"]] = len(scales)
    return counts


def test_per_tensor_int8_is_smaller_and_verified(classifier, digits, tmp_path):
    x_train, _, x_val, y_val = digits
    reports = {}
    for per_channel in (True, False):
        path = tmp_path / f"int8_per_channel_{per_channel}.tflite"
        reports[per_channel] = export.export_litert(
            classifier,
            path,
            quantization="int8",
            representative_data=x_train[:200],
            validation_data=(x_val, y_val),
            latency_runs=0,
            per_channel=per_channel,
        )
        counts = weight_scale_counts(path)
        if per_channel:
            # A scale per output channel: per filter of the convolution, per
            # unit of the Dense layers.
            assert {8, 32, 10} <= set(counts.values())
        else:
            assert counts and set(counts.values()) == {1}
        outputs, _, _ = run_litert(path, x_val)
        assert reports[per_channel].litert_accuracy == pytest.approx(
            np.mean(outputs.argmax(-1) == y_val)
        )
    per_tensor = reports[False]
    assert per_tensor.verified
    assert per_tensor.per_channel is False and reports[True].per_channel is True
    assert per_tensor.accuracy_drop_points <= 1.0
    assert per_tensor.top1_agreement >= 0.95
    # One float32 scale and one int64 zero point per tensor, not per channel.
    assert per_tensor.file_size_bytes < reports[True].file_size_bytes
    assert "| `int8` per-tensor |" in per_tensor.to_markdown()
    assert "per-tensor" not in reports[True].to_markdown()


def test_per_tensor_needs_the_converter_setting(classifier, tmp_path, monkeypatch):
    from_keras_model = tf.lite.TFLiteConverter.from_keras_model

    def without_setting(model):
        converter = from_keras_model(model)
        del converter._experimental_disable_per_channel
        return converter

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", without_setting)
    with pytest.raises(
        export.ExportError,
        match=r"per_channel=False needs the TFLite converter's private setting "
        r"`_experimental_disable_per_channel`, which TensorFlow .* does not have",
    ):
        export.export_litert(
            classifier,
            tmp_path / "m.tflite",
            quantization="dynamic",
            per_channel=False,
            latency_runs=0,
        )
    assert os.listdir(tmp_path) == []


def test_per_tensor_ignored_by_the_converter_is_an_error(classifier, tmp_path, monkeypatch):
    # A future converter that kept the setting but ignored it.
    from_keras_model = tf.lite.TFLiteConverter.from_keras_model

    def ignoring_setting(model):
        converter = from_keras_model(model)

        class IgnoringConverter(type(converter)):
            def __setattr__(self, name, value):
                if name != "_experimental_disable_per_channel":
                    super().__setattr__(name, value)

        converter.__class__ = IgnoringConverter
        return converter

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", ignoring_setting)
    with pytest.raises(export.ExportError, match=r"still gave per-channel scales to \d+ tensors"):
        export.export_litert(
            classifier,
            tmp_path / "m.tflite",
            quantization="dynamic",
            per_channel=False,
            latency_runs=0,
        )
    assert os.listdir(tmp_path) == []


def test_accuracy_drop_guard_keeps_previous_file(classifier, digits, tmp_path):
    x_train, _, x_val, y_val = digits
    path = tmp_path / "student.tflite"
    export.export_litert(classifier, path, latency_runs=0)
    previous = path.read_bytes()
    # Calibrating on inputs 100 times too small saturates every activation:
    # a realistic way to ruin an int8 model.
    with pytest.raises(export.AccuracyDropError, match="accuracy points below") as info:
        export.export_litert(
            classifier,
            path,
            quantization="int8",
            representative_data=x_train[:100] * 0.01,
            validation_data=(x_val, y_val),
            latency_runs=0,
        )
    assert info.value.report.accuracy_drop_points > 1.0
    assert not info.value.report.verified
    assert path.read_bytes() == previous
    assert sorted(os.listdir(tmp_path)) == ["student.tflite"]


def test_accuracy_drop_threshold_leaves_no_file(classifier, digits, tmp_path):
    _, _, x_val, y_val = digits
    path = tmp_path / "student.tflite"
    report_path = tmp_path / "report.md"
    # No drop at all still exceeds a threshold of -1 point.
    with pytest.raises(export.AccuracyDropError, match="max_accuracy_drop=-1"):
        export.export_litert(
            classifier,
            path,
            validation_data=(x_val, y_val),
            max_accuracy_drop=-1,
            latency_runs=0,
            report_path=report_path,
        )
    assert os.listdir(tmp_path) == []


def test_int8_without_representative_data_raises_before_converting(
    classifier, tmp_path, monkeypatch
):
    def fail(*args, **kwargs):
        raise AssertionError("the converter must not be called")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", fail)
    path = tmp_path / "student.tflite"
    with pytest.raises(ValueError, match="quantization='int8' needs `representative_data`"):
        export.export_litert(classifier, path, quantization="int8")
    assert os.listdir(tmp_path) == []


def test_distiller_exports_only_the_student(classifier, digits, tmp_path):
    _, _, x_val, y_val = digits
    teacher = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    distiller = types.SimpleNamespace(teacher=teacher, student=classifier)
    path = tmp_path / "student.tflite"
    report = export.export_litert(distiller, path, validation_data=(x_val, y_val), latency_runs=0)
    outputs, _, _ = run_litert(path, x_val)
    np.testing.assert_allclose(outputs, keras_outputs(classifier, x_val), atol=1e-4)
    assert report.keras_accuracy == pytest.approx(
        np.mean(keras_outputs(classifier, x_val).argmax(-1) == y_val)
    )


def test_real_distiller_exports_its_student(classifier, digits, tmp_path):
    from tf_distill.distillers.distiller import Distiller

    _, _, x_val, y_val = digits
    teacher = make_classifier(seed=1)
    distiller = Distiller(teacher, classifier, "kd")
    path = tmp_path / "student.tflite"
    export.export_litert(distiller, path, validation_data=(x_val, y_val), latency_runs=0)
    outputs, _, _ = run_litert(path, x_val)
    np.testing.assert_allclose(outputs, keras_outputs(classifier, x_val), atol=1e-4)
    teacher_outputs = keras_outputs(teacher, x_val)
    assert np.max(np.abs(outputs - teacher_outputs)) > 1e-2


def test_float32_tolerance_is_enforced(classifier, digits):
    _, _, x_val, y_val = digits
    litert_model = export.convert_to_litert(classifier)
    other = make_classifier(seed=2)
    with pytest.raises(export.ExportError, match="differ from Keras by"):
        export.verify_litert(litert_model, other, validation_data=(x_val, y_val))


@pytest.mark.parametrize("method", ["invoke", "allocate_tensors", "resize_tensor_input"])
def test_interpreter_failure_is_an_export_error(classifier, digits, tmp_path, monkeypatch, method):
    # A model can convert and still fail in the interpreter, as XNNPACK does
    # on some int8 graphs; the error must say what to try, and nothing ships.
    from ai_edge_litert.interpreter import Interpreter

    def fail(*args, **kwargs):
        raise RuntimeError(
            "failed to create XNNPACK runtime\nNode number 3 (TfLiteXNNPackDelegate) "
            "failed to prepare."
        )

    x_train, _, x_val, y_val = digits
    monkeypatch.setattr(Interpreter, method, fail)
    with pytest.raises(export.ExportError, match="failed to prepare") as info:
        export.export_litert(
            classifier,
            tmp_path / "m.tflite",
            quantization="int8",
            representative_data=x_train[:50],
            validation_data=(x_val, y_val),
            latency_runs=LATENCY_RUNS,
            report_path=tmp_path / "m.md",
        )
    message = str(info.value)
    assert "The LiteRT interpreter failed to" in message
    assert "Nothing was written. Try representative_data that covers" in message
    assert os.listdir(tmp_path) == []


def test_interpreter_failure_while_timing_is_an_export_error(classifier, tmp_path, monkeypatch):
    # Without comparison data the first invoke is the latency measurement's.
    from ai_edge_litert.interpreter import Interpreter

    def fail(*args, **kwargs):
        raise RuntimeError("Node number 0 (CONV_2D) failed to invoke.")

    monkeypatch.setattr(Interpreter, "invoke", fail)
    with pytest.raises(
        export.ExportError,
        match=r"failed to time the float32 model: Node number 0 \(CONV_2D\) failed to invoke\. "
        r"Nothing was written\. Try another quantization mode",
    ):
        export.export_litert(classifier, tmp_path / "m.tflite", latency_runs=LATENCY_RUNS)
    assert os.listdir(tmp_path) == []


def test_verify_litert_reads_a_file(classifier, digits, tmp_path):
    _, _, x_val, y_val = digits
    path = tmp_path / "student.tflite"
    path.write_bytes(export.convert_to_litert(classifier, quantization="float16"))
    report = export.verify_litert(
        str(path),
        classifier,
        validation_data=x_val,
        quantization="float16",
        latency_runs=0,
    )
    assert report.verified
    assert report.file_size_bytes == os.path.getsize(path)
    assert report.top1_agreement >= 0.95
    assert report.keras_accuracy is None  # Inputs alone: no labels.
    assert report.latency_ms is None


def test_verification_shows_a_progress_bar_only_when_verbose(classifier, digits, tmp_path,
                                                             capsys):
    _, _, x_val, y_val = digits
    litert_model = export.convert_to_litert(classifier, quantization="float32")
    export.verify_litert(litert_model, classifier, validation_data=(x_val, y_val),
                         latency_runs=0)
    assert capsys.readouterr().out == ""  # quiet by default, as before
    export.verify_litert(litert_model, classifier, validation_data=(x_val, y_val),
                         latency_runs=0, verbose=1)
    assert f"{len(x_val)}/{len(x_val)}" in capsys.readouterr().out  # every example run


def test_unsupported_ops_listed_and_nothing_written(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            # MatrixDeterminant has no LiteRT builtin kernel.
            keras.layers.Lambda(
                lambda t: tf.concat([t, tf.linalg.det(tf.reshape(t, [-1, 2, 2]))[:, None]], axis=1)
            ),
            keras.layers.Dense(3),
        ]
    )
    x = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    y = np.zeros(16, np.int64)
    path = tmp_path / "det.tflite"
    with pytest.raises(export.UnsupportedOpsError, match="tf.MatrixDeterminant") as info:
        export.export_litert(model, path, validation_data=(x, y), latency_runs=0)
    assert info.value.ops == ["tf.MatrixDeterminant"]
    assert "allow_tf_ops=True" in str(info.value)
    assert os.listdir(tmp_path) == []

    with pytest.warns(UserWarning, match="Flex delegate"):
        report = export.export_litert(
            model, path, validation_data=(x, y), allow_tf_ops=True, latency_runs=0
        )
    assert report.tf_ops == ["tf.MatrixDeterminant"]
    assert not report.verified
    assert report.keras_accuracy is None
    assert path.stat().st_size == report.file_size_bytes


@pytest.mark.skipif(LEGACY_KERAS, reason="checks the error raised under Keras 3")
def test_compression_needs_legacy_keras_under_keras_3():
    # Here rather than in tests/test_compression.py, which runs under tf_keras.
    from tf_distill import compression

    tfmot_was_imported = "tensorflow_model_optimization" in sys.modules
    environment_before = os.environ.get("TF_USE_LEGACY_KERAS")
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    calls = {
        "prune_student": lambda: compression.prune_student(student, end_step=10),
        "pruning_callbacks": compression.pruning_callbacks,
        "strip_pruning": lambda: compression.strip_pruning(student),
        "sparsity": lambda: compression.sparsity(student),
        "quantize_aware": lambda: compression.quantize_aware(student),
    }
    for name, call in calls.items():
        with pytest.raises(
            RuntimeError,
            match=f"{name} uses TensorFlow Model Optimization, which supports only "
            r"tf_keras \(Keras 2\) models.*Set the environment variable "
            "TF_USE_LEGACY_KERAS=1 before importing TensorFlow or tf_distill",
        ):
            call()
    # Importing TFMOT sets TF_USE_LEGACY_KERAS=1 in os.environ, which child
    # processes of a Keras 3 program would inherit.
    if not tfmot_was_imported:
        assert "tensorflow_model_optimization" not in sys.modules
    assert os.environ.get("TF_USE_LEGACY_KERAS") == environment_before
