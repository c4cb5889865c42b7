"""Benchmark: teacher-output caching and the search of temperature and α.

Side by side in one run, on an MNIST subset with a CNN teacher:

1. epoch time of cached distillation against the student trained alone
   (target: cached <= 1.15 × alone);
2. epoch time of online distillation (teacher run every step) against cached;
3. a K-trial search sharing one cache against K × one cached trial plus one
   cache build (target: search <= 1.1 × K × trial + build);
4. test errors of the tuned distilled student against the student alone;

and, on synthetic data, a disk cache of 1,000,000 examples streamed batch by
batch: the process's private memory (RssAnon) stays flat while it is built
and read, where an in-memory cache grows by the size of the outputs.

Usage (from the repository root; a few minutes on 2 CPU cores):

    python bench/bench_cache_tuning.py --mnist ../shared/data/mnist

Options make it longer or shorter (`--train-size 0` uses all 60,000 training
images; `--large-examples 0` skips the memory benchmark). Results are printed
as Markdown and written to `--output` (`results.json`, `results.md`).
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tf_distill import architectures  # noqa: E402
from tf_distill import cache  # noqa: E402
from tf_distill import data as data_lib  # noqa: E402
from tf_distill import tuning  # noqa: E402
from tf_distill.backend import keras  # noqa: E402
from tf_distill.backend import tf  # noqa: E402
from tf_distill.distiller import Distiller  # noqa: E402
from tf_distill.distiller import crossentropy_from_logits  # noqa: E402
from tf_distill.io import atomic_write  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall time and CPU time of each epoch (training and validation).

    CPU time (`time.process_time`, all threads of this process) measures the
    work done whatever else the machine runs; wall time depends on the load
    other processes put on shared cores.
    """

    def __init__(self):
        super().__init__()
        self.times = []
        self.cpu_times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)
        self.cpu_times.append(time.process_time() - self.cpu_start)


