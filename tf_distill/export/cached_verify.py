"""Checking a prefill/decode LiteRT LM against the Keras model it came from.

`verify_cached_lm` runs the file in the `ai_edge_litert` interpreter
(`CachedLMRunner`, the way the LiteRT-LM runtime calls it) and compares it
with Keras on three things:

- **logits** of real token sequences, fed one token at a time through
  `decode` (so every cache row is written and read): no NaN or infinite
  value, float32 within `FLOAT32_TOLERANCE` x max(1, largest |Keras
  logit|), and the perplexity change;
- **greedy tokens** after each prompt (prefill, then decode), against
  KerasHub's `generate` with a greedy sampler: all equal in float32, the
  agreement reported in the quantized modes;
- the **decode latency** per token at two positions, to show it does not
  grow with the context.
"""

import os
import statistics
import time

import numpy as np

from tf_distill.export.cached_decode import CachedLMRunner
from tf_distill.export.cached_decode import keras_generate
from tf_distill.export.errors import ExportError
from tf_distill.export.inputs import unwrap_student
from tf_distill.export.report import ExportReport
from tf_distill.export.tokens import check_finite_logits
from tf_distill.export.tokens import check_token_data
from tf_distill.export.tokens import compare_token_logits
from tf_distill.export.tokens import keras_token_logits
from tf_distill.export.verify import FLOAT32_TOLERANCE


def verify_cached_lm(
    litert_model,
    model,
    token_data,
    prompt_ids,
    num_tokens=32,
    quantization="float32",
    max_perplexity_increase=None,
    latency_runs=20,
    num_threads=1,
):
    """Verifies a prefill/decode LiteRT LM (see the module docstring).

    Args:
        litert_model: `.tflite` bytes or path, with `prefill_<T>` and `decode`.
        model: The KerasHub causal LM it was converted from (or a
            `Distiller`).
        token_data: Real token sequences: an int array `[n, length]` or a
            dict with `"token_ids"` and `"padding_mask"`; `length` at most
            the file's context (`cache_length - prefill_length`).
        prompt_ids: A list of 1-D token id prompts for the greedy check.
        num_tokens: Greedy tokens generated after each prompt.
        quantization: The file's mode; only `"float32"` is held to the
            logit tolerance and to equal greedy tokens.
        max_perplexity_increase: If given, the largest allowed perplexity
            increase over Keras, in percent.
        latency_runs: Decode calls timed at each of two positions (0 skips).
        num_threads: Interpreter threads.

    Returns:
        An `ExportReport` with `verified=True`, its `path` `None`.

    Raises:
        ValueError: For token data or prompts longer than the context.
        ExportError: For a NaN or infinite logit, float32 logits away from
            Keras's, or float32 greedy tokens that differ from `generate`.
        AccuracyDropError: If the perplexity rises more than
            `max_perplexity_increase`.
    """
    model = unwrap_student(model)
    if isinstance(litert_model, (str, os.PathLike)):
        with open(litert_model, "rb") as handle:
            litert_model = handle.read()
    runner = CachedLMRunner(litert_model, num_threads=num_threads)
    vocabulary_size = int(model.backbone.vocabulary_size)
    token_ids, padding_mask = check_token_data(token_data, runner.max_num_tokens, vocabulary_size)
    real = padding_mask.astype(bool)
    keras_logits = keras_token_logits(model, token_ids, padding_mask)
    litert_logits = np.zeros_like(keras_logits)
    for index, length in enumerate(real.sum(axis=1)):
        litert_logits[index, :length] = runner.score(token_ids[index, :length])
    report = ExportReport(
        path=None,
        quantization=quantization,
        file_size_bytes=len(litert_model),
        num_examples=len(token_ids),
        num_threads=num_threads,
        input_dtype="int32",
        output_dtype="float32",
        sequence_length=runner.cache_length,
        cache_length=runner.cache_length,
        prefill_length=runner.prefill_length,
    )
    check_finite_logits(
        keras_logits[real], litert_logits[real], quantization,
        f"of {keras_logits[real].size} on {len(token_ids)} sequences", report,
    )
    compare_token_logits(report, keras_logits, litert_logits, token_ids, real, quantization,
                         tolerance=FLOAT32_TOLERANCE, max_perplexity_increase=max_perplexity_increase,
                         conversion="cached conversion", milder="'int8' or 'float32'")
    report.greedy_tokens = _greedy_check(runner, model, prompt_ids, num_tokens, quantization,
                                         report)
    if latency_runs:
        report.latency_runs = latency_runs
        report.latency_ms = decode_latency_ms(runner, 1, latency_runs)
        report.late_latency_ms = decode_latency_ms(runner, runner.max_num_tokens - 1, latency_runs)
    report.verified = True
    return report


def decode_latency_ms(runner, position, runs):
    """The median time of one `decode` call at `position`, in milliseconds."""
    runner.decode(1, position)  # Warm-up: the first call prepares kernels.
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.decode(1, position)
        timings.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(timings)


def _greedy_check(runner, model, prompt_ids, num_tokens, quantization, report):
    """Greedy ids per prompt from the file; float32 must equal `generate`'s."""
    generated, equal, total = [], 0, 0
    for prompt in prompt_ids:
        litert_ids = runner.generate(prompt, num_tokens)
        keras_ids = keras_generate(model, prompt, num_tokens)
        equal += int((litert_ids == keras_ids).sum())
        total += num_tokens
        generated.append(litert_ids.tolist())
        if quantization == "float32" and not np.array_equal(litert_ids, keras_ids):
            first = int(np.argmax(litert_ids != keras_ids))
            report.greedy_agreement = equal / total
            raise ExportError(
                f"The float32 LiteRT model's greedy tokens differ from Keras's generate "
                f"from token {first} on, after the prompt {list(map(int, prompt))[:8]}: "
                f"{litert_ids[first:first + 4].tolist()} against "
                f"{keras_ids[first:first + 4].tolist()}. Nothing was written.",
                report=report,
            )
    report.greedy_agreement = equal / total if total else None
    return generated
