"""Benchmark: the top-k teacher cache for large vocabularies.

Side by side in one run:

1. bytes per token of the cache on disk for k ∈ {8, 32, 128} (target:
   ≤ k·4 + 8 with uint16 ids up to V = 65,536, k·6 + 8 above, and ≤ 1/100 of the 4·V bytes of dense float32 logits at V ≥ 32k
   for k ≤ 32), measured on the files `build_topk_cache` writes;
2. the gap between the top-k loss and full-vocabulary KD (forward KL) on
   peaked, Zipf-like teacher distributions over V tokens and a student that
   partly agrees with them (as after some training), for the same k;
3. the epoch time of top-k-cached KD against the student trained alone, and
   of online dense KD (the teacher run every step), on a tiny language model
   over the same vocabulary (target: cached ≤ 1.15 × alone). Epochs are
   interleaved so a change of the machine's load weighs on every variant.

Usage (from the repository root; a few minutes on 2 shared CPU cores):

    nice python bench/bench_topk.py --vocabulary 32000

Results are printed as Markdown and JSON; docs/BENCHMARKS.md is not written.
"""

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import numpy as np  # noqa: E402

import tf_distill  # noqa: E402
from tf_distill.backend import keras  # noqa: E402
from tf_distill.backend import tf  # noqa: E402
from tf_distill.cache import build_topk_cache  # noqa: E402
from tf_distill.losses import TokenDistillation  # noqa: E402
from tf_distill.losses import TopKDistillation  # noqa: E402
from tf_distill.losses import soft_label_kl  # noqa: E402
from tf_distill.losses import topk_kl  # noqa: E402
from tf_distill.losses import topk_targets  # noqa: E402


def realistic_logits(rng, positions, vocabulary, peak=1.1, confidence=(1.5, 4.0)):
    """Peaked next-token logits: Zipf log-frequencies over a per-position
    order of the vocabulary, sharpened by a per-position confidence, plus
    noise. The default confidence gives entropies of a few nats, as a
    trained language model's next-token distributions have."""
    ranks = np.arange(1, vocabulary + 1, dtype=np.float64)
    zipf = -peak * np.log(ranks)
    logits = np.empty([positions, vocabulary], np.float32)
    for row in range(positions):
        sharpness = rng.uniform(*confidence)
        order = rng.permutation(vocabulary)
        logits[row, order] = sharpness * zipf + rng.normal(0.0, 0.5, vocabulary)
    return logits


def loss_gaps(args, rng):
    teacher = realistic_logits(rng, args.positions, args.vocabulary,
                               confidence=args.confidence)
    # A student that partly agrees: the teacher's logits, shrunk and noised.
    noise = rng.normal(0.0, args.student_noise, teacher.shape).astype(np.float32)
    student = args.student_agreement * teacher + noise
    teacher, student = tf.constant(teacher[None]), tf.Variable(student[None])
    p_teacher = tf.nn.softmax(teacher)
    entropy = float(tf.reduce_mean(-tf.reduce_sum(p_teacher * tf.nn.log_softmax(teacher), -1)))

    def value_and_gradient(function):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(function())
        return float(value), tf.reshape(tape.gradient(value, student), [-1])

    dense, dense_gradient = value_and_gradient(lambda: soft_label_kl(teacher, student))
    rows = []
    for k in args.k:
        log_probs, indices, rest = topk_targets(teacher, k)
        log_probs = tf.cast(tf.cast(log_probs, tf.float16), tf.float32)  # as stored
        sparse, gradient = value_and_gradient(
            lambda: topk_kl(log_probs, indices, rest, student)  # noqa: B023
        )
        cosine = float(tf.reduce_sum(gradient * dense_gradient)
                       / (tf.norm(gradient) * tf.norm(dense_gradient)))
        kept = float(tf.reduce_mean(tf.reduce_sum(tf.math.top_k(p_teacher, k).values, -1)))
        rows.append({"k": k, "dense_kl": dense,
                     "topk_kl": sparse, "gap": (dense - sparse) / dense,
                     "gradient_cosine": cosine, "teacher_mass_kept": kept,
                     "teacher_entropy": entropy})
    return rows


def language_model(vocabulary, length, hidden, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input([length], dtype="int32"),
            keras.layers.Embedding(vocabulary, hidden),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(vocabulary),
        ]
    )


