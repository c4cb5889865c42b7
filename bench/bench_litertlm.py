"""The `--part litertlm` of bench/bench_export_language.py (see its docstring)."""

import json
import os
import subprocess
import sys
import tempfile
import time

import common
import numpy as np

MODES = ("float32", "int8", "int4")
# Room for position 512 and a prefill chunk; the model has 1,024 positions.
CACHE_LENGTH = 576
MODEL_POSITIONS = 1024
PREFILL_LENGTH = 32
PROMPTS = ("This License ", "the software is provided ", "you may ")
NUM_TOKENS = 64
POSITIONS = (32, 512)

# Run in a fresh process, with only the runtime imported: its peak RSS is the
# runtime's, the model loaded and 64 tokens generated.
_RUNTIME_SCRIPT = """
import json, sys
def peak_mb():
    # VmHWM starts anew at exec; ru_maxrss would keep the parent's peak.
    with open("/proc/self/status") as status:
        return [int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM")][0]
import litert_lm
litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)  # loads the runtime's library
imported_mb = peak_mb()
path, prompt, tokens, benchmark = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
engine = litert_lm.Engine(path, backend=litert_lm.Backend.CPU(thread_count=1))
session = engine.create_session(apply_prompt_template=False,
                                sampler_config=litert_lm.SamplerConfig(top_k=1),
                                max_output_tokens=tokens)
session.run_prefill([prompt])
text = session.run_decode().texts[0]
session.close()
engine.close()
result = {"text": text, "peak_rss_mb": peak_mb(), "imported_mb": imported_mb}
if benchmark:
    info = litert_lm.Benchmark(model_path=path, backend=litert_lm.Backend.CPU(thread_count=1),
                               prefill_tokens=256, decode_tokens=128).run()
    result["prefill_tokens_per_second"] = info.last_prefill_tokens_per_second
    result["decode_tokens_per_second"] = info.last_decode_tokens_per_second
print("RESULT " + json.dumps(result))
"""


def run_runtime(path, prompt, benchmark=False):
    """The runtime in a child process: its text, peak RSS and (if asked) throughput."""
    completed = subprocess.run(
        [sys.executable, "-c", _RUNTIME_SCRIPT, path, prompt, str(NUM_TOKENS),
         "1" if benchmark else "0"],
        capture_output=True, text=True, check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"The runtime process failed: {completed.stderr[-2000:]}")


def keras_throughput(model, prompt_ids):
    """Keras's prefill (one forward pass of 256 tokens) and generate tokens per second."""
    from tf_distill import export

    tokens = np.resize(prompt_ids, 256).astype("int32")[None]
    inputs = {"token_ids": tokens, "padding_mask": np.ones_like(tokens, bool)}
    model(inputs)  # Warm-up: traces the call.
    start = time.perf_counter()
    for _ in range(5):
        model(inputs)
    prefill = 5 * 256 / (time.perf_counter() - start)
    export.keras_generate(model, prompt_ids, 128)  # Warm-up: compiles generate.
    start = time.perf_counter()
    export.keras_generate(model, prompt_ids, 128)
    return prefill, 128 / (time.perf_counter() - start)


def wide_model(seed):
    import keras

    from tf_distill.language import build_causal_lm

    keras.utils.set_random_seed(seed)
    return build_causal_lm("gpt2", vocabulary_size=256, num_layers=4, hidden_dim=512,
                           num_heads=8, max_sequence_length=256)


