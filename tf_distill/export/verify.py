"""Running a LiteRT model in the interpreter and checking it against Keras.

`verify_litert` compares the converted model's outputs and accuracy with the
Keras model it came from and times it. Every way the interpreter can fail is
an `ExportError` that says what to try.
"""

import contextlib
import os
import statistics
import time
import warnings

import numpy as np

from tf_distill.backend import keras
from tf_distill.export.arguments import PER_CHANNEL_MODES
from tf_distill.export.arguments import check_quantization
from tf_distill.export.arguments import check_verification_arguments
from tf_distill.export.errors import AccuracyDropError
from tf_distill.export.errors import ExportError
from tf_distill.export.flatbuffer import per_channel_tensors
from tf_distill.export.flatbuffer import tf_ops_in
from tf_distill.export.inputs import unwrap_student
from tf_distill.export.inputs import validation_xy
from tf_distill.export.report import ExportReport

# Float32 LiteRT kernels (XNNPACK) and TensorFlow sum in different orders;
# anything above this is a conversion bug, not round-off.
FLOAT32_TOLERANCE = 1e-4

# Batch size for running the interpreter over validation data: large enough
# to be fast, small enough that a convnet's activations fit in memory.
_EVALUATION_BATCH_SIZE = 256
_LATENCY_WARMUP_RUNS = 5


def verify_litert(
    litert_model,
    model,
    validation_data=None,
    quantization="float32",
    max_accuracy_drop=1.0,
    latency_runs=200,
    num_threads=1,
    verbose=0,
):
    """Runs a LiteRT model in the interpreter and checks it against Keras.

    Args:
        litert_model: `.tflite` bytes, or the path of a `.tflite` file.
        model: The Keras model it was converted from (or a `Distiller`).
        validation_data: `(x, y)` to measure accuracy on, or inputs `x` alone
            to compare outputs only, or `None`.
        quantization: The mode `litert_model` was converted with; `"float32"`
            enforces the 1e-4 output tolerance.
        max_accuracy_drop: The largest allowed accuracy loss, in points.
        latency_runs: Calls at batch size 1 to time; 0 skips timing.
        num_threads: Interpreter threads.
        verbose: As Keras's `verbose`: 0 (the default) is silent, 1 shows a
            `keras.utils.Progbar` of the examples run through the
            interpreter, 2 one line when they are done.

    Returns:
        An `ExportReport` with `verified=True` (its `path` is `None`), or
        `verified=False` when the model needs TensorFlow ops that this
        interpreter cannot run (a warning says so).

    Raises:
        AccuracyDropError: If the accuracy drop exceeds `max_accuracy_drop`.
        ExportError: If float32 outputs differ by more than 1e-4, or the
            interpreter cannot load, prepare or run the model (its message
            says what to try).
    """
    check_quantization(quantization)
    check_verification_arguments(max_accuracy_drop, latency_runs, num_threads)
    model = unwrap_student(model)
    if isinstance(litert_model, (str, os.PathLike)):
        with open(litert_model, "rb") as handle:
            litert_model = handle.read()
    litert_model = bytes(litert_model)
    report = ExportReport(
        path=None,
        quantization=quantization,
        file_size_bytes=len(litert_model),
        latency_runs=latency_runs,
        num_threads=num_threads,
        tf_ops=tf_ops_in(litert_model),
        max_accuracy_drop=max_accuracy_drop,
        per_channel=(
            bool(per_channel_tensors(litert_model)) if quantization in PER_CHANNEL_MODES else None
        ),
    )
    if report.tf_ops:
        warnings.warn(
            "The LiteRT model keeps TensorFlow ops "
            f"({', '.join(report.tf_ops)}) that need the Flex delegate, which "
            "the ai_edge_litert Python interpreter does not include: it is "
            "written unverified (accuracy and outputs not checked).",
            stacklevel=2,
        )
        report.latency_runs = 0
        return report

    runner = _LiteRTRunner(litert_model, num_threads, quantization)
    report.input_dtype = runner.input_dtype
    report.output_dtype = runner.output_dtype
    if validation_data is not None:
        x, y = validation_xy(validation_data, model)
        progress = keras.utils.Progbar(len(x), verbose=verbose, unit_name="example")
        _compare(report, runner, model, x, y, progress)
    if (
        quantization == "float32"
        and report.max_abs_difference is not None
        and report.max_abs_difference > FLOAT32_TOLERANCE
    ):
        raise ExportError(
            "The float32 LiteRT model's outputs differ from Keras by "
            f"{report.max_abs_difference:.3g} > {FLOAT32_TOLERANCE:g}: the "
            "conversion changed the model's computation.",
            report=report,
        )
    if report.accuracy_drop_points is not None and report.accuracy_drop_points > max_accuracy_drop:
        raise AccuracyDropError(
            f"The {quantization} LiteRT model is "
            f"{report.accuracy_drop_points:.2f} accuracy points below the "
            f"Keras model ({100 * report.litert_accuracy:.2f}% vs "
            f"{100 * report.keras_accuracy:.2f}% on {report.num_examples} "
            f"examples), more than max_accuracy_drop={max_accuracy_drop}. "
            "Nothing was written. Try a milder quantization, more or more "
            "typical representative_data, or quantization-aware training.",
            report=report,
        )
    if latency_runs:
        report.latency_ms = runner.latency_ms(latency_runs)
    report.verified = True
    return report


