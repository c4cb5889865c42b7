"""Export a student to LiteRT (`.tflite`), quantized and verified.

`export_litert` converts the student with the TFLite converter, runs the
converted model in the LiteRT interpreter (`ai_edge_litert`) on held-out data,
compares it with the Keras model, and only then moves the file into place. A
conversion or verification failure leaves no file behind and never replaces a
previous good file at the destination.

Quantization modes (https://ai.google.dev/edge/litert/models/model_optimization):

- `"float32"`: no quantization; outputs must match Keras to 1e-4.
- `"dynamic"`: dynamic-range quantization, int8 weights, float activations.
- `"float16"`: float16 weights, float32 computation on CPU.
- `"int8"`: full integer quantization, activations calibrated on
  `representative_data`; with `int8_io=True` the inputs and outputs are int8
  as well (for integer-only accelerators).

In `"dynamic"` and `"int8"` modes the weights have one scale per output
channel by default (`per_channel=True`, the converter's default), which
keeps the accuracy of layers whose channels have very different ranges
(a convolution with batch normalization folded in). `per_channel=False`
stores one scale per tensor instead: a smaller file when the model is small
enough for the per-channel parameters to matter (a float32 scale and an int64
zero point per channel, for each kernel and bias), at a possible accuracy
cost that the verification measures like any other.

Runs under Keras 3 and, with `TF_USE_LEGACY_KERAS=1`, with tf_keras models
(pruned or quantization-aware students from `tf_distill.compression`).
"""

import contextlib
import dataclasses
import io
import math
import os
import statistics
import time
import warnings

import numpy as np

from tf_distill import files as tf_distill_files
from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.backend import tf

QUANTIZATION_MODES = ("float32", "dynamic", "float16", "int8")
# The modes with integer weights, which have a scale per channel or per tensor.
_PER_CHANNEL_MODES = ("dynamic", "int8")

# Float32 LiteRT kernels (XNNPACK) and TensorFlow sum in different orders;
# anything above this is a conversion bug, not round-off.
FLOAT32_TOLERANCE = 1e-4

# Batch size for running the interpreter over validation data: large enough
# to be fast, small enough that a convnet's activations fit in memory.
_EVALUATION_BATCH_SIZE = 256
_LATENCY_WARMUP_RUNS = 5


