"""Evidence for language-model distillation (issue 13): quality, speed and memory, side by side.

One run measures, on the same machine and text:

1. **Quality** (`examples/lm_distillation.py`): a GPT-2 teacher on the byte
   text of /usr/share/common-licenses, a student of about a quarter of its
   weights alone, with supervised token-level KD (forward, reverse, skew KL),
   on-policy (GKD, λ = 0.5) and from a top-k cache (k = 32), over 3 paired
   seeds: test perplexity and the teacher's NLL of the student's own samples,
   mean ± std and the raw per-seed numbers.
2. **Speed** on one batch, each the median of timed repeats after a warm-up
   (the traced graph is reused): the online token-level KD step against the
   student's training step plus the teacher's forward pass (goal ≤ 1.05×);
   an epoch from the top-k cache against the student-alone epoch (goal
   ≤ 1.15×); the share of an on-policy step (λ = 1) spent sampling, with the
   sampling alone timed as the same compiled `tf.while_loop`.
3. **Memory** at V = 50,000: each kind of step (student alone, online KD) in
   its own process (online KD also with the divergence chunked over time,
   `TokenDistillation(chunk_size=32)`), as the growth of the resident set's high-water mark
   (`ru_maxrss`) over the resident set after the models are built. On CPU,
   TensorFlow keeps no allocator statistics
   (`tf.config.experimental.get_memory_info("CPU:0")` raises), so this is RSS.
   The full mode uses 8,192 tokens per batch (the goal: ≤ 3× the student
   alone); `--quick` 1,024.

Usage:

    python bench/bench_language.py [--quick] [--output bench_language.json]

`--quick` (under 3 minutes on 2 idle cores) shrinks everything: 1 seed, a few
steps, tiny models. The full mode takes about 25 minutes on 2 idle cores.
"""

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402
import numpy as np  # noqa: E402

PROBES = ("student_alone", "online_kd", "online_kd_chunked")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "lm_distillation.py")