class _LiteRTRunner:
    """The LiteRT interpreter behind a float-in, float-out call.

    A model can convert and still fail in the interpreter: XNNPACK refuses to
    prepare some quantized graphs (degenerate int8 ranges), and a kernel may
    reject a shape only when the batch is resized. Every interpreter failure
    becomes an `ExportError` saying what to try.
    """

    def __init__(self, litert_model, num_threads, quantization):
        # Imported here so that importing tf_distill stays light.
        from ai_edge_litert.interpreter import Interpreter

        self._quantization = quantization
        with self._interpreter_errors("load"):
            self._interpreter = Interpreter(model_content=litert_model, num_threads=num_threads)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ExportError(
                "LiteRT verification supports models with one input and one "
                f"output. Received a model with {len(inputs)} inputs and "
                f"{len(outputs)} outputs."
            )
        self._input, self._output = inputs[0], outputs[0]
        self.input_dtype = np.dtype(self._input["dtype"]).name
        self.output_dtype = np.dtype(self._output["dtype"]).name
        signature = self._input["shape_signature"]
        self._fixed_batch = int(signature[0]) if signature[0] > 0 else None
        self._batch_size = None
        with self._interpreter_errors("allocate the tensors of"):
            self._interpreter.allocate_tensors()

    @contextlib.contextmanager
    def _interpreter_errors(self, step):
        """Turns the interpreter's errors (RuntimeError, ValueError) into `ExportError`."""
        try:
            yield
        except ExportError:
            raise
        except (RuntimeError, ValueError) as error:
            if self._quantization == "int8":
                hint = (
                    "Try representative_data that covers the inputs' real range "
                    "(constant or tiny calibration data gives degenerate int8 "
                    "ranges, which the interpreter cannot prepare), or a milder "
                    "quantization ('dynamic' or 'float16')."
                )
            else:
                hint = (
                    "Try another quantization mode, or replace the layer the "
                    "error names: the model converts, but the interpreter's "
                    "kernels cannot run it."
                )
            message = " ".join(str(error).split()).rstrip(".") or type(error).__name__
            raise ExportError(
                f"The LiteRT interpreter failed to {step} the {self._quantization} "
                f"model: {message[:500]}. Nothing was written. {hint}"
            ) from error

    def _resize(self, batch_size):
        if batch_size == self._batch_size:
            return
        shape = list(self._input["shape_signature"])
        shape[0] = batch_size
        with self._interpreter_errors(f"resize to a batch of {batch_size}"):
            self._interpreter.resize_tensor_input(self._input["index"], shape)
            self._interpreter.allocate_tensors()
        self._batch_size = batch_size

    def _quantize(self, x):
        dtype = np.dtype(self._input["dtype"])
        if not np.issubdtype(dtype, np.integer):
            return x.astype(dtype)
        scale, zero_point = self._input["quantization"]
        info = np.iinfo(dtype)
        quantized = np.round(x / scale) + zero_point
        return np.clip(quantized, info.min, info.max).astype(dtype)

    def _dequantize(self, y):
        if not np.issubdtype(y.dtype, np.integer):
            return y.astype(np.float32)
        scale, zero_point = self._output["quantization"]
        return (y.astype(np.float32) - zero_point) * scale

    def __call__(self, x, progress=None):
        """Outputs for float inputs `x`, dequantized to float32.

        `progress`, a `keras.utils.Progbar`, is advanced by each chunk."""
        batch_size = self._fixed_batch or _EVALUATION_BATCH_SIZE
        outputs = []
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            size = len(chunk)
            if self._fixed_batch and size < self._fixed_batch:
                padding = np.zeros((self._fixed_batch - size,) + chunk.shape[1:])
                chunk = np.concatenate([chunk, padding.astype(chunk.dtype)])
            self._resize(len(chunk))
            with self._interpreter_errors("run"):
                self._interpreter.set_tensor(self._input["index"], self._quantize(chunk))
                self._interpreter.invoke()
                output = self._interpreter.get_tensor(self._output["index"])
            outputs.append(self._dequantize(output[:size]))
            if progress is not None:
                progress.update(start + size)
        return np.concatenate(outputs)

    def latency_ms(self, runs):
        """Median wall time of one call at batch size 1, in milliseconds."""
        self._resize(self._fixed_batch or 1)
        shape = [self._batch_size] + list(self._input["shape_signature"][1:])
        timings = []
        with self._interpreter_errors("time"):
            self._interpreter.set_tensor(
                self._input["index"], np.zeros(shape, np.dtype(self._input["dtype"]))
            )
            for _ in range(min(runs, _LATENCY_WARMUP_RUNS)):
                self._interpreter.invoke()
            for _ in range(runs):
                start = time.perf_counter()
                self._interpreter.invoke()
                timings.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(timings) / self._batch_size