class ExportError(RuntimeError):
    """A model could not be converted or failed verification.

    Attributes:
        report: The `ExportReport` of the rejected model, or `None` when the
            model failed before it could be measured.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class AccuracyDropError(ExportError):
    """The LiteRT model lost more accuracy than `max_accuracy_drop` allows."""


class UnsupportedOpsError(ExportError):
    """The model uses operations that LiteRT's builtin kernels lack.

    Attributes:
        ops: The TensorFlow op names the converter could not lower.
    """

    def __init__(self, message, ops):
        super().__init__(message)
        self.ops = list(ops)


@dataclasses.dataclass
class ExportReport:
    """What `export_litert` measured on the converted model.

    Accuracies and top-1 agreement are fractions in [0, 1]; the accuracy drop
    is in percentage points (Keras accuracy minus LiteRT accuracy, times 100),
    so a positive drop means the LiteRT model is worse. Fields that could not
    be measured (no validation data, a model needing TensorFlow ops that this
    interpreter cannot run) are `None`.

    Attributes:
        path: Where the `.tflite` file was written (`None` before writing).
        quantization: One of `QUANTIZATION_MODES`.
        file_size_bytes: Size of the `.tflite` flatbuffer.
        num_examples: Validation examples compared.
        keras_accuracy: Top-1 accuracy of the Keras model.
        litert_accuracy: Top-1 accuracy of the LiteRT model.
        accuracy_drop_points: `100 * (keras_accuracy - litert_accuracy)`.
        top1_agreement: Fraction of examples where both models predict the
            same class.
        max_abs_difference: Largest absolute difference between the Keras and
            the (dequantized) LiteRT outputs.
        latency_ms: Median time of one interpreter call at batch size 1.
        latency_runs: Calls timed for `latency_ms`.
        num_threads: Interpreter threads used for every measurement.
        input_dtype: The LiteRT model's input type (`"int8"` with `int8_io`).
        output_dtype: The LiteRT model's output type.
        tf_ops: TensorFlow ops kept through the `SELECT_TF_OPS` fallback.
        verified: Whether the interpreter ran the model and every check passed.
        max_accuracy_drop: The allowed accuracy drop in points.
        per_channel: For `"dynamic"` and `"int8"`: whether any tensor in the
            file has per-channel scales (read from the file, see
            `export_litert`'s `per_channel`); `None` in the float modes.
    """

    path: str | None
    quantization: str
    file_size_bytes: int
    num_examples: int | None = None
    keras_accuracy: float | None = None
    litert_accuracy: float | None = None
    accuracy_drop_points: float | None = None
    top1_agreement: float | None = None
    max_abs_difference: float | None = None
    latency_ms: float | None = None
    latency_runs: int = 0
    num_threads: int = 1
    input_dtype: str | None = None
    output_dtype: str | None = None
    tf_ops: list = dataclasses.field(default_factory=list)
    verified: bool = False
    max_accuracy_drop: float | None = None
    per_channel: bool | None = None

    def to_dict(self):
        """The report as a JSON-serializable dict."""
        return dataclasses.asdict(self)

    def to_markdown(self):
        """The report as a one-row Markdown table (see `reports_table`)."""
        return reports_table([self])


_TABLE_COLUMNS = (
    ("Quantization", lambda r: f"`{r.quantization}`" + _per_tensor_mark(r)),
    ("Size (bytes)", lambda r: f"{r.file_size_bytes:,}"),
    ("Keras acc. (%)", lambda r: _percent(r.keras_accuracy)),
    ("LiteRT acc. (%)", lambda r: _percent(r.litert_accuracy)),
    ("Drop (points)", lambda r: _number(r.accuracy_drop_points, "{:+.2f}")),
    ("Top-1 agreement (%)", lambda r: _percent(r.top1_agreement)),
    ("Max abs diff", lambda r: _number(r.max_abs_difference, "{:.2e}")),
    ("Latency (ms, batch 1)", lambda r: _number(r.latency_ms, "{:.4f}")),
    ("I/O", lambda r: f"{r.input_dtype}/{r.output_dtype}"),
    ("Verified", lambda r: "yes" if r.verified else "no"),
)


def _per_tensor_mark(report):
    return " per-tensor" if report.per_channel is False else ""


def _percent(value):
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def _number(value, template):
    return "n/a" if value is None else template.format(value)


def reports_table(reports):
    """A Markdown table comparing export reports, one row per report.

    Args:
        reports: A list of `ExportReport` (for example one per quantization
            mode of the same student).

    Returns:
        The table as a string ending in a newline.
    """
    header = "| " + " | ".join(name for name, _ in _TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in _TABLE_COLUMNS) + "|"
    rows = [
        "| " + " | ".join(cell(report) for _, cell in _TABLE_COLUMNS) + " |" for report in reports
    ]
    return "\n".join([header, rule, *rows]) + "\n"


def export_litert(
    model,
    path,
    quantization="float32",
    representative_data=None,
    validation_data=None,
    max_accuracy_drop=1.0,
    int8_io=False,
    allow_tf_ops=False,
    latency_runs=200,
    report_path=None,
    calibration_examples=500,
    num_threads=1,
    per_channel=True,
):
    """Converts a student to LiteRT, verifies it, then writes it atomically.

    The model is converted in memory, loaded into the LiteRT interpreter from
    those bytes and compared with the Keras model on `validation_data`. Only a
    model that passes every check is written to `path` (through a temporary
    file and `os.replace`), so on any error `path` is left as it was.

    Checks:
    - the LiteRT accuracy is at most `max_accuracy_drop` points below the
      Keras accuracy;
    - in `"float32"` mode, every output is within `FLOAT32_TOLERANCE` (1e-4)
      of the Keras output.

    Args:
        model: A Keras classifier with one input and one output, or a
            `Distiller` (anything with a `.student`), in which case only the
            student is exported: the teacher never ships. A student still
            wrapped by `compression.prune_student` is exported stripped of
            its pruning wrappers.
        path: Destination `.tflite` file.
        quantization: One of `"float32"`, `"dynamic"`, `"float16"`, `"int8"`.
        representative_data: Inputs to calibrate `"int8"` activation ranges
            on: a NumPy array of examples or a `tf.data.Dataset` yielding
            inputs or `(inputs, labels)`, batched or not. A sample of the
            training data; the first `calibration_examples` are used.
            Required for `"int8"`, ignored otherwise except as comparison
            inputs when `validation_data` is `None`.
        validation_data: Held-out `(x, y)` to verify on: NumPy arrays (labels
            as class indices or one-hot) or a `tf.data.Dataset` of `(x, y)`
            batches. Without it, accuracy is not checked (report fields are
            `None`) and outputs are compared on `representative_data`, if any.
        max_accuracy_drop: The largest allowed accuracy loss in percentage
            points (default 1 point).
        int8_io: With `"int8"`, make the model's input and output int8 too.
            The report's accuracy is then measured through the quantized
            input and dequantized output, as a device would use them.
        allow_tf_ops: Let ops without a LiteRT builtin kernel fall back to
            TensorFlow kernels (`SELECT_TF_OPS`). The file then needs the Flex
            delegate at run time, which the Python `ai_edge_litert`
            interpreter lacks: such a model is written unverified, with a
            warning and `report.verified=False`.
        latency_runs: Interpreter calls at batch size 1 to take the median
            latency of; 0 skips the latency measurement.
        report_path: If given, the report is written there as a Markdown
            table, and as JSON next to it (same name, `.json` extension; if
            `report_path` ends in `.json`, the Markdown goes to `.md`).
        calibration_examples: At most this many `representative_data`
            examples calibrate `"int8"` (a few hundred are enough).
        num_threads: Interpreter threads for verification and latency.
        per_channel: With `"dynamic"` or `"int8"`: `True` (the default) for
            one weight scale per output channel, `False` for one per tensor:
            a smaller file for a small model (see the module docstring),
            possibly less accurate, which the checks above measure. Only
            `True` is accepted in the float modes.

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: For an invalid argument, a model with several inputs or
            outputs, `"int8"` without `representative_data`, or
            `per_channel=False` in a float mode (raised before converting
            anything).
        TypeError: If `model` is not a Keras model of the running Keras.
        UnsupportedOpsError: If the model needs ops LiteRT's builtins lack
            and `allow_tf_ops` is `False` (the message lists them).
        AccuracyDropError: If the accuracy drop exceeds `max_accuracy_drop`.
        ExportError: If conversion fails otherwise, float32 outputs
            differ from Keras by more than 1e-4, or `per_channel=False` is
            not supported by this TensorFlow's converter.

    Example:

    >>> report = export_litert(
    ...     distiller, "student_int8.tflite", quantization="int8",
    ...     representative_data=x_train[:500], validation_data=(x_test, y_test))
    >>> print(report.to_markdown())
    """
    _check_quantization(quantization)
    _check_per_channel(per_channel, quantization)
    _check_verification_arguments(max_accuracy_drop, latency_runs, num_threads)
    student = _strip_pruning_wrappers(_unwrap_student(model))
    # Converting takes seconds: the data is checked before it starts.
    if validation_data is not None:
        x, y = _validation_xy(validation_data, student)
        comparison_data = x if y is None else (x, y)
    elif representative_data is not None:
        comparison_data = _examples(
            representative_data,
            student,
            "representative_data",
            limit=calibration_examples,
        )
    else:
        comparison_data = None
    litert_model = convert_to_litert(
        student,
        quantization=quantization,
        representative_data=representative_data,
        int8_io=int8_io,
        allow_tf_ops=allow_tf_ops,
        calibration_examples=calibration_examples,
        per_channel=per_channel,
    )
    report = verify_litert(
        litert_model,
        student,
        validation_data=comparison_data,
        quantization=quantization,
        max_accuracy_drop=max_accuracy_drop,
        latency_runs=latency_runs,
        num_threads=num_threads,
    )
    path = os.fspath(path)
    tf_distill_files.atomic_write(path, litert_model)
    report.path = path
    if report_path is not None:
        write_report(report, report_path)
    return report


def write_report(report, report_path):
    """Writes `report` as Markdown and JSON, each atomically.

    Args:
        report: An `ExportReport`.
        report_path: The Markdown file; the JSON goes next to it with a
            `.json` extension. If `report_path` ends in `.json`, it receives
            the JSON and the Markdown goes to the same name with `.md`.

    Returns:
        `(markdown_path, json_path)`.
    """
    report_path = os.fspath(report_path)
    stem, extension = os.path.splitext(report_path)
    if extension.lower() == ".json":
        markdown_path, json_path = stem + ".md", report_path
    else:
        markdown_path, json_path = report_path, stem + ".json"
    tf_distill_files.atomic_write(markdown_path, report.to_markdown())
    tf_distill_files.atomic_write_json(json_path, report.to_dict())
    return markdown_path, json_path


def convert_to_litert(
    model,
    quantization="float32",
    representative_data=None,
    int8_io=False,
    allow_tf_ops=False,
    calibration_examples=500,
    per_channel=True,
):
    """Converts a Keras model to LiteRT flatbuffer bytes, unverified.

    Uses `tf.lite.TFLiteConverter.from_keras_model`, which under Keras 3
    exports the model's call with `training=False` to a temporary SavedModel
    (so dropout is off and batch normalization uses its moving statistics)
    and under tf_keras saves the model directly.

    Args:
        model: A Keras model, or an object with a `.student` Keras model.
        quantization, representative_data, int8_io, allow_tf_ops,
        calibration_examples, per_channel: As in `export_litert`.

    Returns:
        The `.tflite` model as `bytes`.

    Raises:
        ValueError: For invalid arguments or a missing `representative_data`.
        UnsupportedOpsError: If ops need `allow_tf_ops=True` or are not
            supported by LiteRT at all.
        ExportError: If the converter fails for another reason, or cannot
            (or did not) quantize per tensor with `per_channel=False`.
    """
    _check_quantization(quantization)
    _check_per_channel(per_channel, quantization)
    _check_count("calibration_examples", calibration_examples, minimum=1)
    if not isinstance(int8_io, bool):
        raise ValueError(f"`int8_io` must be a bool. Received: int8_io={int8_io!r}")
    if int8_io and quantization != "int8":
        raise ValueError(
            "`int8_io=True` needs full integer quantization. Pass "
            f"quantization='int8'. Received: quantization={quantization!r}"
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "quantization='int8' needs `representative_data`: a sample of "
            "training inputs (a NumPy array or a tf.data.Dataset, a few "
            "hundred examples) to calibrate activation ranges on. Received: "
            "representative_data=None"
        )
    model = _strip_pruning_wrappers(_unwrap_student(model))
    _check_single_input_output(model)

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    builtin_ops = tf.lite.OpsSet.TFLITE_BUILTINS
    if quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        calibration = _examples(
            representative_data,
            model,
            "representative_data",
            limit=calibration_examples,
        )
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative_dataset(calibration)
        # Integer-only builtins: an op without an int8 kernel is an error,
        # not a silent float fallback.
        builtin_ops = tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    supported_ops = [builtin_ops]
    if allow_tf_ops:
        supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = supported_ops
    if not per_channel:
        _disable_per_channel(converter)

    try:
        # Keras 3's SavedModel export prints its endpoints to stdout, and the
        # converter warns that int8 inputs have no statistics, which is
        # expected: their scale comes from calibration.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            litert_model = converter.convert()
    except Exception as error:  # The converter raises a private class.
        unsupported, need_custom = _unsupported_ops(error)
        if unsupported:
            if need_custom:
                hint = (
                    "Some have no TensorFlow-op fallback either "
                    f"({', '.join(need_custom)}): replace them in the model."
                )
            elif allow_tf_ops:
                hint = "Replace them in the model."
            else:
                hint = (
                    "Replace them in the model, or pass allow_tf_ops=True to "
                    "keep them as TensorFlow ops (the app then needs the "
                    "LiteRT Flex delegate, tensorflow-lite-select-tf-ops)."
                )
            raise UnsupportedOpsError(
                f"The model uses ops that LiteRT's builtin kernels "
                f"({quantization} mode) do not support: "
                f"{', '.join(unsupported)}. {hint}",
                ops=unsupported,
            ) from error
        raise ExportError(
            f"LiteRT conversion failed ({quantization} mode): {_first_lines(str(error))}"
        ) from error
    if not per_channel:
        per_channel_tensors = _per_channel_tensors(litert_model)
        if per_channel_tensors:
            raise ExportError(
                f"per_channel=False was asked for, but the converter of TensorFlow "
                f"{tf.__version__} still gave per-channel scales to "
                f"{len(per_channel_tensors)} tensors ({', '.join(per_channel_tensors[:3])}"
                f"{', ...' if len(per_channel_tensors) > 3 else ''}). Use per_channel=True."
            )
    return litert_model


# The converter's switch for per-tensor weight scales is private (TF 2.x):
# checked by name so that a TensorFlow without it fails clearly, not silently.
_DISABLE_PER_CHANNEL = "_experimental_disable_per_channel"


def _disable_per_channel(converter):
    if not hasattr(converter, _DISABLE_PER_CHANNEL):
        raise ExportError(
            "per_channel=False needs the TFLite converter's private setting "
            f"`{_DISABLE_PER_CHANNEL}`, which TensorFlow {tf.__version__} does not "
            "have. Use per_channel=True (the default)."
        )
    setattr(converter, _DISABLE_PER_CHANNEL, True)


def _per_channel_tensors(litert_model):
    """Names of the tensors of a `.tflite` flatbuffer with several scales."""
    from ai_edge_litert import schema_py_generated as schema

    flatbuffer = schema.Model.GetRootAs(litert_model, 0)
    names = []
    for subgraph_index in range(flatbuffer.SubgraphsLength()):
        subgraph = flatbuffer.Subgraphs(subgraph_index)
        for index in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(index)
            quantization = tensor.Quantization()
            if quantization is not None and quantization.ScaleLength() > 1:
                names.append(tensor.Name().decode("utf-8", "replace"))
    return names


def verify_litert(
    litert_model,
    model,
    validation_data=None,
    quantization="float32",
    max_accuracy_drop=1.0,
    latency_runs=200,
    num_threads=1,
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

    Returns:
        An `ExportReport` with `verified=True` (its `path` is `None`), or
        `verified=False` when the model needs TensorFlow ops that this
        interpreter cannot run (a warning says so).

    Raises:
        AccuracyDropError: If the accuracy drop exceeds `max_accuracy_drop`.
        ExportError: If float32 outputs differ by more than 1e-4, or the
            interpreter cannot run the model.
    """
    _check_quantization(quantization)
    _check_verification_arguments(max_accuracy_drop, latency_runs, num_threads)
    model = _unwrap_student(model)
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
        tf_ops=_tf_ops_in(litert_model),
        max_accuracy_drop=max_accuracy_drop,
        per_channel=(
            bool(_per_channel_tensors(litert_model)) if quantization in _PER_CHANNEL_MODES else None
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

    runner = _LiteRTRunner(litert_model, num_threads)
    report.input_dtype = runner.input_dtype
    report.output_dtype = runner.output_dtype
    if validation_data is not None:
        x, y = _validation_xy(validation_data, model)
        _compare(report, runner, model, x, y)
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
    """The LiteRT interpreter behind a float-in, float-out call."""

    def __init__(self, litert_model, num_threads):
        # Imported here so that importing tf_distill stays light.
        from ai_edge_litert.interpreter import Interpreter

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
        try:
            self._interpreter.allocate_tensors()
        except RuntimeError as error:
            raise ExportError(f"The LiteRT interpreter cannot run the model: {error}") from error

    def _resize(self, batch_size):
        if batch_size == self._batch_size:
            return
        shape = list(self._input["shape_signature"])
        shape[0] = batch_size
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

    def __call__(self, x):
        """Outputs for float inputs `x`, dequantized to float32."""
        batch_size = self._fixed_batch or _EVALUATION_BATCH_SIZE
        outputs = []
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            size = len(chunk)
            if self._fixed_batch and size < self._fixed_batch:
                padding = np.zeros((self._fixed_batch - size,) + chunk.shape[1:])
                chunk = np.concatenate([chunk, padding.astype(chunk.dtype)])
            self._resize(len(chunk))
            self._interpreter.set_tensor(self._input["index"], self._quantize(chunk))
            self._interpreter.invoke()
            output = self._interpreter.get_tensor(self._output["index"])
            outputs.append(self._dequantize(output[:size]))
        return np.concatenate(outputs)

    def latency_ms(self, runs):
        """Median wall time of one call at batch size 1, in milliseconds."""
        self._resize(self._fixed_batch or 1)
        shape = [self._batch_size] + list(self._input["shape_signature"][1:])
        self._interpreter.set_tensor(
            self._input["index"], np.zeros(shape, np.dtype(self._input["dtype"]))
        )
        for _ in range(min(runs, _LATENCY_WARMUP_RUNS)):
            self._interpreter.invoke()
        timings = []
        for _ in range(runs):
            start = time.perf_counter()
            self._interpreter.invoke()
            timings.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(timings) / self._batch_size


def _compare(report, runner, model, x, y):
    """Fills the report's accuracy and agreement fields."""
    keras_outputs = np.asarray(
        model.predict(x, batch_size=_EVALUATION_BATCH_SIZE, verbose=0), np.float32
    )
    litert_outputs = runner(x)
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


def _validation_xy(validation_data, model):
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
    x = _examples(x, model, "validation_data")
    if y is not None:
        y = np.asarray(y)
        if len(x) != len(y):
            raise ValueError(
                "`validation_data` must be `(x, y)` with as many labels as "
                f"inputs. Received {len(x)} inputs and {len(y)} labels."
            )
    return x, y


def _examples(data, model, argument, limit=None):
    """Inputs (an array, or tf.data of inputs or `(inputs, ...)`) as NumPy."""
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


def _representative_dataset(examples):
    def generate():
        for index in range(len(examples)):
            yield [examples[index : index + 1]]

    return generate


def _input_rank_and_dtype(model):
    inputs = getattr(model, "inputs", None)
    if inputs:
        return len(inputs[0].shape), np.dtype(_dtype_name(inputs[0].dtype))
    return None, np.dtype("float32")


def _dtype_name(dtype):
    return dtype if isinstance(dtype, str) else tf.as_dtype(dtype).name


def _unsupported_ops(error):
    """Op names from a converter error: (all unsupported, without fallback)."""
    unsupported, need_custom = [], []
    for error_data in getattr(error, "errors", None) or []:
        try:
            code = (
                error_data.DESCRIPTOR.fields_by_name["error_code"]
                .enum_type.values_by_number[error_data.error_code]
                .name
            )
        except (AttributeError, KeyError):
            continue
        name = error_data.operator.name
        if not name or code not in ("ERROR_NEEDS_FLEX_OPS", "ERROR_NEEDS_CUSTOM_OPS"):
            continue
        if name not in unsupported:
            unsupported.append(name)
        if code == "ERROR_NEEDS_CUSTOM_OPS" and name not in need_custom:
            need_custom.append(name)
    if not unsupported:
        # Older converters only put the list in the message.
        message = str(error)
        for marker, is_custom in (("TF Select ops: ", False), ("Custom ops: ", True)):
            for line in message.splitlines():
                if line.startswith(marker):
                    for name in line[len(marker) :].split(","):
                        name = "tf." + name.strip()
                        if name != "tf." and name not in unsupported:
                            unsupported.append(name)
                            if is_custom:
                                need_custom.append(name)
    return unsupported, need_custom


def _tf_ops_in(litert_model):
    """The TensorFlow (Flex) ops a `.tflite` flatbuffer calls."""
    from ai_edge_litert import schema_py_generated as schema

    flatbuffer = schema.Model.GetRootAs(litert_model, 0)
    ops = []
    for index in range(flatbuffer.OperatorCodesLength()):
        custom_code = flatbuffer.OperatorCodes(index).CustomCode()
        if custom_code:
            name = custom_code.decode("utf-8", "replace")
            # The converter names them Flex<TensorFlow op>.
            if name.startswith("Flex") and f"tf.{name[4:]}" not in ops:
                ops.append(f"tf.{name[4:]}")
    return ops


def _first_lines(message, count=12):
    lines = [line for line in message.splitlines() if line.strip()]
    return "\n".join(lines[:count])


def _unwrap_student(model):
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


def _strip_pruning_wrappers(model):
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


def _check_single_input_output(model):
    for attribute in ("inputs", "outputs"):
        tensors = getattr(model, attribute, None)
        if tensors is not None and len(tf.nest.flatten(tensors)) > 1:
            raise ValueError(
                "export_litert supports models with one input and one output. "
                f"Received a model with {len(tf.nest.flatten(tensors))} "
                f"{attribute}."
            )


def _check_quantization(quantization):
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(
            "Invalid value for argument `quantization`. Expected one of "
            f"{list(QUANTIZATION_MODES)}. Received: quantization={quantization!r}"
        )


def _check_per_channel(per_channel, quantization):
    if not isinstance(per_channel, bool):
        raise ValueError(f"`per_channel` must be a bool. Received: per_channel={per_channel!r}")
    if not per_channel and quantization not in _PER_CHANNEL_MODES:
        raise ValueError(
            "`per_channel=False` applies to the integer weights of "
            f"quantization='dynamic' or 'int8'; {quantization} weights have no "
            f"scales. Received: quantization={quantization!r}, per_channel=False"
        )


def _check_verification_arguments(max_accuracy_drop, latency_runs, num_threads):
    if (
        isinstance(max_accuracy_drop, bool)
        or not isinstance(max_accuracy_drop, (int, float))
        or not math.isfinite(max_accuracy_drop)
    ):
        raise ValueError(
            "`max_accuracy_drop` must be a finite number of percentage points. "
            f"Received: max_accuracy_drop={max_accuracy_drop!r}"
        )
    _check_count("latency_runs", latency_runs, minimum=0)
    _check_count("num_threads", num_threads, minimum=1)


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")


__all__ = [
    "QUANTIZATION_MODES",
    "FLOAT32_TOLERANCE",
    "ExportReport",
    "ExportError",
    "AccuracyDropError",
    "UnsupportedOpsError",
    "export_litert",
    "convert_to_litert",
    "verify_litert",
    "write_report",
    "reports_table",
]