def token_data(args, rng):
    tokens = rng.integers(0, args.vocabulary, size=[args.examples, args.length]).astype(np.int32)
    mask = np.ones(tokens.shape, np.float32)
    mask[::4, args.length // 2 :] = 0.0
    return tokens, np.roll(tokens, -1, axis=1), mask


def bytes_on_disk(args, teacher, data, folder):
    rows = []
    for k in args.k:
        directory = os.path.join(folder, f"k{k}")
        start = time.perf_counter()
        for index in range(2):  # two "workers"
            cache = build_topk_cache(teacher, data, directory, k=k, shard=(index, 2))
        seconds = time.perf_counter() - start
        files = glob.glob(os.path.join(directory, "shard-*", "*.npy"))
        on_disk = sum(os.path.getsize(path) for path in files)
        tokens = data[0].size
        rows.append({
            "k": k,
            "bytes_per_token": on_disk / tokens,
            # float16 values, uint16 ids up to 65,536 tokens (int32 above), a float32 rest.
            "bound": (4 if args.vocabulary <= 1 << 16 else 6) * k + 8,
            "dense_bytes_per_token": 4 * args.vocabulary,
            "fraction_of_dense": on_disk / tokens / (4 * args.vocabulary),
            "build_seconds": seconds,
        })
    return rows, cache


def epoch_times(args, teacher, data, cache):
    tokens, labels, mask = data
    student_alone = language_model(args.vocabulary, args.length, args.hidden, seed=1)
    student_alone.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          jit_compile=args.jit)
    alone_data = tf.data.Dataset.from_tensor_slices(data).batch(args.batch_size).prefetch(2)

    def distiller(loss):
        model = tf_distill.Distiller(
            teacher, language_model(args.vocabulary, args.length, args.hidden, seed=1), loss,
            student_loss_weight=0.5,
        )
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=args.jit)
        return model

    runs = {
        "student alone": (student_alone, alone_data),
        "top-k cached KD": (distiller(TopKDistillation()),
                            cache.dataset(batch_size=args.batch_size, seed=0)),
        "online dense KD": (distiller(TokenDistillation()), alone_data),
    }
    timers = {name: common.EpochTimer() for name in runs}
    for epoch in range(args.epochs + 1):  # the first epoch traces: not counted
        for name, (model, train) in runs.items():
            model.fit(train, initial_epoch=epoch, epochs=epoch + 1, verbose=0,
                      callbacks=[timers[name]])
    medians = {name: statistics.median(timer.seconds[1:]) for name, timer in timers.items()}
    alone = medians["student alone"]
    return [{"variant": name, "epoch_seconds": seconds, "ratio_to_alone": seconds / alone,
             "epochs": len(timers[name].seconds) - 1} for name, seconds in medians.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocabulary", type=int, default=32000)
    parser.add_argument("--k", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--positions", type=int, default=256,
                        help="positions of the synthetic distributions for the loss gap")
    parser.add_argument("--confidence", type=float, nargs=2, default=[1.0, 2.5],
                        help="range of the teacher's per-position sharpness")
    parser.add_argument("--student-agreement", type=float, default=0.7)
    parser.add_argument("--student-noise", type=float, default=1.0)
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-epochs", action="store_true", help="skip the epoch times")
    parser.add_argument("--jit", action="store_true",
                        help="compile the training steps with XLA (Keras leaves it off on CPU)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    results = {"vocabulary": args.vocabulary, "conditions": common.machine_conditions()}
    results["loss_gap"] = loss_gaps(args, rng)
    teacher = language_model(args.vocabulary, args.length, args.hidden * 2, seed=0)
    data = token_data(args, rng)
    with tempfile.TemporaryDirectory() as folder:
        results["bytes"], cache = bytes_on_disk(args, teacher, data, folder)
        results["epochs"] = [] if args.no_epochs else epoch_times(args, teacher, data, cache)
    table = common.markdown_table
    entropy = results["loss_gap"][0]["teacher_entropy"]
    print(f"## Top-k teacher cache, V = {args.vocabulary}\n")
    print(f"Teacher next-token entropy: {entropy:.2f} nats on average.\n")
    print(table(results["bytes"], [("k", "k", "d"), ("bytes_per_token", "bytes/token", ".1f"),
                                   ("bound", "k·4+8 (k·6+8 above V=65,536)", "d"),
                                   ("dense_bytes_per_token", "dense bytes/token", "d"),
                                   ("fraction_of_dense", "of dense", ".5f")]))
    print()
    print(table(results["loss_gap"], [("k", "k", "d"), ("dense_kl", "full KD (KL)", ".4f"),
                                      ("topk_kl", "top-k KD", ".4f"),
                                      ("gap", "relative gap", ".2%"),
                                      ("gradient_cosine", "gradient cosine", ".4f"),
                                      ("teacher_mass_kept", "teacher mass in top-k", ".3f")]))
    print()
    print(table(results["epochs"], [("variant", "variant", "s"),
                                    ("epoch_seconds", "epoch (s, median)", ".2f"),
                                    ("ratio_to_alone", "× student alone", ".2f")]))
    print()
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
