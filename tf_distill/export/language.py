"""LiteRT export of a causal language model: a fixed-length signature, verified.

`export_causal_lm` (which `export_litert` calls for a KerasHub `CausalLM`)
writes a `.tflite` with one signature, `serving_default`:
`token_ids` int32 `[1, L]` and `padding_mask` int32 `[1, L]` (1 for a real
token) in, `logits` float32 `[1, L, V]` out. Before anything is written, the
interpreter runs it on real token sequences and it is compared with Keras:
no NaN or infinite logit, float32 logits within `FLOAT32_TOLERANCE` × max(1,
largest |Keras logit|), and the perplexity of both on the same tokens
(`ExportReport.keras_perplexity`, `litert_perplexity`,
`perplexity_change_percent`). `greedy_decode` (in `export.decode`) generates
from the file with the same signature.

Quantization (`quantization=`):

- `"float32"`: the verified reference.
- `"float16"`: float16 weights, float32 computation.
- `"dynamic"`: the converter's dynamic-range quantization: int8 weights,
  activations quantized on the fly in the matrix products.
- `"int8"`: for a language model, int8 **weight-only**: int8 weights (one
  scale per row), float32 computation (see `export.weight_only`). Full
  integer quantization of a transformer's activations is not offered.

The NaN logits of the obvious conversion, and the fix
------------------------------------------------------
Converting a KerasHub `GPT2CausalLM` with
`tf.lite.TFLiteConverter.from_concrete_functions([fn], model)` for `[1, 32]`
token ids and padding mask gives a file whose logits are all NaN in the
`ai_edge_litert` interpreter (2,048 of 2,048 with a 64-token vocabulary),
while Keras gives finite ones. The cause is not the attention mask: given a
`trackable_obj`, the converter saves it with `tf.saved_model.save` and
converts that SavedModel, and for a Keras 3 model its weights come out as
resource variables (`VAR_HANDLE` + `READ_VARIABLE`) with no initializer
subgraph. The file holds no weights (50 KB instead of 110 KB for the 2-layer
model; 1.6 KB for a single `Dense(3)`, which gives garbage such as 1e28 the
same way). Nothing ever assigns the variables, so with the default XNNPACK
delegate the model reads unwritten buffers, which layer normalization and
softmax turn into NaN; without the delegate
(`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`) `READ_VARIABLE` fails
("variable != nullptr"). TensorFlow itself loads that SavedModel correctly,
so only the LiteRT file is wrong, and only running it shows it. The masks
are innocent: the same graph with its weights frozen, Keras's large negative
mask value included, runs in XNNPACK within 5e-8 of Keras in float32 and
finite in float16, dynamic and int8 modes.

The fix, here: the model is exported through Keras's own `ExportArchive`
(what `TFLiteConverter.from_keras_model` does under Keras 3), which tracks
the variables so the converter freezes them into constants, and gives the
signature its names. Verification still runs the interpreter on every
export, so a conversion that produces NaN again is an `ExportError` naming
the NaN, and nothing is written.

LiteRT-LM
---------
This file is for the `ai_edge_litert` interpreter. The LiteRT-LM runtime
(what phone apps run) needs `prefill` and `decode` signatures with an
explicit KV cache and the tokenizer packed beside them in a `.litertlm`:
`export_litertlm` (in `export.litertlm`) writes that.
"""

import os
import statistics
import sys
import tempfile
import time

import numpy as np

from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.export.arguments import check_count
from tf_distill.export.arguments import check_quantization
from tf_distill.export.decode import PADDING_MASK
from tf_distill.export.decode import TOKEN_IDS
from tf_distill.export.decode import CausalLMRunner
from tf_distill.export.errors import ExportError
from tf_distill.export.flatbuffer import tf_ops_in
from tf_distill.export.inputs import unwrap_student
from tf_distill.export.report import ExportReport
from tf_distill.export.tokens import check_finite_logits
from tf_distill.export.tokens import check_token_data
from tf_distill.export.tokens import compare_token_logits
from tf_distill.export.tokens import keras_token_logits
from tf_distill.export.verify import FLOAT32_TOLERANCE
from tf_distill.export.weight_only import quantize_weights_int8

SIGNATURE = "serving_default"

def is_causal_lm(model):
    """Whether `model` (or a Distiller's student) is a KerasHub `CausalLM`."""
    keras_hub = sys.modules.get("keras_hub")  # Only a loaded KerasHub can have made it.
    if keras_hub is None:
        return False
    student = getattr(model, "student", None)
    return isinstance(model if student is None else student, keras_hub.models.CausalLM)


