"""Distilling a KerasHub causal language model, end to end, on local text.

A GPT-2 teacher (KerasHub, built from sizes: nothing downloads) is trained on
the byte-level text of a local corpus (by default the license texts under
/usr/share/common-licenses, read with KerasHub's `ByteTokenizer`; each file
split by position 80/10/10, no window crosses splits). Then a student of
about a quarter of its weights is trained, from the same initial weights and
for the same steps, for each seed:

- alone, on the next byte;
- with supervised token-level KD: forward KL, reverse KL, skew KL (DistiLLM);
- on-policy (GKD, λ = 0.5, forward KL): half the batches are continued by the
  student itself and scored by the teacher;
- from a top-k teacher cache (k = 32): the teacher runs once, before
  training, and only its 32 likeliest bytes per position are stored.

Reported per variant, as mean ± std over the seeds with the raw per-seed
numbers: held-out (test) perplexity per byte; the teacher's NLL of the
student's own continuations of test prompts (the exposure-bias measure, on
which on-policy training should win); training tokens per second, and its
ratio to the student alone's.

Usage:

    python examples/lm_distillation.py [--text PATH] [--seeds 0 1 2] [--fast]

The last line printed is `RESULT {...}`, a JSON object with every number.
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_distill import Distiller  # noqa: E402
from tf_distill import OnPolicyDistiller  # noqa: E402
from tf_distill.backend import keras  # noqa: E402
from tf_distill.cache import build_topk_cache  # noqa: E402
from tf_distill.comparison import mean_std  # noqa: E402
from tf_distill.data import load_text  # noqa: E402
from tf_distill.language import build_causal_lm  # noqa: E402
from tf_distill.language import perplexity  # noqa: E402
from tf_distill.language import teacher_nll_of_samples  # noqa: E402
from tf_distill.losses import TokenDistillation  # noqa: E402
from tf_distill.losses import TopKDistillation  # noqa: E402

DEFAULT_TEXT = "/usr/share/common-licenses"
TOKENIZER = "keras_hub.ByteTokenizer"

# Sizes: the full run takes minutes per model on 2 cores; --fast seconds.
FULL = {
    "sequence_length": 64, "batch_size": 32, "max_bytes_per_file": None,
    # About 170k and 43k weights: the student is a quarter of the teacher.
    "teacher": {"num_layers": 3, "hidden_dim": 64, "num_heads": 2},
    "student": {"num_layers": 1, "hidden_dim": 48, "num_heads": 2},
    "teacher_steps": 1000, "student_steps": 250, "learning_rate": 3e-3,
    "sample_windows": 128, "top_k": 32,
}
FAST = {
    "sequence_length": 16, "batch_size": 8, "max_bytes_per_file": 2000,
    "teacher": {"num_layers": 1, "hidden_dim": 32, "num_heads": 2},
    "student": {"num_layers": 1, "hidden_dim": 16, "num_heads": 2},
    "teacher_steps": 4, "student_steps": 2, "learning_rate": 3e-3,
    "sample_windows": 8, "top_k": 32,
}
VARIANTS = ("alone", "forward_kl", "reverse_kl", "skew_kl", "on_policy", "topk_cache")
# Not in the default run: on-policy after a supervised first half (GKD
# starts from a supervised student).
EXTRA_VARIANTS = ("on_policy_warm",)


def make_model(sizes, settings, name, seed):
    keras.utils.set_random_seed(seed)
    return build_causal_lm("gpt2", 256, max_sequence_length=settings["sequence_length"],
                           name=name, **sizes)


def compile_and_fit(model, corpus, settings, steps, seed, train=None):
    """Trains `model` (a CausalLM or a distiller) for `steps`; returns tokens/s."""
    model.compile(
        optimizer=keras.optimizers.Adam(settings["learning_rate"], clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    if train is None:
        train = corpus.dataset("train", settings["batch_size"], seed=seed).repeat()
    # One step first, untimed: it traces the graph, which costs more than steps.
    model.fit(train, steps_per_epoch=1, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(train, steps_per_epoch=steps - 1, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    return (steps - 1) * settings["batch_size"] * settings["sequence_length"] / seconds


def distiller_for(variant, teacher, student, seed, settings):
    losses = {"forward_kl": TokenDistillation("forward_kl"),
              "reverse_kl": TokenDistillation("reverse_kl"),
              "skew_kl": TokenDistillation("skew_kl", alpha=0.1),
              "on_policy": TokenDistillation("forward_kl"),
              "on_policy_warm": TokenDistillation("forward_kl"),
              "topk_cache": TopKDistillation(1.0)}
    if variant in ("on_policy", "on_policy_warm"):
        warmup = settings["student_steps"] // 2 if variant == "on_policy_warm" else 0
        return OnPolicyDistiller(teacher, student, losses[variant], on_policy_fraction=0.5,
                                 prompt_length=settings["sequence_length"] // 2, seed=seed,
                                 student_loss_weight=0.5, warmup_steps=warmup)
    return Distiller(teacher, student, losses[variant], student_loss_weight=0.5)


def train_variant(variant, teacher, corpus, settings, seed, cache):
    """A student of `variant`, from the seed's initial weights; returns `(student, tokens/s)`."""
    student = make_model(settings["student"], settings, f"student_{variant}", seed)
    keras.utils.set_random_seed(seed)
    if variant == "alone":
        return student, compile_and_fit(student, corpus, settings, settings["student_steps"],
                                        seed)
    train = None
    if variant == "topk_cache":
        train = cache.dataset(settings["batch_size"], shuffle=True, seed=seed, repeat=True)
    distiller = distiller_for(variant, teacher, student, seed, settings)
    return student, compile_and_fit(distiller, corpus, settings, settings["student_steps"],
                                    seed, train=train)


