"""A causal LM as a `.litertlm` file that the LiteRT-LM runtime runs, verified.

`export_litertlm` converts a KerasHub GPT-2, Gemma or Llama causal LM to
`prefill_<T>` and `decode` signatures with a KV cache (`export.kv_cache`),
quantizes its weights with `ai-edge-quantizer` if asked
(`export.quantizer`), checks it in the `ai_edge_litert` interpreter against
Keras (`export.cached_verify`: NaN, float32 parity, perplexity, greedy
tokens equal to `generate`), packs it with `litert-lm-builder` beside the
model's tokenizer (`export.litertlm_tokenizer`) and its LLM metadata
(start and stop tokens, context length, `generic_model`), and opens the
packed file in the runtime itself (`litert_lm.Engine`, CPU backend): its
greedy text after each prompt must be Keras's. Only then is the file moved
to its destination; a refused export leaves a file already there intact.
"""

import contextlib
import os
import tempfile

import numpy as np

from tf_distill.export.cached_verify import verify_cached_lm
from tf_distill.export.errors import ExportError
from tf_distill.export.inputs import unwrap_student
from tf_distill.export.kv_cache import cache_spec
from tf_distill.export.kv_cache import convert_cached_lm
from tf_distill.export.litertlm_tokenizer import write_tokenizer
from tf_distill.export.quantizer import check_block_dimensions
from tf_distill.export.quantizer import check_language_quantization
from tf_distill.export.quantizer import quantize_language_model
from tf_distill.export.tokens import check_token_data

# Prompts of the greedy checks when none are given.
DEFAULT_PROMPTS = ("the", "once upon a time", "a b c")


def export_litertlm(
    model,
    path,
    token_data,
    tokenizer=None,
    quantization="float32",
    cache_length=None,
    prefill_length=32,
    prompts=DEFAULT_PROMPTS,
    num_tokens=32,
    max_perplexity_increase=None,
    latency_runs=20,
    report_path=None,
    num_threads=1,
):
    """Exports a causal LM to a verified `.litertlm` for the LiteRT-LM runtime.

    Args:
        model: A KerasHub `GPT2CausalLM`, `GemmaCausalLM` or `LlamaCausalLM`
            (built from a config, or loaded from a preset: its preprocessor
            is set aside, not exported), or a `Distiller` whose student is
            one.
        path: The `.litertlm` file to write.
        token_data: Real token sequences to verify on (int `[n, length]` or
            a dict with `"token_ids"` and `"padding_mask"`), at most the
            context long.
        tokenizer: The KerasHub tokenizer packed with the model; defaults
            to the model's preprocessor's.
        quantization: `"float32"`, `"int8"` (per-channel int8 weights) or
            `"int4"` (blockwise int4 weights); see `export.quantizer`.
        cache_length: Rows of the KV cache; defaults to the backbone's
            `max_sequence_length`. The runtime's context is
            `cache_length - prefill_length` tokens.
        prefill_length: Prompt tokens per prefill call.
        prompts: Texts after which the greedy continuation is checked, in
            the interpreter (tokens) and in the runtime (text).
        num_tokens: Greedy tokens generated after each prompt.
        max_perplexity_increase: If given, the largest allowed perplexity
            increase over Keras, in percent.
        latency_runs: Decode calls timed per position (0 skips it).
        report_path: If given, the report is written there as Markdown and
            JSON (see `ExportReport.write`).
        num_threads: Interpreter and runtime threads.

    Returns:
        The `ExportReport`, its `path` the written file.

    Raises:
        ValueError: Before converting, for an architecture the cached
            export does not support, a cache longer than the model's
            maximum, a tokenizer the container cannot hold, no tokenizer,
            prompts or token data longer than the context, or `"int4"` for
            widths that are not multiples of its blocks of 32.
        ExportError: If conversion, verification or the runtime fails
            (with the runtime's own message); nothing is written.

    Example:

    >>> report = export_litertlm(student, "student.litertlm", token_data=val_ids,
    ...                          tokenizer=tokenizer, quantization="int8")
    >>> litert_lm.Engine("student.litertlm")
    """
    model = unwrap_student(model)
    check_language_quantization(quantization)
    spec = cache_spec(model, cache_length, prefill_length)
    check_block_dimensions(model, quantization)
    if tokenizer is None:
        tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            "`tokenizer` is required: the model has no preprocessor to take one from, and "
            "the .litertlm file carries the tokenizer. Received: tokenizer=None"
        )
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"`num_tokens` must be an integer >= 1. Received: num_tokens={num_tokens!r}")
    # Converting takes seconds: the data is checked before it starts.
    check_token_data(token_data, spec.max_num_tokens, int(model.backbone.vocabulary_size))
    with tempfile.TemporaryDirectory() as directory:
        tokenizer_file = write_tokenizer(tokenizer, directory)
        prompt_ids = [
            _prompt_ids(tokenizer, prompt, tokenizer_file.start_token_id) for prompt in prompts
        ]
        longest = max((len(ids) for ids in prompt_ids), default=0)
        if longest + num_tokens > spec.max_num_tokens:
            raise ValueError(
                f"The longest prompt ({longest} tokens) and `num_tokens`={num_tokens} exceed "
                f"the context of {spec.max_num_tokens} tokens (cache_length - "
                "prefill_length). Give shorter `prompts`, a smaller `num_tokens` or a "
                "longer `cache_length`."
            )
        litert_model, spec = convert_cached_lm(model, spec.cache_length, spec.prefill_length)
        litert_model = quantize_language_model(litert_model, quantization)
        report = verify_cached_lm(
            litert_model, model, token_data, prompt_ids, num_tokens, quantization,
            max_perplexity_increase, latency_runs, num_threads,
        )
        container = os.path.join(directory, "model.litertlm")
        pack_litertlm(litert_model, tokenizer_file, spec.max_num_tokens, container, directory)
        report.file_size_bytes = os.path.getsize(container)
        report.runtime_texts = runtime_generate(container, prompts, num_tokens, num_threads)
        expected = [
            _text(tokenizer, ids, tokenizer_file.stop_token_ids) for ids in report.greedy_tokens
        ]
        _check_texts(report, expected, prompts)
        with open(container, "rb") as handle:
            return report.commit(handle.read(), path, report_path)