def export_causal_lm(
    model,
    path,
    token_data,
    quantization="float32",
    sequence_length=None,
    max_perplexity_increase=None,
    latency_runs=20,
    report_path=None,
    num_threads=1,
    verbose=0,
):
    """Converts a causal LM to a fixed-length LiteRT model, verifies it, writes it.

    Args:
        model: A KerasHub `CausalLM` built with `preprocessor=None` (any
            Keras model mapping `{"token_ids", "padding_mask"}` to logits
            `[batch, length, vocabulary]`), or a `Distiller` whose student
            is one: only the student is exported.
        path: Destination `.tflite` file.
        token_data: Real token sequences to verify on: an int array
            `[num_sequences, length]` (every token real) or a dict with
            `"token_ids"` and `"padding_mask"` of that shape; `length <= L`.
            The perplexity is measured on them.
        quantization: `"float32"`, `"float16"`, `"dynamic"` or `"int8"`
            (int8 weight-only for a language model; see the module
            docstring).
        sequence_length: `L`, the signature's fixed length; defaults to the
            backbone's `max_sequence_length`.
        max_perplexity_increase: If given, the largest allowed perplexity
            increase of the LiteRT model over Keras, in percent.
        latency_runs: Interpreter calls to take the median latency of
            (0 skips it).
        report_path: If given, the report is written there as Markdown and
            JSON (see `ExportReport.write`).
        num_threads: Interpreter threads.
        verbose: As in `verify_causal_lm`.

    Returns:
        An `ExportReport` with the perplexity fields filled.

    Raises:
        ValueError: For invalid arguments or token data (sequences longer
            than `L`, ids outside the vocabulary), before converting.
        ExportError: If conversion fails, the LiteRT logits hold NaN or
            infinite values, or float32 logits differ from Keras.
        AccuracyDropError: If the perplexity increase exceeds
            `max_perplexity_increase`.

    Example:

    >>> report = export_causal_lm(student, "lm.tflite", token_data=val_ids,
    ...                           quantization="dynamic")
    >>> greedy_decode("lm.tflite", prompt_ids, num_tokens=32)
    """
    model = unwrap_student(model)
    check_quantization(quantization)
    if token_data is None:
        raise ValueError(
            "Exporting a causal LM needs `token_data`: real token sequences to verify "
            "the LiteRT model and measure its perplexity on. Received: token_data=None"
        )
    sequence_length = _sequence_length(model, sequence_length)
    # Converting takes seconds: the data is checked before it starts.
    token_ids, padding_mask = check_token_data(token_data, sequence_length, _vocabulary_size(model))
    litert_model = convert_causal_lm(model, sequence_length, quantization)
    report = verify_causal_lm(
        litert_model,
        model,
        {TOKEN_IDS: token_ids, PADDING_MASK: padding_mask},
        quantization=quantization,
        max_perplexity_increase=max_perplexity_increase,
        latency_runs=latency_runs,
        num_threads=num_threads,
        verbose=verbose,
    )
    return report.commit(litert_model, path, report_path)


