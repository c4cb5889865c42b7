"""Peak memory of online KD at a vocabulary of 256k (issue 20, item 3).

One run measures, side by side, the peak memory of one training step of:

- `student_alone`: the student `CausalLM` trained on its labels
  (`model.compile(loss=SparseCategoricalCrossentropy(from_logits=True))`),
  which forms its `[batch, time, vocab]` logits once;
- `chunked_head_kd`: online token-level KD (forward KL, α = 0.5) with
  `ChunkedHeadDistillation(chunk_size=...)`: the teacher's and the student's
  heads applied `chunk_size` positions at a time, the student's
  cross-entropy too;
- `dense_kd` (with `--dense`): the same with `TokenDistillation` on full
  logits. At V = 256,000 and 4,096 tokens it needs more than the 23 GB of
  the machine the figures were taken on, so it is measured only on request.

**Method.** On CPU TensorFlow keeps no allocator statistics
(`tf.config.experimental.get_memory_info("CPU:0")` raises), so each kind of
step runs in its own process, and its figure is the growth of the resident
set's high-water mark (`ru_maxrss`) over the resident set once the models
are built and their variables created (a first step on a 1-token-wide batch
is not run: building alone). Two steps run, the first of which traces.

The models are tiny (hidden 64; student 1 layer, teacher 2), so the
vocabulary dominates: GPT-2 backbones from `build_causal_lm`.

Usage:

    python bench/bench_large_vocabulary.py [--vocabulary 256000] [--windows 16]
        [--length 256] [--chunk-size 256] [--dense] [--output bench_large_vocabulary.json]

`--quick` runs V = 8,192 and 512 tokens (seconds) to check the script.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

PROBES = ("student_alone", "chunked_head_kd", "dense_kd")


def resident_kb():
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("No VmRSS in /proc/self/status")


def memory_probe(kind, vocabulary, windows, length, chunk_size):
    """Two training steps of `kind` in this process; prints the figures as JSON."""
    from tf_distill import Distiller
    from tf_distill.backend import keras
    from tf_distill.language import build_causal_lm
    from tf_distill.losses import ChunkedHeadDistillation
    from tf_distill.losses import TokenDistillation

    def model(layers, name):
        keras.utils.set_random_seed(0 if name == "student" else 1)
        return build_causal_lm(
            "gpt2",
            vocabulary,
            num_layers=layers,
            hidden_dim=64,
            num_heads=2,
            max_sequence_length=length,
            name=name,
        )

    student = model(1, "student")
    trained = student
    if kind != "student_alone":
        loss = (
            ChunkedHeadDistillation("forward_kl", chunk_size=chunk_size)
            if kind == "chunked_head_kd"
            else TokenDistillation("forward_kl")
        )
        trained = Distiller(model(2, "teacher"), student, loss, student_loss_weight=0.5)
    trained.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    ids = np.random.default_rng(0).integers(1, vocabulary, (windows, length)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones(ids.shape, bool)}
    labels = np.roll(ids, -1, axis=1)
    before = resident_kb()
    seconds, losses = [], []
    for _ in range(2):
        start = time.perf_counter()
        logs = trained.train_on_batch(x, labels, np.ones(ids.shape, "float32"), return_dict=True)
        seconds.append(time.perf_counter() - start)
        losses.append(float(logs["loss"]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        "MEMORY "
        + json.dumps(
            {
                "kind": kind,
                "before_kb": before,
                "peak_kb": peak,
                "step_kb": peak - before,
                "step_seconds": seconds,
                "losses": losses,
            }
        )
    )


def run_probe(kind, args):
    process = subprocess.run(
        [
            sys.executable,
            __file__,
            "--memory-probe",
            kind,
            "--vocabulary",
            str(args.vocabulary),
            "--windows",
            str(args.windows),
            "--length",
            str(args.length),
            "--chunk-size",
            str(args.chunk_size),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [row for row in process.stdout.splitlines() if row.startswith("MEMORY ")]
    if process.returncode != 0 or not lines:
        return {"kind": kind, "failed": process.returncode, "stderr_tail": process.stderr[-2000:]}
    return json.loads(lines[-1][len("MEMORY ") :])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocabulary", type=int, default=256_000)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--dense", action="store_true", help="also dense TokenDistillation")
    parser.add_argument("--quick", action="store_true", help="V = 8,192, 512 tokens")
    parser.add_argument("--output", default="bench_large_vocabulary.json")
    parser.add_argument("--memory-probe", choices=PROBES)
    args = parser.parse_args(argv)
    if args.quick:
        args.vocabulary, args.windows, args.length = 8192, 4, 128
    if args.memory_probe:
        memory_probe(args.memory_probe, args.vocabulary, args.windows, args.length, args.chunk_size)
        return 0
    kinds = [kind for kind in PROBES if kind != "dense_kd" or args.dense]
    start = time.perf_counter()
    probes = {kind: run_probe(kind, args) for kind in kinds}
    alone = probes["student_alone"].get("step_kb")
    results = {
        "method": "RSS high-water mark (ru_maxrss) minus RSS after building the models, "
        "one process per kind; TensorFlow has no CPU allocator statistics",
        "vocabulary_size": args.vocabulary,
        "tokens_per_batch": args.windows * args.length,
        "windows": args.windows,
        "length": args.length,
        "chunk_size": args.chunk_size,
        "probes": probes,
        "ratios_to_student_alone": {
            kind: probe["step_kb"] / alone
            for kind, probe in probes.items()
            if alone and "step_kb" in probe
        },
        "seconds": time.perf_counter() - start,
    }
    for kind, probe in probes.items():
        if "step_kb" in probe:
            print(
                f"{kind}: step peak {probe['step_kb'] / 1e6:.2f} GB "
                f"({results['ratios_to_student_alone'].get(kind, float('nan')):.2f}x student "
                f"alone), steps {', '.join(f'{s:.1f}' for s in probe['step_seconds'])} s"
            )
        else:
            print(f"{kind}: failed (exit {probe['failed']}): {probe['stderr_tail'][-300:]}")
    print(
        f"V = {args.vocabulary:,}, {args.windows * args.length:,} tokens per batch; goal: "
        "chunked_head_kd <= 2x student_alone"
    )
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
    print(f"Wrote {args.output} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
