"""Benchmark: the cost of on-policy distillation (GKD) and its share of sampling.

On a tiny GPT-2 pair (teacher 2 layers × 32, student 1 layer × 16, built
from configs; random token ids), side by side in one run:

1. the compiled training step of supervised KD (λ = 0, the `Distiller`);
2. the compiled training step of on-policy KD (λ = 1: every batch's
   continuation sampled from the student, inside the step), and of the
   mixture λ = 0.5 (a `tf.cond` per step: the median is a typical step);
3. the student's compiled sampling of the continuation alone
   (`tf_distill.language.sample_continuations`, one `tf.while_loop`);

and reports the share of the λ = 1 step spent sampling, `3 / 2`. Medians of
`--steps` rounds after a warm-up step (the trace), the four timed in
turn in each round. Not a timed test.

Usage (from the repository root; about a minute on 2 shared CPU cores):

    python bench/bench_onpolicy.py [--steps 20] [--batch 8] [--length 16]
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import numpy as np  # noqa: E402

from tf_distill import OnPolicyDistiller  # noqa: E402
from tf_distill.backend import keras  # noqa: E402
from tf_distill.backend import tf  # noqa: E402
from tf_distill.language import build_causal_lm  # noqa: E402
from tf_distill.language import next_token_batch  # noqa: E402
from tf_distill.language import sample_continuations  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=4)
    parser.add_argument("--vocabulary", type=int, default=64)
    parser.add_argument("--output", default=None, help="a JSON file for the results")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    sizes = {"vocabulary_size": args.vocabulary, "num_heads": 2,
             "max_sequence_length": args.length}
    teacher = build_causal_lm("gpt2", num_layers=2, hidden_dim=32, name="teacher", **sizes)
    ids = np.random.default_rng(0).integers(1, args.vocabulary, (args.batch, args.length + 1))
    x, y, weight = next_token_batch(ids.astype("int32"))

    def build(fraction):
        keras.utils.set_random_seed(1)
        student = build_causal_lm("gpt2", num_layers=1, hidden_dim=16, name="student", **sizes)
        distiller = OnPolicyDistiller(
            teacher, student, "kd", on_policy_fraction=fraction,
            prompt_length=args.prompt, top_k=20, seed=0,
        )
        distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                          jit_compile=False)
        return distiller

    functions = {}
    for fraction in (0.0, 0.5, 1.0):
        distiller = build(fraction)
        functions[f"step_lambda_{fraction:g}_ms"] = (
            lambda d=distiller: d.train_on_batch(x, y, sample_weight=weight)
        )
    sample = tf.function(lambda ids, model=distiller.student: sample_continuations(
        model, ids, args.prompt, [0, 0], top_k=20, padding_mask=x["padding_mask"],
    ))
    functions["sampling_ms"] = lambda: sample(x["token_ids"]).numpy()
    results = {
        name: 1000 * seconds
        for name, seconds in common.median_times(functions, args.steps).items()
    }
    results["sampling_share_of_lambda_1_step"] = (
        results["sampling_ms"] / results["step_lambda_1_ms"]
    )
    # Another estimate, inside the step: what λ = 1 adds to λ = 0.
    results["added_share_of_lambda_1_step"] = (
        1.0 - results["step_lambda_0_ms"] / results["step_lambda_1_ms"]
    )
    results["lambda_1_over_lambda_0"] = (
        results["step_lambda_1_ms"] / results["step_lambda_0_ms"]
    )
    print(f"On-policy distillation, tiny GPT-2, batch {args.batch} × {args.length} tokens, "
          f"prompt {args.prompt}, median of {args.steps} steps:\n")
    print("| measure | value |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.3g} |")
    if args.output:
        with open(args.output, "w") as file:
            json.dump({**results, "arguments": vars(args)}, file, indent=2)
    return results


if __name__ == "__main__":
    main()