def pack_litertlm(litert_model, tokenizer_file, max_num_tokens, path, directory):
    """Packs `.tflite` bytes, a `TokenizerFile` and LLM metadata into `path`.

    Args:
        litert_model: The `.tflite` bytes (`prefill_<T>` and `decode`).
        tokenizer_file: A `TokenizerFile` (`write_tokenizer`).
        max_num_tokens: The context the runtime may fill.
        path: The `.litertlm` file to write.
        directory: A scratch folder for the builder's input files.
    """
    from litert_lm_builder import litertlm_builder
    from litert_lm_builder.runtime.proto import llm_metadata_pb2

    metadata = llm_metadata_pb2.LlmMetadata()
    if tokenizer_file.start_token_id is not None:
        metadata.start_token.token_ids.ids.append(tokenizer_file.start_token_id)
    for token in tokenizer_file.stop_token_ids:
        metadata.stop_tokens.add().token_ids.ids.append(token)
    metadata.max_num_tokens = max_num_tokens
    metadata.llm_model_type.generic_model.SetInParent()
    model_path = os.path.join(directory, "model.tflite")
    metadata_path = os.path.join(directory, "llm_metadata.pb")
    with open(model_path, "wb") as handle:
        handle.write(litert_model)
    with open(metadata_path, "wb") as handle:
        handle.write(metadata.SerializeToString())
    builder = litertlm_builder.LitertLmFileBuilder()
    builder.add_tflite_model(model_path, litertlm_builder.TfLiteModelType.PREFILL_DECODE)
    if tokenizer_file.kind == "sentencepiece":
        builder.add_sentencepiece_tokenizer(tokenizer_file.path)
    else:
        builder.add_hf_tokenizer(tokenizer_file.path)
    builder.add_llm_metadata(metadata_path)
    with open(path, "wb") as handle:
        builder.build(handle)


def runtime_generate(path, prompts, num_tokens, num_threads=1):
    """Greedy text after each prompt from `litert_lm.Engine` on the CPU backend.

    Raises:
        ExportError: If the runtime refuses the file or fails, with the
            lines it logged.
    """
    import litert_lm

    texts = []
    with _captured_stderr() as log:
        try:
            engine = litert_lm.Engine(
                os.fspath(path), backend=litert_lm.Backend.CPU(thread_count=num_threads)
            )
            try:
                for prompt in prompts:
                    session = engine.create_session(
                        apply_prompt_template=False,
                        sampler_config=litert_lm.SamplerConfig(top_k=1),
                        max_output_tokens=num_tokens,
                    )
                    try:
                        session.run_prefill([prompt])
                        texts.append(session.run_decode().texts[0])
                    finally:
                        session.close()
            finally:
                engine.close()
        except RuntimeError as error:
            failure = error
        else:
            failure = None
    if failure is not None:
        lines = [line for line in log if line.startswith(("E", "ERROR", "F"))]
        raise ExportError(
            f"The LiteRT-LM runtime refused the .litertlm file: {failure}. It logged: "
            + (" | ".join(lines[-6:]) or "nothing")
        ) from failure
    return texts


@contextlib.contextmanager
def _captured_stderr():
    """The runtime logs to file descriptor 2: its lines are kept for the error.

    Yields a list that holds the logged text once the block is left.
    """
    lines = []
    with tempfile.TemporaryFile(mode="w+", errors="replace") as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            lines.extend(log.read().splitlines())


def _prompt_ids(tokenizer, prompt, start_token_id):
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"`prompts` must be non-empty strings. Received: {prompt!r}")
    ids = np.asarray(tokenizer(prompt)).reshape(-1).tolist()
    return np.array(([] if start_token_id is None else [start_token_id]) + ids, np.int32)


def _text(tokenizer, ids, stop_token_ids):
    ids = list(ids)
    for position, token in enumerate(ids):
        if token in stop_token_ids:
            ids = ids[:position]
            break
    if not ids:
        return ""
    text = tokenizer.detokenize(np.array(ids, np.int32))
    text = text.numpy() if hasattr(text, "numpy") else text
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def _check_texts(report, expected, prompts):
    for prompt, runtime_text, text in zip(prompts, report.runtime_texts, expected):
        if runtime_text != text:
            raise ExportError(
                f"The LiteRT-LM runtime's greedy text after {prompt!r} differs from the "
                f"interpreter's ({report.quantization}): {runtime_text!r} against {text!r}. "
                "Nothing was written.",
                report=report,
            )