def score(student, teacher, corpus, settings, seed):
    batch = settings["batch_size"]
    return {
        "test_perplexity": perplexity(student, corpus.dataset("test", batch)),
        "sample_nll": teacher_nll_of_samples(
            teacher, student, corpus.windows["test"][0][: settings["sample_windows"]],
            settings["sequence_length"] // 2, seed=seed, batch_size=batch),
    }


def summarize(per_seed):
    """`{metric: {"mean", "std", "per_seed"}}` over a variant's seeds."""
    summary = {}
    for metric in per_seed[0]:
        values = [float(row[metric]) for row in per_seed]
        mean, std = mean_std(values)
        summary[metric] = {"mean": mean, "std": std, "per_seed": values}
    return summary


def run(text=DEFAULT_TEXT, seeds=(0, 1, 2), fast=False, variants=VARIANTS, log=print):
    """Trains the teacher and every variant for every seed; returns the results dict."""
    settings = FAST if fast else FULL
    start = time.perf_counter()
    corpus = load_text(text, sequence_length=settings["sequence_length"],
                       max_bytes_per_file=settings["max_bytes_per_file"])
    log(f"Text {corpus.name}: {corpus.tokens('train'):,} train, "
        f"{corpus.tokens('test'):,} test bytes")
    teacher = make_model(settings["teacher"], settings, "teacher", 1234)
    teacher_speed = compile_and_fit(teacher, corpus, settings, settings["teacher_steps"], 1234)
    teacher_perplexity = perplexity(teacher, corpus.dataset("test", settings["batch_size"]))
    log(f"Teacher: {teacher.count_params():,} parameters, test perplexity "
        f"{teacher_perplexity:.3f}")
    cache, cache_seconds = None, 0.0
    with tempfile.TemporaryDirectory() as directory:
        if "topk_cache" in variants:
            cache_start = time.perf_counter()
            cache = build_topk_cache(
                teacher, (corpus.inputs("train"), *corpus.windows["train"][1:]), directory,
                k=settings["top_k"], tokenizer=TOKENIZER)
            cache_seconds = time.perf_counter() - cache_start
        rows = {variant: [] for variant in variants}
        student_parameters = None
        for seed in seeds:
            for variant in variants:
                student, speed = train_variant(variant, teacher, corpus, settings, seed, cache)
                student_parameters = int(student.count_params())
                row = {**score(student, teacher, corpus, settings, seed),
                       "tokens_per_second": speed}
                rows[variant].append(row)
                log(f"seed {seed} {variant:>11}: perplexity {row['test_perplexity']:.3f}, "
                    f"teacher NLL of own samples {row['sample_nll']:.4f}, "
                    f"{speed:,.0f} tokens/s")
    results = {
        "text": corpus.name, "fingerprint": corpus.fingerprint, "fast": fast,
        "seeds": list(seeds), "settings": {k: v for k, v in settings.items()},
        "teacher": {"parameters": int(teacher.count_params()),
                    "test_perplexity": teacher_perplexity, "tokens_per_second": teacher_speed},
        "student_parameters": student_parameters,
        "size_ratio": student_parameters / teacher.count_params(),
        "variants": {variant: summarize(per_seed) for variant, per_seed in rows.items()},
    }
    if cache is not None:
        results["topk_cache"] = {
            "k": settings["top_k"], "bytes_per_token": cache.bytes_per_token,
            "dense_bytes_per_token": 4 * corpus.vocabulary_size,
            "build_seconds": cache_seconds,
        }
    alone = results["variants"].get("alone")
    if alone:
        for summary in results["variants"].values():
            summary["speed_vs_alone"] = (summary["tokens_per_second"]["mean"]
                                         / alone["tokens_per_second"]["mean"])
    results["seconds"] = time.perf_counter() - start
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", default=DEFAULT_TEXT,
                        help="a text file, a folder, a glob pattern or 'python-stdlib'")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="paired seeds (default 0 1 2; --fast: 0)")
    parser.add_argument("--fast", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        choices=list(VARIANTS + EXTRA_VARIANTS),
                        help="the variants to train (default: all but on_policy_warm)")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.fast else [0, 1, 2])
    results = run(args.text, seeds, fast=args.fast, variants=tuple(args.variants))
    print()
    print(f"{'variant':>11} | test perplexity | teacher NLL of own samples | speed vs alone")
    for variant, summary in results["variants"].items():
        perplexity_ = summary["test_perplexity"]
        nll = summary["sample_nll"]
        print(f"{variant:>11} | {perplexity_['mean']:.3f} ± {perplexity_['std']:.3f} | "
              f"{nll['mean']:.4f} ± {nll['std']:.4f} | {summary.get('speed_vs_alone', 1):.2f}×")
    print("RESULT " + json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