def load_example():
    spec = importlib.util.spec_from_file_location("lm_distillation", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def speed(example, settings, repeats, epoch_steps):
    """Step-time ratios of online KD, top-k cached KD and on-policy sampling."""
    import tensorflow as tf

    from tf_distill import Distiller
    from tf_distill import OnPolicyDistiller
    from tf_distill.backend import keras
    from tf_distill.cache import build_topk_cache
    from tf_distill.data import load_text
    from tf_distill.language import sample_continuations
    from tf_distill.losses import TokenDistillation
    from tf_distill.losses import TopKDistillation

    corpus = load_text(example.DEFAULT_TEXT, sequence_length=settings["sequence_length"],
                       max_bytes_per_file=settings["max_bytes_per_file"])
    batch = settings["batch_size"]
    x, y, weights = next(iter(corpus.dataset("train", batch, seed=0)))
    teacher = example.make_model(settings["teacher"], settings, "teacher", 0)

    def compiled(model):
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=False)
        return model

    def student():
        return example.make_model(settings["student"], settings, "student", 0)

    alone = compiled(student())
    forward = tf.function(lambda inputs: teacher(inputs, training=False))
    online = compiled(Distiller(teacher, student(), TokenDistillation("forward_kl")))
    on_policy = compiled(OnPolicyDistiller(
        teacher, student(), TokenDistillation("forward_kl"), on_policy_fraction=1.0,
        prompt_length=settings["sequence_length"] // 2, seed=0))
    sampler = student()
    sample = tf.function(lambda ids: sample_continuations(
        sampler, ids, settings["sequence_length"] // 2, tf.constant([0, 1], tf.int64)))
    # Interleaved, so that a change of load on a shared machine hits each alike.
    timed = {"student_step": lambda: alone.train_on_batch(x, y, weights),
             "teacher_forward": lambda: forward(x),
             "online_kd_step": lambda: online.train_on_batch(x, y, weights),
             "on_policy_step": lambda: on_policy.train_on_batch(x, y, weights),
             "sampling": lambda: sample(x["token_ids"])}
    results = {name: [] for name in timed}
    for _ in range(3):
        for name, function in timed.items():
            results[name].append(common.median_times({name: function}, repeats, warmup=2)[name])
    seconds = {name: float(np.median(values)) for name, values in results.items()}

    with tempfile.TemporaryDirectory() as directory:
        cache = build_topk_cache(teacher, (corpus.inputs("train"), *corpus.windows["train"][1:]),
                                 directory, k=settings["top_k"], tokenizer=example.TOKENIZER)
        cached = compiled(Distiller(teacher, student(), TopKDistillation(1.0)))
        alone_epoch = compiled(student())
        pipelines = {"topk_cached_epoch": (cached, cache.dataset(batch, seed=0, repeat=True)),
                     "student_alone_epoch": (alone_epoch, corpus.dataset(
                         "train", batch, seed=0).repeat())}
        epochs = {name: [] for name in pipelines}
        for model, data in pipelines.values():
            model.fit(data, steps_per_epoch=1, epochs=1, verbose=0)  # traces
        for _ in range(3):
            for name, (model, data) in pipelines.items():
                start = time.perf_counter()
                model.fit(data, steps_per_epoch=epoch_steps, epochs=1, verbose=0)
                epochs[name].append(time.perf_counter() - start)
        bytes_per_token = cache.bytes_per_token
    seconds.update({name: float(np.median(values)) for name, values in epochs.items()})
    return {
        "seconds": seconds,
        "raw_seconds": {**results, **epochs},
        "batch": {"windows": batch, "sequence_length": settings["sequence_length"]},
        "epoch_steps": epoch_steps,
        "online_kd_over_student_plus_teacher": seconds["online_kd_step"]
        / (seconds["student_step"] + seconds["teacher_forward"]),
        "topk_epoch_over_alone_epoch": seconds["topk_cached_epoch"]
        / seconds["student_alone_epoch"],
        "on_policy_sampling_share": seconds["sampling"] / seconds["on_policy_step"],
        "topk_bytes_per_token": bytes_per_token,
        "dense_bytes_per_token": 4 * corpus.vocabulary_size,
    }


def resident_kb():
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("No VmRSS in /proc/self/status")


def memory_probe(kind, vocabulary, windows, length):
    """One step of `kind` in this process; prints the RSS figures as JSON."""
    from tf_distill import Distiller
    from tf_distill.backend import keras
    from tf_distill.language import build_causal_lm
    from tf_distill.losses import TokenDistillation

    def model(layers, width, name):
        keras.utils.set_random_seed(0)
        return build_causal_lm("gpt2", vocabulary, num_layers=layers, hidden_dim=width,
                               num_heads=2, max_sequence_length=length, name=name)

    student = model(1, 64, "student")
    trained = student
    if kind != "student_alone":
        # "online_kd_chunked" computes the divergence 32 positions at a time.
        chunk = 32 if kind == "online_kd_chunked" else None
        trained = Distiller(model(2, 128, "teacher"), student,
                            TokenDistillation("forward_kl", chunk_size=chunk))
    trained.compile(optimizer=keras.optimizers.Adam(1e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=False)
    ids = np.random.default_rng(0).integers(1, vocabulary, (windows, length)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones(ids.shape, bool)}
    labels = np.roll(ids, -1, axis=1)
    before = resident_kb()
    for _ in range(2):
        trained.train_on_batch(x, labels, np.ones(ids.shape, "float32"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("MEMORY " + json.dumps({"kind": kind, "before_kb": before, "peak_kb": peak,
                                  "step_kb": peak - before}))


def memory(vocabulary, windows, length):
    """Runs each probe in its own process; returns the peaks and their ratio."""
    results = {}
    for kind in PROBES:
        process = subprocess.run(
            [sys.executable, __file__, "--memory-probe", kind, "--vocabulary", str(vocabulary),
             "--windows", str(windows), "--length", str(length)],
            capture_output=True, text=True, check=True,
        )
        line = [row for row in process.stdout.splitlines() if row.startswith("MEMORY ")][-1]
        results[kind] = json.loads(line[len("MEMORY "):])
    return {
        "method": "RSS high-water mark (ru_maxrss) minus RSS after building the models, "
                  "one process per kind; TensorFlow has no CPU allocator statistics",
        "vocabulary_size": vocabulary,
        "tokens_per_batch": windows * length,
        "probes": results,
        "online_kd_over_student_alone": results["online_kd"]["step_kb"]
        / results["student_alone"]["step_kb"],
        "online_kd_chunked_over_student_alone": results["online_kd_chunked"]["step_kb"]
        / results["student_alone"]["step_kb"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: tiny everything")
    parser.add_argument("--output", default="bench_language.json")
    parser.add_argument("--memory-probe", choices=PROBES)
    parser.add_argument("--vocabulary", type=int, default=50_000)
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args(argv)
    if args.memory_probe:
        memory_probe(args.memory_probe, args.vocabulary, args.windows, args.length)
        return 0
    example = load_example()
    start = time.perf_counter()
    if args.quick:
        quality = example.run(seeds=(0,), fast=True, log=print)
        settings, repeats, epoch_steps = example.FAST, 3, 4
        windows, length = 8, 128  # 1,024 tokens
    else:
        quality = example.run(seeds=(0, 1, 2), fast=False, log=print)
        settings, repeats, epoch_steps = example.FULL, 5, 30
        windows, length = 32, 256  # 8,192 tokens
    results = {"quick": args.quick, "quality": quality,
               "speed": speed(example, settings, repeats, epoch_steps),
               "memory": memory(50_000, windows, length)}
    results["seconds"] = time.perf_counter() - start
    speed_ = results["speed"]
    print(f"online KD step / (student step + teacher forward): "
          f"{speed_['online_kd_over_student_plus_teacher']:.3f} (goal <= 1.05)")
    print(f"top-k cached epoch / student-alone epoch: "
          f"{speed_['topk_epoch_over_alone_epoch']:.3f} (goal <= 1.15)")
    print(f"on-policy step spent sampling: {speed_['on_policy_sampling_share']:.1%}")
    print(f"peak memory, online KD / student alone at V=50k, "
          f"{results['memory']['tokens_per_batch']} tokens: "
          f"{results['memory']['online_kd_over_student_alone']:.2f}, chunked "
          f"{results['memory']['online_kd_chunked_over_student_alone']:.2f} (goal <= 3)")
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
    print(f"Wrote {args.output} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
