"""`export_litert`: convert, verify, then write, so that a refused model leaves no file."""


from tf_distill.export.arguments import check_per_channel
from tf_distill.export.arguments import check_quantization
from tf_distill.export.arguments import check_verification_arguments
from tf_distill.export.convert import convert_to_litert
from tf_distill.export.inputs import examples
from tf_distill.export.inputs import strip_pruning_wrappers
from tf_distill.export.inputs import unwrap_student
from tf_distill.export.inputs import validation_xy
from tf_distill.export.language import export_causal_lm
from tf_distill.export.language import is_causal_lm
from tf_distill.export.verify import verify_litert


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
    verbose=0,
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

    A KerasHub `CausalLM` (or a Distiller with one as student) goes to
    `export_causal_lm`: a fixed-length `[1, L]` signature, verified on the
    token sequences given as `validation_data` (else `representative_data`),
    with `quantization="int8"` meaning int8 weight-only and the perplexity
    change in the report instead of accuracies (see `export.language`).

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
            `report_path` ends in `.json`, the Markdown goes to `.md`); both
            are listed in the report's `files` (see `ExportReport.write`).
        calibration_examples: At most this many `representative_data`
            examples calibrate `"int8"` (a few hundred are enough).
        num_threads: Interpreter threads for verification and latency.
        per_channel: With `"dynamic"` or `"int8"`: `True` (the default) for
            one weight scale per output channel, `False` for one per tensor:
            a smaller file for a small model (see the module docstring),
            possibly less accurate, which the checks above measure. Only
            `True` is accepted in the float modes.
        verbose: As Keras's `verbose`: 0 (the default) is silent, 1 shows a
            `keras.utils.Progbar` of the verification, 2 one line when it is
            done (see `verify_litert`, `verify_causal_lm`).

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
    check_quantization(quantization)
    check_per_channel(per_channel, quantization)
    check_verification_arguments(max_accuracy_drop, latency_runs, num_threads)
    student = strip_pruning_wrappers(unwrap_student(model))
    if is_causal_lm(student):
        if int8_io or allow_tf_ops or not per_channel:
            raise ValueError(
                "A causal LM is exported by export_causal_lm, which has no `int8_io`, "
                "`allow_tf_ops` or `per_channel=False`. Received: "
                f"int8_io={int8_io}, allow_tf_ops={allow_tf_ops}, per_channel={per_channel}"
            )
        return export_causal_lm(
            student,
            path,
            token_data=validation_data if validation_data is not None else representative_data,
            quantization=quantization,
            latency_runs=latency_runs,
            report_path=report_path,
            num_threads=num_threads,
            verbose=verbose,
        )
    # Converting takes seconds: the data is checked before it starts.
    if validation_data is not None:
        x, y = validation_xy(validation_data, student)
        comparison_data = x if y is None else (x, y)
    elif representative_data is not None:
        comparison_data = examples(
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
        verbose=verbose,
    )
    return report.commit(litert_model, path, report_path)
