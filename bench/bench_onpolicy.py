"""Benchmark: on-policy distillation (GKD) with cached sampling, speed and quality.

Two parts, side by side in one run (issue 20, items 1 and 5):

1. **Speed.** On the GPT-2 pair of `examples/lm_distillation.py` (teacher 3
   layers × 64, student 1 layer × 48, V = 256, built from configs; random
   token ids), batch 32 × 64 tokens, prompt 32: the compiled training step
   of off-policy KD (λ = 0), of on-policy KD (λ = 1) sampling with the
   student's KV cache (KerasHub `generate_step`, the default) and with the
   old full forward pass per token (`use_cache=False`), and the student's
   sampling alone both ways. Goal: λ = 1 (cached) ≤ 2× λ = 0. Then the
   sampling alone at L = 256 (prompt 128), cached against the old loop.
   Goal: ≥ 8× faster. Medians of `--repeats` interleaved repeats after a
   warm-up (the trace).
2. **Quality** (GKD starts from a supervised student): a teacher trained on
   the byte text of /usr/share/common-licenses (as `examples/lm_distillation.py`
   does, fewer steps); for each seed a student first trained alone on the
   data (250 steps), then 150 more steps from those weights, each variant
   on the same batches: alone (cross-entropy), off-policy forward KL,
   on-policy GKD (λ = 0.5) with forward KL and with JSD(β = 0.5), and
   on-policy alone (λ = 1) with reverse KL (a review's setting), all with
   α = 0 (the divergence alone, as GKD) and the token-level mean.
   Reported: held-out perplexity and the teacher's NLL of the student's own
   continuations of test prompts, mean ± std and per seed, and the paired
   comparisons of `tf_distill.comparison` (3 seeds: "better" needs every
   seed and a paired t beyond 4.30).

Usage (from the repository root; about 14 minutes on 2 shared CPU cores):

    python bench/bench_onpolicy.py [--write] [--seeds 0 1 2] [--quick]

`--write` puts the Markdown section into docs/BENCHMARKS.md; `--quick` is a
smoke test of a few minutes. Not a timed test.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import numpy as np  # noqa: E402

from tf_distill import Distiller  # noqa: E402
from tf_distill import OnPolicyDistiller  # noqa: E402
from tf_distill.backend import keras  # noqa: E402
from tf_distill.backend import tf  # noqa: E402
from tf_distill.comparison import mean_std  # noqa: E402
from tf_distill.comparison import paired  # noqa: E402
from tf_distill.comparison import verdict  # noqa: E402
from tf_distill.data import load_text  # noqa: E402
from tf_distill.language import build_causal_lm  # noqa: E402
from tf_distill.language import next_token_batch  # noqa: E402
from tf_distill.language import perplexity  # noqa: E402
from tf_distill.language import teacher_nll_of_samples  # noqa: E402
from tf_distill.language.sampling import sample_continuations  # noqa: E402
from tf_distill.losses import TokenDistillation  # noqa: E402

TEXT = "/usr/share/common-licenses"
TEACHER = {"num_layers": 3, "hidden_dim": 64, "num_heads": 2}
STUDENT = {"num_layers": 1, "hidden_dim": 48, "num_heads": 2}
VOCABULARY = 256
VARIANTS = ("alone", "forward_kl", "gkd_forward_kl", "gkd_jsd", "on_policy_reverse_kl")
ON_POLICY = VARIANTS[2:]
LABELS = {
    "alone": "alone (cross-entropy)",
    "forward_kl": "off-policy forward KL",
    "gkd_forward_kl": "on-policy GKD, λ = 0.5, forward KL",
    "gkd_jsd": "on-policy GKD, λ = 0.5, JSD(β = 0.5)",
    "on_policy_reverse_kl": "on-policy, λ = 1, reverse KL",
}
# Each on-policy variant: (λ, divergence, β of the JSD).
ON_POLICY_SETTINGS = {
    "gkd_forward_kl": (0.5, "forward_kl", 0.5),
    "gkd_jsd": (0.5, "generalized_jsd", 0.5),
    "on_policy_reverse_kl": (1.0, "reverse_kl", 0.5),
}


def model(sizes, length, name, seed):
    keras.utils.set_random_seed(seed)
    return build_causal_lm("gpt2", VOCABULARY, max_sequence_length=length, name=name, **sizes)


def compiled(trained, learning_rate=3e-3):
    trained.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=1.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=False)
    return trained


# ----------------------------------------------------------------------
# 1. Speed.


def speed(batch, length, long_length, repeats, log):
    prompt = length // 2
    teacher = model(TEACHER, length, "teacher", 0)
    ids = np.random.default_rng(0).integers(1, VOCABULARY, (batch, length + 1)).astype("int32")
    x, y, weight = next_token_batch(ids)

    def distiller(fraction, use_cache=None):
        return compiled(OnPolicyDistiller(
            teacher, model(STUDENT, length, "student", 1), "kd", on_policy_fraction=fraction,
            prompt_length=prompt, seed=0, use_cache=use_cache))

    steps = {"off_policy_step": distiller(0.0), "on_policy_step_cached": distiller(1.0),
             "on_policy_step_full_forward": distiller(1.0, use_cache=False)}
    sampler = model(STUDENT, length, "sampler", 1)

    def sampling(student, use_cache, prompt_length):
        return tf.function(lambda token_ids: sample_continuations(
            student, token_ids, prompt_length, tf.constant([0, 1], tf.int64),
            use_cache=use_cache))

    cached, full = sampling(sampler, True, prompt), sampling(sampler, False, prompt)
    functions = {name: (lambda d=d: d.train_on_batch(x, y, sample_weight=weight))
                 for name, d in steps.items()}
    functions["sampling_cached"] = lambda: cached(x["token_ids"]).numpy()
    functions["sampling_full_forward"] = lambda: full(x["token_ids"]).numpy()
    log(f"speed: batch {batch} × {length}, prompt {prompt}, {repeats} repeats")
    samples = common.interleave({k: common.timed(f) for k, f in functions.items()}, repeats,
                                log=None)
    seconds = {name: float(np.median(values)) for name, values in samples.items()}

    long_sampler = model(STUDENT, long_length, "long_sampler", 1)
    long_ids = np.random.default_rng(1).integers(
        1, VOCABULARY, (batch, long_length)).astype("int32")
    long_cached = sampling(long_sampler, True, long_length // 2)
    long_full = sampling(long_sampler, False, long_length // 2)
    same_tokens = bool(np.array_equal(long_cached(long_ids), long_full(long_ids)))
    log(f"speed: sampling at L = {long_length}, prompt {long_length // 2}")
    long_samples = common.interleave(
        {"long_sampling_cached": common.timed(lambda: long_cached(long_ids).numpy()),
         "long_sampling_full_forward": common.timed(lambda: long_full(long_ids).numpy())},
        max(2, repeats // 3), warmup=0)
    seconds.update({name: float(np.median(values)) for name, values in long_samples.items()})
    return {
        "seconds": seconds,
        "raw_seconds": {**samples, **long_samples},
        "batch": batch, "length": length, "prompt": prompt, "long_length": long_length,
        "long_cached_equals_full_forward": same_tokens,
        "on_policy_over_off_policy": seconds["on_policy_step_cached"]
        / seconds["off_policy_step"],
        "old_on_policy_over_off_policy": seconds["on_policy_step_full_forward"]
        / seconds["off_policy_step"],
        "sampling_share_of_cached_step": seconds["sampling_cached"]
        / seconds["on_policy_step_cached"],
        "cached_sampling_speedup": seconds["sampling_full_forward"] / seconds["sampling_cached"],
        "long_cached_sampling_speedup": seconds["long_sampling_full_forward"]
        / seconds["long_sampling_cached"],
    }


# ----------------------------------------------------------------------
# 2. Quality.


def fit(trained, data, steps):
    trained.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)


def variant_model(variant, teacher, student, settings, seed):
    if variant == "alone":
        return student
    if variant == "forward_kl":
        return Distiller(teacher, student, TokenDistillation("forward_kl"),
                         student_loss_weight=0.0)
    fraction, divergence, beta = ON_POLICY_SETTINGS[variant]
    return OnPolicyDistiller(
        teacher, student, TokenDistillation(divergence, beta=beta), on_policy_fraction=fraction,
        prompt_length=settings["length"] // 2, sampling_temperature=1.0, seed=seed,
        student_loss_weight=0.0, reduction="token")


def quality(settings, seeds, log):
    length, batch = settings["length"], settings["batch"]
    corpus = load_text(TEXT, sequence_length=length,
                       max_bytes_per_file=settings["max_bytes_per_file"])
    teacher = compiled(model(TEACHER, length, "teacher", 1234))
    fit(teacher, corpus.dataset("train", batch, seed=1234).repeat(), settings["teacher_steps"])
    teacher_perplexity = perplexity(teacher, corpus.dataset("test", batch))
    log(f"quality: teacher test perplexity {teacher_perplexity:.3f}")
    prompts = corpus.windows["test"][0][: settings["sample_windows"]]

    def score(student, seed):
        return {"test_perplexity": perplexity(student, corpus.dataset("test", batch)),
                "sample_nll": teacher_nll_of_samples(teacher, student, prompts, length // 2,
                                                     seed=seed, batch_size=batch)}

    rows = {variant: [] for variant in ("warm_start", *VARIANTS)}
    for seed in seeds:
        warm = compiled(model(STUDENT, length, "warm", seed))
        fit(warm, corpus.dataset("train", batch, seed=seed).repeat(), settings["warm_steps"])
        rows["warm_start"].append(score(warm, seed))
        for variant in VARIANTS:
            start = time.perf_counter()
            student = model(STUDENT, length, f"student_{variant}", seed)
            student.set_weights(warm.get_weights())
            keras.utils.set_random_seed(seed)
            trained = compiled(variant_model(variant, teacher, student, settings, seed))
            # The same batches for every variant of a seed: paired.
            fit(trained, corpus.dataset("train", batch, seed=seed + 1000).repeat(),
                settings["steps"])
            row = {**score(student, seed), "seconds": time.perf_counter() - start}
            rows[variant].append(row)
            log(f"quality: seed {seed} {variant:>15}: perplexity {row['test_perplexity']:.3f}, "
                f"teacher NLL of own samples {row['sample_nll']:.4f} ({row['seconds']:.0f} s)")
    summary = {}
    for variant, per_seed in rows.items():
        summary[variant] = {}
        for metric in ("test_perplexity", "sample_nll"):
            values = [row[metric] for row in per_seed]
            mean, std = mean_std(values)
            summary[variant][metric] = {"mean": mean, "std": std, "per_seed": values}
    comparisons = {}

    def compare(name, baseline, method, metric):
        result = paired(summary[baseline][metric]["per_seed"], summary[method][metric]["per_seed"])
        result["verdict"] = verdict(result)
        comparisons[name] = result

    for variant in VARIANTS[1:]:
        compare(f"{variant}_vs_alone_perplexity", "alone", variant, "test_perplexity")
    for variant in ON_POLICY:
        compare(f"{variant}_vs_forward_kl_sample_nll", "forward_kl", variant, "sample_nll")
        compare(f"{variant}_vs_forward_kl_perplexity", "forward_kl", variant, "test_perplexity")
    return {"teacher_test_perplexity": teacher_perplexity, "settings": settings,
            "seeds": list(seeds), "variants": summary, "comparisons": comparisons,
            "text": corpus.name, "train_tokens": corpus.tokens("train"),
            "test_tokens": corpus.tokens("test")}


# ----------------------------------------------------------------------
# Report.


def _cell(summary, metric, digits):
    values = summary[metric]
    per_seed = " / ".join(f"{value:.{digits}f}" for value in values["per_seed"])
    return f"{values['mean']:.{digits}f} ± {values['std']:.{digits}f}", per_seed


def _comparison(result, digits=3):
    return (f"{result['mean']:+.{digits}f} ± {result['std']:.{digits}f} "
            f"(better on {result['improved']}/{result['n']}): **{result['verdict']}**")


def markdown(results, command, conditions, load_after):
    fast, slow = results["speed"], results["quality"]
    s = fast["seconds"]
    lines = [
        "## On-policy distillation: cached sampling and GKD (issue 20)",
        "",
        f"Command: `{command}` ({results['seconds'] / 60:.1f} min).",
        "",
        f"**Speed** (GPT-2 teacher 3 × 64, student 1 × 48, V = 256, batch {fast['batch']} × "
        f"{fast['length']} tokens, prompt {fast['prompt']}; medians of interleaved repeats "
        "after a warm-up):",
        "",
        "| measure | ms | ratio | goal |",
        "|---|---|---|---|",
        f"| off-policy step (λ = 0) | {1000 * s['off_policy_step']:.1f} | 1 | |",
        f"| on-policy step (λ = 1), cached sampling | {1000 * s['on_policy_step_cached']:.1f} | "
        f"{fast['on_policy_over_off_policy']:.2f} × λ = 0 | ≤ 2: "
        f"{'met' if fast['on_policy_over_off_policy'] <= 2 else '**missed**'} |",
        f"| on-policy step (λ = 1), old full-forward sampling | "
        f"{1000 * s['on_policy_step_full_forward']:.1f} | "
        f"{fast['old_on_policy_over_off_policy']:.2f} × λ = 0 | |",
        f"| sampling alone, cached | {1000 * s['sampling_cached']:.1f} | "
        f"{fast['sampling_share_of_cached_step']:.0%} of the cached step | |",
        f"| sampling alone, full forward | {1000 * s['sampling_full_forward']:.1f} | "
        f"{fast['cached_sampling_speedup']:.1f} × cached | |",
        f"| sampling at L = {fast['long_length']} (prompt {fast['long_length'] // 2}), cached | "
        f"{1000 * s['long_sampling_cached']:.0f} | | |",
        f"| sampling at L = {fast['long_length']}, full forward (old) | "
        f"{1000 * s['long_sampling_full_forward']:.0f} | "
        f"{fast['long_cached_sampling_speedup']:.1f} × cached | ≥ 8: "
        f"{'met' if fast['long_cached_sampling_speedup'] >= 8 else '**missed**'} |",
        "",
        f"The cached and the old sampler drew the same tokens at L = {fast['long_length']} "
        f"(same seed): {fast['long_cached_equals_full_forward']}.",
        "",
    ]
    settings = slow["settings"]
    lines += [
        f"**Quality** (seeds {', '.join(map(str, slow['seeds']))}; text {slow['text']}, "
        f"{slow['train_tokens']:,} train and {slow['test_tokens']:,} test bytes, windows of "
        f"{settings['length']}, batch {settings['batch']}). Teacher: {settings['teacher_steps']} "
        f"steps, test perplexity {slow['teacher_test_perplexity']:.2f}. Each seed's student is "
        f"first trained alone for {settings['warm_steps']} steps (the warm start); every "
        f"variant then trains {settings['steps']} more steps from those weights on the same "
        "batches, α = 0 (the divergence alone), token-level mean. Teacher NLL of own samples: "
        f"the teacher's mean NLL (nats per byte) of the student's continuations of "
        f"{settings['sample_windows']} test prompts of {settings['length'] // 2} bytes.",
        "",
        "| student | test perplexity | per seed | teacher NLL of own samples | per seed |",
        "|---|---|---|---|---|",
    ]
    names = {"warm_start": "warm start (before the extra steps)", **LABELS}
    for variant, summary in slow["variants"].items():
        perplexity_, perplexity_seeds = _cell(summary, "test_perplexity", 3)
        nll, nll_seeds = _cell(summary, "sample_nll", 4)
        lines.append(f"| {names[variant]} | {perplexity_} | {perplexity_seeds} | {nll} | "
                     f"{nll_seeds} |")
    c = slow["comparisons"]
    lines += [
        "",
        "Paired differences (baseline − variant, lower is better, so + favours the variant; "
        "verdict by `tf_distill.comparison.verdict`):",
        "",
        "| comparison | paired Δ, mean ± std |",
        "|---|---|",
    ]
    for variant in VARIANTS[1:]:
        lines.append(f"| perplexity, alone − {LABELS[variant]} | "
                     f"{_comparison(c[f'{variant}_vs_alone_perplexity'])} |")
    for variant in ON_POLICY:
        lines.append(f"| teacher NLL of own samples, forward KL − {LABELS[variant]} | "
                     f"{_comparison(c[f'{variant}_vs_forward_kl_sample_nll'], 4)} |")
        lines.append(f"| perplexity, forward KL − {LABELS[variant]} | "
                     f"{_comparison(c[f'{variant}_vs_forward_kl_perplexity'])} |")
    lines += ["", "Goals of issue 20, item 5, as this run measured them:", ""]
    for variant in ON_POLICY:
        nll = c[f"{variant}_vs_forward_kl_sample_nll"]
        worse = c[f"{variant}_vs_forward_kl_perplexity"]["verdict"] == "worse"
        lines.append(
            f"- {LABELS[variant]}: teacher NLL of own samples below off-policy forward KL's "
            f"beyond the noise: {'met' if nll['verdict'] == 'better' else '**not met**'} "
            f"({nll['mean']:+.4f} ± {nll['std']:.4f}); held-out perplexity not worse beyond "
            f"the noise: {'**not met**' if worse else 'met'}."
        )
    alone = [variant for variant in VARIANTS[1:]
             if c[f"{variant}_vs_alone_perplexity"]["mean"] < 0]
    lines.append(
        "- Every distilled variant's mean perplexity ≤ the student alone's: "
        + ("met." if not alone else
           "**not met** (" + ", ".join(LABELS[variant] for variant in alone) + ").")
    )
    lines += ["", common.conditions_markdown(conditions, load_after)]
    return "\n".join(lines)


FULL = {"length": 64, "batch": 32, "max_bytes_per_file": None, "teacher_steps": 800,
        "warm_steps": 250, "steps": 150, "sample_windows": 128}
QUICK = {"length": 16, "batch": 8, "max_bytes_per_file": 3000, "teacher_steps": 5,
         "warm_steps": 3, "steps": 3, "sample_windows": 8}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a smoke test of a few minutes")
    parser.add_argument("--skip-quality", action="store_true", help="the speed part alone")
    parser.add_argument("--write", action="store_true", help="write docs/BENCHMARKS.md")
    parser.add_argument("--output", default=None, help="a JSON file for the results")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    conditions = common.machine_conditions()
    if args.quick:
        results = {"speed": speed(4, 16, 32, 2, common.log)}
        settings, seeds = QUICK, args.seeds[:1]
    else:
        results = {"speed": speed(32, 64, 256, args.repeats, common.log)}
        settings, seeds = FULL, args.seeds
    print(json.dumps({key: value for key, value in results["speed"].items()
                      if key != "raw_seconds"}, indent=1))
    if args.skip_quality:
        return results
    results["quality"] = quality(settings, seeds, common.log)
    results["seconds"] = time.perf_counter() - start
    results.update(conditions=conditions, load_after=common.current_load())
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1, default=float)
    text = markdown(results, common.command_line(argv), conditions, results["load_after"])
    common.publish("onpolicy", text, write=args.write and not args.quick)
    return results


if __name__ == "__main__":
    main()