def convert_causal_lm(model, sequence_length=None, quantization="float32"):
    """The causal LM as fixed-length LiteRT flatbuffer bytes, unverified.

    Exported through `keras.export.ExportArchive`, so the weights are frozen
    (see the module docstring for what goes wrong otherwise).

    Returns:
        The `.tflite` model as `bytes`, with the signature `serving_default`.
    """
    check_quantization(quantization)
    model = unwrap_student(model)
    sequence_length = _sequence_length(model, sequence_length)

    def logits(token_ids, padding_mask):
        inputs = {TOKEN_IDS: token_ids, PADDING_MASK: tf.cast(padding_mask, "bool")}
        return {"logits": model(inputs, training=False)}

    specs = [
        tf.TensorSpec([1, sequence_length], tf.int32, name=TOKEN_IDS),
        tf.TensorSpec([1, sequence_length], tf.int32, name=PADDING_MASK),
    ]
    with tempfile.TemporaryDirectory() as directory:
        try:
            archive = keras.export.ExportArchive()
            # The backbone holds every weight; a preset-loaded model's
            # preprocessor (a tokenizer with a lookup table LiteRT cannot
            # run) is left out.
            archive.track(getattr(model, "backbone", model))
            archive.add_endpoint(SIGNATURE, logits, input_signature=specs)
            archive.write_out(directory, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(directory)
            if quantization in ("dynamic", "float16"):
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantization == "float16":
                converter.target_spec.supported_types = [tf.float16]
            litert_model = converter.convert()
        except Exception as error:  # The converter raises a private class.
            lines = [line for line in str(error).splitlines() if line.strip()]
            raise ExportError(
                f"LiteRT conversion of the causal LM failed ({quantization} mode): "
                + "\n".join(lines[:12])
            ) from error
    if quantization == "int8":
        litert_model, _ = quantize_weights_int8(litert_model)
    return litert_model


def verify_causal_lm(
    litert_model,
    model,
    token_data,
    quantization="float32",
    tolerance=FLOAT32_TOLERANCE,
    max_perplexity_increase=None,
    latency_runs=20,
    num_threads=1,
    verbose=0,
):
    """Runs a fixed-length LiteRT LM on token data and checks it against Keras.

    Args:
        litert_model: `.tflite` bytes or path, with inputs named `token_ids`
            and `padding_mask` `[1, L]` and one `[1, L, V]` logits output.
        model: The Keras model it was converted from (or a `Distiller`).
        token_data: As in `export_causal_lm`.
        quantization: The mode `litert_model` was converted with; only
            `"float32"` is held to `tolerance`.
        tolerance: The largest float32 logit difference allowed, relative to
            max(1, the largest |Keras logit|).
        max_perplexity_increase, latency_runs, num_threads: As in
            `export_causal_lm`.
        verbose: As Keras's `verbose`: 0 (the default) is silent, 1 shows a
            `keras.utils.Progbar` of the sequences run through the
            interpreter, 2 one line when they are done.

    Returns:
        An `ExportReport` with `verified=True` (its `path` is `None`).

    Raises:
        ExportError: If any logit is NaN or infinite, Keras's or LiteRT's
            (the message counts them), or float32 logits differ by more than
            the tolerance.
        AccuracyDropError: If the perplexity increase exceeds
            `max_perplexity_increase`.
    """
    check_quantization(quantization)
    check_count("latency_runs", latency_runs, minimum=0)
    check_count("num_threads", num_threads, minimum=1)
    if max_perplexity_increase is not None and (
        isinstance(max_perplexity_increase, bool)
        or not isinstance(max_perplexity_increase, (int, float))
        or not np.isfinite(max_perplexity_increase)
    ):
        raise ValueError(
            "`max_perplexity_increase` must be a finite number of percent or None. "
            f"Received: max_perplexity_increase={max_perplexity_increase!r}"
        )
    model = unwrap_student(model)
    if isinstance(litert_model, (str, os.PathLike)):
        with open(litert_model, "rb") as handle:
            litert_model = handle.read()
    litert_model = bytes(litert_model)
    runner = CausalLMRunner(litert_model, num_threads=num_threads)
    length = runner.sequence_length
    token_ids, padding_mask = check_token_data(token_data, length, _vocabulary_size(model))
    keras_logits = keras_token_logits(model, token_ids, padding_mask)
    progress = keras.utils.Progbar(len(token_ids), verbose=verbose, unit_name="sequence")
    litert_logits = []
    for index in range(len(token_ids)):
        litert_logits.append(runner(token_ids[index : index + 1], padding_mask[index : index + 1]))
        progress.update(index + 1)
    litert_logits = np.concatenate(litert_logits)
    report = ExportReport(
        path=None,
        quantization=quantization,
        file_size_bytes=len(litert_model),
        num_examples=len(token_ids),
        num_threads=num_threads,
        input_dtype="int32",
        output_dtype=np.dtype(litert_logits.dtype).name,
        tf_ops=tf_ops_in(litert_model),
        sequence_length=length,
    )
    check_finite_logits(
        keras_logits, litert_logits, quantization,
        f"of {litert_logits.size} on {len(token_ids)} sequences of length {length}", report,
        litert_hint="A model whose weights were left as uninitialized variables does this "
        "(see tf_distill.export.language); export it with export_causal_lm.",
    )
    real = padding_mask.astype(bool)
    compare_token_logits(report, keras_logits, litert_logits, token_ids, real, quantization,
                         tolerance=tolerance, max_perplexity_increase=max_perplexity_increase,
                         conversion="conversion", milder="'float16' or 'float32'")
    if latency_runs:
        report.latency_runs = latency_runs
        report.latency_ms = _latency_ms(runner, token_ids[:1], padding_mask[:1], latency_runs)
    report.verified = True
    return report


def _latency_ms(runner, token_ids, padding_mask, runs):
    runner(token_ids, padding_mask)  # Warm-up: the first call prepares kernels.
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(token_ids, padding_mask)
        timings.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(timings)


def _sequence_length(model, sequence_length):
    backbone = getattr(model, "backbone", None)
    maximum = getattr(backbone, "max_sequence_length", None)
    if sequence_length is None:
        if maximum is None:
            raise ValueError(
                "`sequence_length` is required for a model without a KerasHub backbone "
                "(`model.backbone.max_sequence_length`). Received: sequence_length=None"
            )
        return int(maximum)
    check_count("sequence_length", sequence_length, minimum=2)
    if maximum is not None and sequence_length > maximum:
        raise ValueError(
            f"`sequence_length` must be at most the model's max_sequence_length={maximum}. "
            f"Received: sequence_length={sequence_length}"
        )
    return sequence_length


def _vocabulary_size(model):
    backbone = getattr(model, "backbone", None)
    size = getattr(backbone, "vocabulary_size", None)
    return None if size is None else int(size)