def main(args, argv):
    import keras_hub
    from bench_export_language import corpus_sequences
    from bench_export_language import train_model

    from tf_distill import export
    from tf_distill.export.decode import CausalLMRunner
    from tf_distill.export.language import convert_causal_lm
    from tf_distill.export.quantizer import quantize_language_model

    sequences = corpus_sequences(args.corpus, 32)
    np.random.RandomState(args.seed).shuffle(sequences)
    train, held_out = sequences[: -args.held_out], sequences[-args.held_out:]
    held_out = held_out[:16]  # each token is one decode call
    conditions = common.machine_conditions()
    model = train_model(train, args.epochs, args.seed, max_sequence_length=MODEL_POSITIONS)
    tokenizer = keras_hub.tokenizers.ByteTokenizer(lowercase=False)
    prompt_ids = np.frombuffer(PROMPTS[0].encode(), np.uint8).astype("int32")
    keras_prefill, keras_decode = keras_throughput(model, prompt_ids)
    rows, reports = [], []
    with tempfile.TemporaryDirectory() as folder:
        for mode in MODES:
            path = os.path.join(folder, f"lm_{mode}.litertlm")
            common.log(f"exporting {mode}")
            report = export.export_litertlm(
                model, path, held_out, tokenizer=tokenizer, quantization=mode,
                cache_length=CACHE_LENGTH, prefill_length=PREFILL_LENGTH, prompts=PROMPTS,
                num_tokens=NUM_TOKENS, latency_runs=0,
            )
            reports.append(report)
            litert_model, _ = export.convert_cached_lm(model, CACHE_LENGTH, PREFILL_LENGTH)
            runner = export.CachedLMRunner(quantize_language_model(litert_model, mode))
            # Interleaved, so that the other processes' load falls on both alike.
            times = common.median_times(
                {position: (lambda runner=runner, position=position: runner.decode(1, position))
                 for position in POSITIONS}, 200)
            latencies = [1000 * times[position] for position in POSITIONS]
            runtime = run_runtime(path, PROMPTS[0], benchmark=True)
            rows.append({
                "mode": f"`{mode}`",
                "size": f"{report.file_size_bytes:,}",
                "ppl": f"{report.perplexity_change_percent:+.3f}",
                "greedy": f"{round(report.greedy_agreement * 3 * NUM_TOKENS)}/{3 * NUM_TOKENS}",
                "at32": f"{latencies[0]:.3f}",
                "at512": f"{latencies[1]:.3f}",
                "ratio": f"{latencies[1] / latencies[0]:.2f}",
                "prefill": f"{runtime['prefill_tokens_per_second']:.0f}",
                "decode": f"{runtime['decode_tokens_per_second']:.0f}",
                "text": f"`{runtime['text'][:40]!r}`",
            })
        common.log("fixed window and cache lengths")
        fixed_runners = {length: CausalLMRunner(convert_causal_lm(model, length))
                         for length in POSITIONS}
        fixed_ids = {length: np.ones((1, length), np.int32) for length in POSITIONS}
        fixed = common.median_times(
            {length: (lambda runner=runner, ids=fixed_ids[length]: runner(ids, ids))
             for length, runner in fixed_runners.items()}, 50)
        runners = {
            cache_length: export.CachedLMRunner(
                export.convert_cached_lm(model, cache_length, PREFILL_LENGTH)[0])
            for cache_length in (128, 256, 576, 1024)
        }
        by_cache = common.median_times(
            {length: (lambda runner=runner: runner.decode(1, 20))
             for length, runner in runners.items()}, 200)
        by_cache = {length: 1000 * seconds for length, seconds in by_cache.items()}
        common.log("wide model")
        wide = wide_model(args.seed)
        wide_rows, baseline = [], None
        for mode in MODES:
            path = os.path.join(folder, f"wide_{mode}.litertlm")
            report = export.export_litertlm(
                wide, path, held_out[:4], tokenizer=tokenizer, quantization=mode,
                cache_length=256, prefill_length=PREFILL_LENGTH, prompts=PROMPTS[:1],
                num_tokens=NUM_TOKENS, latency_runs=0,
            )
            runtime = run_runtime(path, PROMPTS[0])
            share = runtime["peak_rss_mb"] - runtime["imported_mb"]
            baseline = baseline or share
            wide_rows.append({
                "mode": f"`{mode}`",
                "size": f"{report.file_size_bytes:,}",
                "rss": f"{runtime['peak_rss_mb']:.1f}",
                "share": f"{share:.1f}",
                "relative": f"{share / baseline:.2f}",
                "ppl": f"{report.perplexity_change_percent:+.3f}",
                "greedy": f"{round(report.greedy_agreement * NUM_TOKENS)}/{NUM_TOKENS}",
            })
    table = common.markdown_table(rows, [
        ("mode", "Quantization", "s"), ("size", "Size (bytes)", "s"),
        ("ppl", "Ppl. change (%)", "s"), ("greedy", "Greedy tokens = Keras generate", "s"),
        ("at32", "Decode ms at pos 32", "s"), ("at512", "Decode ms at pos 512", "s"),
        ("ratio", "512 / 32", "s"), ("prefill", "Runtime prefill tok/s", "s"),
        ("decode", "Runtime decode tok/s", "s"), ("text", "Runtime greedy text", "s"),
    ])
    wide_table = common.markdown_table(wide_rows, [
        ("mode", "Quantization", "s"), ("size", "Size (bytes)", "s"),
        ("rss", "Peak RSS generating (MB)", "s"),
        ("share", "Above the runtime's own (MB)", "s"), ("relative", "That / float32", "s"),
        ("ppl", "Ppl. change (%)", "s"), ("greedy", "Greedy tokens = Keras generate", "s"),
    ])
    markdown = "\n".join([
        "## A causal LM for the LiteRT-LM runtime (.litertlm)",
        "",
        f"Command: `{common.command_line(argv)}`",
        "",
        f"GPT-2 (2 layers, hidden 64, vocabulary 256, 1,024 positions), {args.epochs} "
        f"epochs on {len(train)} byte sequences of {args.corpus}, exported with "
        f"`export_litertlm` (cache {CACHE_LENGTH:,} rows, prefill {PREFILL_LENGTH} tokens); "
        f"perplexity on {len(held_out)} held-out sequences, greedy tokens after "
        f"{len(PROMPTS)} prompts. Decode latency: the `ai_edge_litert` interpreter, "
        "1 thread, median of 200 calls at each position, interleaved. Runtime throughput: `litert_lm.Benchmark` "
        "(256 prefill, 128 decode tokens, 1 thread). Keras on the same model: "
        f"{keras_prefill:.0f} prefill tok/s (one forward pass of 256 tokens), "
        f"{keras_decode:.0f} decode tok/s (`generate`, 128 tokens).",
        "",
        table,
        "",
        "The fixed-window file (`export_causal_lm`, no cache) on the same model, in the "
        "same run, re-runs its whole window per token: "
        f"{1000 * fixed[32]:.3f} ms at L = 32, {1000 * fixed[512]:.3f} ms at L = 512 "
        f"({fixed[512] / fixed[32]:.0f}x). The cached decode step attends over its whole "
        "cache, masked, so its cost follows the cache length, not the position "
        "(decode ms at position 20 by cache length: "
        + ", ".join(f"{length}: {ms:.3f}" for length, ms in by_cache.items())
        + "): size the cache to the context the app needs.",
        "",
        "Memory: an untrained GPT-2, 4 layers, hidden 512 (12.9M parameters), cache 256; "
        "peak RSS (`VmHWM`) of a process that imports only `litert_lm`, loads the file "
        f"and generates {NUM_TOKENS} tokens, and that peak less the process's right after "
        f"`import litert_lm` and its library loaded ({runtime['imported_mb']:.0f} MB).",
        "",
        wide_table,
        "",
        common.conditions_markdown(conditions, load_after=common.current_load()),
    ])
    common.publish("export_litertlm", markdown, write=not args.no_write)