def _compare(report, runner, model, x, y, progress):
    """Fills the report's accuracy and agreement fields."""
    keras_outputs = np.asarray(
        model.predict(x, batch_size=_EVALUATION_BATCH_SIZE, verbose=0), np.float32
    )
    litert_outputs = runner(x, progress)
    if keras_outputs.ndim != 2 or keras_outputs.shape[-1] < 2:
        raise ValueError(
            "LiteRT verification compares top-1 classes, so the model must "
            "output `[batch, num_classes]` scores with num_classes >= 2. "
            f"Received outputs of shape {keras_outputs.shape}."
        )
    keras_classes = keras_outputs.argmax(axis=-1)
    litert_classes = litert_outputs.argmax(axis=-1)
    report.num_examples = int(len(x))
    report.max_abs_difference = float(np.max(np.abs(keras_outputs - litert_outputs)))
    report.top1_agreement = float(np.mean(keras_classes == litert_classes))
    if y is None:
        return
    labels = _class_indices(y, keras_outputs.shape[-1])
    report.keras_accuracy = float(np.mean(keras_classes == labels))
    report.litert_accuracy = float(np.mean(litert_classes == labels))
    report.accuracy_drop_points = 100.0 * (report.keras_accuracy - report.litert_accuracy)


def _class_indices(y, num_classes):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[-1] == num_classes and num_classes > 1:
        return y.argmax(axis=-1)
    if y.ndim == 2 and y.shape[-1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            "Validation labels must be class indices `[batch]` or one-hot "
            f"`[batch, {num_classes}]`. Received labels of shape {y.shape}."
        )
    return y.astype(np.int64)
