"""Keras model to LiteRT flatbuffer bytes: quantization, calibration, per-channel scales.

`convert_to_litert` only converts; `verify_litert` (in `verify`) checks the
result and `export_litert` writes it.
"""

import contextlib
import io
import warnings

from tf_distill.backend import tf
from tf_distill.export.arguments import check_count
from tf_distill.export.arguments import check_per_channel
from tf_distill.export.arguments import check_quantization
from tf_distill.export.arguments import check_single_input_output
from tf_distill.export.errors import ExportError
from tf_distill.export.errors import UnsupportedOpsError
from tf_distill.export.flatbuffer import per_channel_tensors
from tf_distill.export.inputs import examples
from tf_distill.export.inputs import strip_pruning_wrappers
from tf_distill.export.inputs import unwrap_student


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
    check_quantization(quantization)
    check_per_channel(per_channel, quantization)
    check_count("calibration_examples", calibration_examples, minimum=1)
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
    model = strip_pruning_wrappers(unwrap_student(model))
    check_single_input_output(model)

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    builtin_ops = tf.lite.OpsSet.TFLITE_BUILTINS
    if quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        calibration = examples(
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
        tensors = per_channel_tensors(litert_model)
        if tensors:
            raise ExportError(
                f"per_channel=False was asked for, but the converter of TensorFlow "
                f"{tf.__version__} still gave per-channel scales to "
                f"{len(tensors)} tensors ({', '.join(tensors[:3])}"
                f"{', ...' if len(tensors) > 3 else ''}). Use per_channel=True."
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


def _representative_dataset(calibration):
    def generate():
        for index in range(len(calibration)):
            yield [calibration[index : index + 1]]

    return generate


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


def _first_lines(message, count=12):
    lines = [line for line in message.splitlines() if line.strip()]
    return "\n".join(lines[:count])