def steady(times):
    """Median epoch time without the first epoch (tracing, warm-up)."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def test_error(model, splits):
    logits = model.predict(splits.x_test, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) != splits.y_test))


def build(architecture, splits, size, seed, name):
    return architectures.build(
        architecture, splits.input_shape, splits.num_classes, size=size, seed=seed, name=name
    )


def compile_alone(model, args):
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=crossentropy_from_logits,
        metrics=["accuracy"],
    )
    return model


def make_distiller(teacher, student, args, temperature=4.0, alpha=0.5):
    distiller = Distiller(
        teacher, student, {"name": "kd", "temperature": temperature}, student_loss_weight=alpha
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return distiller


def fit_interleaved(runs, epochs):
    """Trains several models one epoch each in turn, timing every epoch.

    The machine's load changes over minutes; interleaving the epochs exposes
    every run to the same load, so their ratios are fair.

    Args:
        runs: `{name: (model, train, validation)}`.
        epochs: Epochs per model.

    Returns:
        `{name: (epoch_wall_times, epoch_cpu_times, total_seconds)}`.
    """
    timers = {name: EpochTimer() for name in runs}
    totals = dict.fromkeys(runs, 0.0)
    for epoch in range(epochs):
        for name, (model, train, validation) in runs.items():
            start = time.perf_counter()
            model.fit(
                train,
                validation_data=validation,
                initial_epoch=epoch,
                epochs=epoch + 1,
                verbose=0,
                shuffle=False,
                callbacks=[timers[name]],
            )
            totals[name] += time.perf_counter() - start
    return {name: (timers[name].times, timers[name].cpu_times, totals[name]) for name in runs}


def mnist_benchmark(args):
    splits = data_lib.load(
        args.mnist,
        train_size=args.train_size or None,
        validation_size=args.validation_size,
        seed=args.seed,
    )
    print(f"Data: {splits}", flush=True)
    keras.utils.set_random_seed(args.seed)
    teacher = compile_alone(build("cnn", splits, args.teacher_size, args.seed, "teacher"), args)
    start = time.perf_counter()
    teacher.fit(
        splits.as_tf_dataset("train", args.batch_size, seed=args.seed),
        epochs=args.teacher_epochs,
        verbose=0,
        shuffle=False,
    )
    results = {
        "data": {"name": splits.name, **splits.sizes},
        "teacher": {
            "parameters": teacher.count_params(),
            "train_seconds": time.perf_counter() - start,
            "test_error": test_error(teacher, splits),
        },
    }
    print(f"Teacher: {results['teacher']}", flush=True)
    initial = build("cnn", splits, args.student_size, args.seed + 1, "student").get_weights()

    def student(name="student"):
        model = build("cnn", splits, args.student_size, args.seed + 1, name)
        model.set_weights(initial)
        return model

    start, cpu_start = time.perf_counter(), time.process_time()
    train_cache = cache.build_teacher_cache(teacher, splits, split="train")
    validation_cache = cache.build_teacher_cache(teacher, splits, split="validation")
    cache_seconds = time.perf_counter() - start
    cache_cpu_seconds = time.process_time() - cpu_start
    train = train_cache.dataset(args.batch_size, shuffle=True, seed=args.seed)
    validation = validation_cache.dataset(args.batch_size, shuffle=False)
    plain_train = splits.as_tf_dataset("train", args.batch_size, seed=args.seed)
    plain_validation = splits.as_tf_dataset("validation", args.batch_size)

    # One cached trial, timed as the search runs it: build, compile, fit.
    start, cpu_start = time.perf_counter(), time.process_time()
    trial = make_distiller(teacher, student(), args)
    trial.fit(train, validation_data=validation, epochs=args.epochs, verbose=0, shuffle=False)
    trial_seconds = time.perf_counter() - start
    trial_cpu_seconds = time.process_time() - cpu_start

    alone = compile_alone(student("student_alone"), args)
    cached = make_distiller(teacher, student(), args)
    online = make_distiller(teacher, student(), args)
    timed = fit_interleaved(
        {
            "alone": (alone, plain_train, plain_validation),
            "cached": (cached, train, validation),
            "online": (online, plain_train, plain_validation),
        },
        args.epochs,
    )
    for name, model in (("alone", alone), ("cached", cached.student), ("online", online.student)):
        times, cpu_times, total = timed[name]
        results[name] = {
            "epoch_seconds": steady(times),
            "epoch_cpu_seconds": steady(cpu_times),
            "epoch_times": times,
            "epoch_cpu_times": cpu_times,
            "train_seconds": total,
            "test_error": test_error(model, splits),
        }
    results["alone"]["parameters"] = alone.count_params()
    results["cached"].update(
        cache_build_seconds=cache_seconds,
        cache_build_cpu_seconds=cache_cpu_seconds,
        trial_seconds=trial_seconds,
        trial_cpu_seconds=trial_cpu_seconds,
    )

    # Paired per-epoch ratios: each pair ran back to back, under the same load.
    def paired(numerator, denominator, index):
        return statistics.median(
            n / d for n, d in zip(timed[numerator][index][1:], timed[denominator][index][1:])
        )

    results["paired"] = {
        "cached_over_alone": paired("cached", "alone", 0),
        "online_over_cached": paired("online", "cached", 0),
        "cached_over_alone_cpu": paired("cached", "alone", 1),
        "online_over_cached_cpu": paired("online", "cached", 1),
    }
    for name in ("alone", "cached", "online"):
        print(f"{name}: {results[name]}", flush=True)

    hypermodel = tuning.DistillerHyperModel(
        teacher, lambda: student(), learning_rate=args.learning_rate, seed=args.seed
    )
    directory = os.path.join(args.output, "search")
    tuner = tuning.make_tuner(
        hypermodel,
        "random",
        max_trials=args.trials,
        directory=directory,
        overwrite=True,
        seed=args.seed,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    tuning.search(tuner, train, validation, args.epochs)
    search_seconds = time.perf_counter() - start
    search_cpu_seconds = time.process_time() - cpu_start
    outcome = tuning.write_results(tuner, directory)
    tuned = outcome["student"]
    results["search"] = {
        "trials": args.trials,
        "seconds": search_seconds,
        "cpu_seconds": search_cpu_seconds,
        "best_hyperparameters": outcome["best_hyperparameters"],
        "best_validation_accuracy": outcome["best_score"],
        "test_error": test_error(tuned, splits),
        "trials_table": [
            {k: row[k] for k in ("trial", "status", "temperature", "student_loss_weight", "score")}
            for row in outcome["trials"]
        ],
    }
    print(f"Search: {results['search']}", flush=True)

    results["ratios"] = {
        **results["paired"],
        "search_over_trials": search_seconds / (args.trials * trial_seconds + cache_seconds),
        "search_over_trials_cpu": search_cpu_seconds
        / (args.trials * trial_cpu_seconds + cache_cpu_seconds),
        # The target: search <= 1.1 × (K × one cached trial) + one cache build.
        "search_over_budget": search_seconds / (1.1 * args.trials * trial_seconds + cache_seconds),
        "search_over_budget_cpu": search_cpu_seconds
        / (1.1 * args.trials * trial_cpu_seconds + cache_cpu_seconds),
        "tuned_minus_alone_test_error_points": 100
        * (results["search"]["test_error"] - results["alone"]["test_error"]),
    }
    return results


# --------------------------------------------------------------------------
# Memory: a 1,000,000-example disk cache, streamed.


def _memory_mb():
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                values[key] = int(rest.split()[0]) / 1024
    return values


class MemorySampler:
    """Samples RssAnon and RssFile every `interval` seconds in a thread."""

    def __init__(self, interval=0.1):
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(_memory_mb())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak(self, key):
        return max(sample[key] for sample in self.samples)


def memory_benchmark(args):
    examples = args.large_examples
    folder = os.path.join(args.output, "large")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    # Inputs on disk too, memory-mapped: only the teacher outputs are measured.
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(
        os.path.join(folder, "x.npy"), mode="w+", dtype="float32", shape=(examples, 64)
    )
    for start in range(0, examples, 100_000):
        stop = min(examples, start + 100_000)
        x[start:stop] = rng.normal(size=(stop - start, 64)).astype("float32")
    x.flush()
    del x
    x = np.load(os.path.join(folder, "x.npy"), mmap_mode="r")
    y = rng.integers(0, 10, size=examples).astype("int32")
    teacher = architectures.build("mlp", (64,), 10, size=8.0, seed=0, name="teacher")
    losses = [
        {"name": "kd", "temperature": 4.0},
        {"name": "fitnets", "teacher_layer_name": "features", "student_layer_name": "features"},
    ]
    results = {"examples": examples}
    baseline = _memory_mb()["RssAnon"]
    with MemorySampler() as sampler:
        start = time.perf_counter()
        disk = cache.build_teacher_cache(
            teacher,
            (x, y),
            distillation_losses=losses,
            directory=os.path.join(folder, "cache"),
            inference_batch_size=4096,
        )
        build_seconds = time.perf_counter() - start
    results["outputs_mb"] = disk.nbytes / 2**20
    results["disk_build"] = {
        "seconds": build_seconds,
        "rss_anon_growth_mb": sampler.peak("RssAnon") - baseline,
    }
    dataset = disk.dataset(batch_size=1024, shuffle=True, seed=0)
    batches = -(-examples // 1024)
    checkpoints = {max(1, round(batches * f)): f for f in (0.1, 0.25, 0.5, 0.75, 1.0)}
    progress = {}
    with MemorySampler() as sampler:
        start = time.perf_counter()
        seen = 0
        for number, (batch_x, _) in enumerate(dataset, start=1):
            seen += int(batch_x["inputs"].shape[0])
            if number in checkpoints:
                progress[f"{checkpoints[number]:.0%}"] = _memory_mb()["RssAnon"] - baseline
        stream_seconds = time.perf_counter() - start
    assert seen == examples
    results["disk_stream"] = {
        "seconds": stream_seconds,
        "rss_anon_growth_mb": sampler.peak("RssAnon") - baseline,
        "rss_file_peak_mb": sampler.peak("RssFile"),
        "rss_anon_growth_by_progress_mb": progress,
    }
    student = architectures.build("mlp", (64,), 10, size=4.0, seed=1, name="student")
    distiller = Distiller(teacher, student, losses, student_loss_weight=0.5)
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with MemorySampler() as sampler:
        start = time.perf_counter()
        distiller.fit(
            disk.dataset(batch_size=256, seed=0, repeat=True),
            steps_per_epoch=300,
            epochs=1,
            verbose=0,
        )
        results["disk_fit_300_steps"] = {
            "seconds": time.perf_counter() - start,
            "rss_anon_growth_mb": sampler.peak("RssAnon") - baseline,
        }
    del disk, dataset
    with MemorySampler() as sampler:
        start = time.perf_counter()
        memory = cache.build_teacher_cache(
            teacher, (x, y), distillation_losses=losses, inference_batch_size=4096
        )
        results["memory_build"] = {
            "seconds": time.perf_counter() - start,
            "rss_anon_growth_mb": sampler.peak("RssAnon") - baseline,
        }
    del memory
    shutil.rmtree(folder, ignore_errors=True)
    return results


def args_epochs(m):
    return len(m["alone"]["epoch_times"])


def markdown(results, command):
    lines = ["## Teacher-output caching and the search of T and α", "", f"Command: `{command}`", ""]
    if "mnist" in results:
        m = results["mnist"]
        r = m["ratios"]
        data = m["data"]
        lines += [
            f"MNIST subset: {data['train']} train, {data['validation']} validation, "
            f"{data['test']} test images. Teacher: CNN ({m['teacher']['parameters']:,} parameters, "
            f"test error {m['teacher']['test_error']:.4f}); student: CNN "
            f"({m['alone']['parameters']:,} parameters). Epoch times are medians without the "
            "first epoch, training and validation included; the three models were trained "
            "one epoch each in turn, and the ratios are medians of the paired per-epoch ratios.",
            "",
            "| measure | wall time | CPU time | target |",
            "|---|---|---|---|",
            f"| (1) epoch, student alone | {m['alone']['epoch_seconds']:.2f} s | "
            f"{m['alone']['epoch_cpu_seconds']:.2f} s | |",
            f"| (1) epoch, cached distillation | {m['cached']['epoch_seconds']:.2f} s "
            f"(×{r['cached_over_alone']:.2f} alone) | {m['cached']['epoch_cpu_seconds']:.2f} s "
            f"(×{r['cached_over_alone_cpu']:.2f} alone) | ≤ ×1.15 |",
            f"| (2) epoch, online distillation | {m['online']['epoch_seconds']:.2f} s "
            f"(×{r['online_over_cached']:.2f} cached) | {m['online']['epoch_cpu_seconds']:.2f} s "
            f"(×{r['online_over_cached_cpu']:.2f} cached) | |",
            f"| (3) cache build (train + validation) | {m['cached']['cache_build_seconds']:.2f} s | "
            f"{m['cached']['cache_build_cpu_seconds']:.2f} s | |",
            f"| (3) one cached trial ({args_epochs(m)} epochs) | {m['cached']['trial_seconds']:.1f} s | "
            f"{m['cached']['trial_cpu_seconds']:.1f} s | |",
            f"| (3) search, K = {m['search']['trials']} trials | {m['search']['seconds']:.1f} s "
            f"(×{r['search_over_trials']:.2f} of K × trial + build; "
            f"{r['search_over_budget']:.2f} of the target) | {m['search']['cpu_seconds']:.1f} s "
            f"(×{r['search_over_trials_cpu']:.2f}; {r['search_over_budget_cpu']:.2f} of the target) "
            "| ≤ 1.1 × K × trial + build (≤ 1.00 of the target) |",
            f"| (4) test error, student alone | {m['alone']['test_error']:.4f} | | |",
            f"| (4) test error, tuned distilled student | {m['search']['test_error']:.4f} "
            f"({r['tuned_minus_alone_test_error_points']:+.2f} points) | | < alone |",
            f"| test error, distilled with T = 4, α = 0.5 (cached / online) | "
            f"{m['cached']['test_error']:.4f} / {m['online']['test_error']:.4f} | | |",
            "",
            f"Best hyperparameters: {m['search']['best_hyperparameters']} (validation accuracy "
            f"{m['search']['best_validation_accuracy']:.4f}).",
            "",
        ]
    if "large" in results:
        large = results["large"]
        lines += [
            f"Disk cache of {large['examples']:,} examples (synthetic 64-feature inputs, "
            f"memory-mapped; logits and a 128-wide tapped layer, {large['outputs_mb']:.0f} MiB "
            "of teacher outputs). Growth of the process's private memory (RssAnon) over the "
            "start; file pages mapped from the cache (RssFile) are page cache the kernel can "
            "reclaim.",
            "",
            "| step | time | RssAnon growth |",
            "|---|---|---|",
            f"| build on disk | {large['disk_build']['seconds']:.1f} s | "
            f"{large['disk_build']['rss_anon_growth_mb']:.0f} MiB |",
            f"| stream one epoch (batches of 1,024) | {large['disk_stream']['seconds']:.1f} s | "
            f"{large['disk_stream']['rss_anon_growth_mb']:.0f} MiB (RssFile peak "
            f"{large['disk_stream']['rss_file_peak_mb']:.0f} MiB) |",
            f"| distill 300 steps from it | {large['disk_fit_300_steps']['seconds']:.1f} s | "
            f"{large['disk_fit_300_steps']['rss_anon_growth_mb']:.0f} MiB |",
            f"| for contrast: build in memory | {large['memory_build']['seconds']:.1f} s | "
            f"{large['memory_build']['rss_anon_growth_mb']:.0f} MiB |",
            "",
            "RssAnon growth while streaming, by share of the epoch read: "
            + ", ".join(
                f"{share}: {growth:.0f} MiB"
                for share, growth in large["disk_stream"]["rss_anon_growth_by_progress_mb"].items()
            )
            + ". The growth (TensorFlow's runtime and shuffle buffers) is reached within the "
            "first tenth of the epoch and does not grow with the examples read.",
            "",
        ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default="../shared/data/mnist", help="MNIST idx folder")
    parser.add_argument("--train-size", type=int, default=3000, help="0 for all 60,000")
    parser.add_argument("--validation-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--teacher-size", default="large")
    parser.add_argument("--student-size", default="small")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--large-examples", type=int, default=1_000_000, help="0 to skip")
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/bench_cache_tuning")
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    tf.get_logger().setLevel("ERROR")
    results = {}
    if not args.skip_mnist:
        if not os.path.isdir(args.mnist):
            parser.error(f"No MNIST folder at {args.mnist!r}; pass --mnist or --skip-mnist.")
        results["mnist"] = mnist_benchmark(args)
    if args.large_examples:
        results["large"] = memory_benchmark(args)
        print(f"Memory: {results['large']}", flush=True)
    command = "python bench/bench_cache_tuning.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    text = markdown(results, command.strip())
    atomic_write(
        os.path.join(args.output, "results.json"), json.dumps(results, indent=2, default=float)
    )
    atomic_write(os.path.join(args.output, "results.md"), text + "\n")
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
