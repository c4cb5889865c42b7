"""Benchmark: teacher-output caching and the search of temperature and α.

Side by side in one run, on an MNIST subset with a CNN teacher:

1. epoch time of cached distillation against the student trained alone
   (target: cached <= 1.15 × alone);
2. epoch time of online distillation (teacher run every step) against cached;
3. a K-trial search sharing one cache against K × one cached trial plus one
   cache build (target: search <= 1.1 × K × trial + build). The cached
   trials are timed in two blocks of K, before and after the search, so a
   change of the machine's load during the run weighs on both sides;
4. test errors of the tuned distilled student against the student alone;

and, on synthetic data, a disk cache of 1,000,000 examples streamed batch by
batch: the process's private memory (RssAnon) stays flat while it is built
and read, where an in-memory cache grows by the size of the outputs.

Usage (from the repository root; about 10 minutes on 2 shared CPU cores):

    python bench/bench_cache_tuning.py --mnist ../shared/data/mnist

Options make it longer or shorter (`--train-size 0` uses all 60,000 training
images; `--large-examples 0` skips the memory benchmark). Results are printed
as Markdown, written to `--output` (`results.json`, `results.md`) and to the
"cache_tuning" section of docs/BENCHMARKS.md (unless `--no-write`).
"""

import argparse
import gc
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import tf_distill  # noqa: E402
from tf_distill import architectures  # noqa: E402
from tf_distill import cache  # noqa: E402
from tf_distill import data as data_lib  # noqa: E402
from tf_distill import tuning  # noqa: E402
from tf_distill.backend import keras  # noqa: E402
from tf_distill.backend import tf  # noqa: E402
from tf_distill.files import atomic_write  # noqa: E402
from tf_distill.losses import crossentropy_from_logits  # noqa: E402


class GcClock:
    """Wall time spent in Python's garbage collections (`gc.callbacks`).

    Counts every collection in the block, automatic ones included, and the
    full ones (generation 2) apart: a full collection scans every tracked
    object of the process, so its cost grows with all that is alive.
    """

    def __init__(self):
        self.seconds = 0.0
        self.full = 0
        self.full_seconds = 0.0
        self._start = None

    def _callback(self, phase, info):
        if phase == "start":
            self._start = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._start
        self.seconds += elapsed
        if info["generation"] == 2:
            self.full += 1
            self.full_seconds += elapsed

    def __enter__(self):
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._callback)

    def summary(self):
        return {
            "gc_seconds": self.seconds,
            "gc_full_collections": self.full,
            "gc_full_seconds": self.full_seconds,
        }


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
    distiller = tf_distill.Distiller(
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
    timers = {name: common.EpochTimer() for name in runs}
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
    return {name: (timers[name].seconds, timers[name].cpu_seconds, totals[name]) for name in runs}


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

    def cached_trials(count):
        """`count` cached trials as a user runs them: build, compile, fit."""
        start, cpu_start = time.perf_counter(), time.process_time()
        with GcClock() as clock:
            for _ in range(count):
                trial = make_distiller(teacher, student(), args)
                trial.fit(
                    train, validation_data=validation, epochs=args.epochs, verbose=0, shuffle=False
                )
        return {
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start,
            **clock.summary(),
        }

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

    # (3): K cached trials, the K-trial search, K cached trials again.
    before = cached_trials(args.trials)
    print(f"{args.trials} cached trials before the search: {before}", flush=True)
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
    with GcClock() as search_clock:
        tuning.search(tuner, train, validation, args.epochs)
    search_seconds = time.perf_counter() - start
    search_cpu_seconds = time.process_time() - cpu_start
    print(f"Search: {search_seconds:.1f} s, CPU {search_cpu_seconds:.1f} s", flush=True)
    after = cached_trials(args.trials)
    print(f"{args.trials} cached trials after the search: {after}", flush=True)
    trial_seconds = (before["seconds"] + after["seconds"]) / (2 * args.trials)
    trial_cpu_seconds = (before["cpu_seconds"] + after["cpu_seconds"]) / (2 * args.trials)

    outcome = tuning.write_results(tuner, directory)
    tuned = outcome["student"]
    # What a trial checkpoint holds: the student and its optimizer state,
    # against the whole Distiller with its teacher.
    checkpoint = os.path.join(tuner.get_trial_dir(outcome["best_trial"]), "checkpoint.weights.h5")
    whole = os.path.join(args.output, "whole_distiller.weights.h5")
    best_model = tuner.get_best_models(1)[0]
    tf_distill.Distiller.save_weights(best_model, whole)
    results["search"] = {
        "trials": args.trials,
        "seconds": search_seconds,
        "cpu_seconds": search_cpu_seconds,
        **search_clock.summary(),
        "cached_trials_before": before,
        "cached_trials_after": after,
        "trial_seconds": trial_seconds,
        "trial_cpu_seconds": trial_cpu_seconds,
        "checkpoint_bytes": os.path.getsize(checkpoint),
        "whole_distiller_checkpoint_bytes": os.path.getsize(whole),
        "best_hyperparameters": outcome["best_hyperparameters"],
        "best_validation_accuracy": outcome["best_score"],
        "test_error": test_error(tuned, splits),
        "trials_table": [
            {k: row[k] for k in ("trial", "status", "temperature", "student_loss_weight", "score")}
            for row in outcome["trials"]
        ],
    }
    os.unlink(whole)
    print(f"Search: {results['search']}", flush=True)

    trials = args.trials
    results["ratios"] = {
        **results["paired"],
        "search_over_trials": search_seconds / (trials * trial_seconds + cache_seconds),
        "search_over_trials_cpu": search_cpu_seconds
        / (trials * trial_cpu_seconds + cache_cpu_seconds),
        # The target: search <= 1.1 × (K × one cached trial) + one cache build.
        "search_over_budget": search_seconds / (1.1 * trials * trial_seconds + cache_seconds),
        "search_over_budget_cpu": search_cpu_seconds
        / (1.1 * trials * trial_cpu_seconds + cache_cpu_seconds),
        "search_overhead_per_trial": (search_seconds - trials * trial_seconds) / trials,
        "search_overhead_per_trial_cpu": (search_cpu_seconds - trials * trial_cpu_seconds) / trials,
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
    distiller = tf_distill.Distiller(teacher, student, losses, student_loss_weight=0.5)
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


def verdict(met):
    return "**PASS**" if met else "**FAIL**"


def mnist_markdown(m, args):
    r = m["ratios"]
    data = m["data"]
    search = m["search"]
    alone, cached, online = m["alone"], m["cached"], m["online"]
    trials = search["trials"]
    budget = 1.1 * trials * search["trial_seconds"] + cached["cache_build_seconds"]
    budget_cpu = 1.1 * trials * search["trial_cpu_seconds"] + cached["cache_build_cpu_seconds"]
    error_met = search["test_error"] < alone["test_error"]
    lines = [
        f"MNIST subset: {data['train']:,} training, {data['validation']:,} validation and "
        f'{data["test"]:,} test images. Teacher: CNN "{args.teacher_size}" '
        f"({m['teacher']['parameters']:,} parameters, {args.teacher_epochs} epochs, test error "
        f'{m["teacher"]["test_error"]:.4f}); student: CNN "{args.student_size}" '
        f"({alone['parameters']:,} parameters); batch {args.batch_size}, Adam "
        f"({args.learning_rate:g}), {args.epochs} epochs per model and per trial; T = 4, "
        "α = 0.5 outside the search. Wall time is what a user waits; CPU time "
        "(`time.process_time`, all threads of the process) measures the work done and is "
        "less disturbed by other programs on a shared machine.",
        "",
        "(1), (2): the three models trained one epoch each in turn; epoch times (training "
        "and validation) are medians without the first epoch, ratios are medians of the "
        "paired per-epoch ratios.",
        "",
        "| per epoch | wall | CPU |",
        "|---|---|---|",
        f"| student alone | {alone['epoch_seconds']:.2f} s | {alone['epoch_cpu_seconds']:.2f} s |",
        f"| cached distillation | {cached['epoch_seconds']:.2f} s | "
        f"{cached['epoch_cpu_seconds']:.2f} s |",
        f"| online distillation (teacher every step) | {online['epoch_seconds']:.2f} s | "
        f"{online['epoch_cpu_seconds']:.2f} s |",
        "",
        f"(3): {trials} cached trials (build, compile, fit, as a user runs one), then the "
        f"{trials}-trial random search (`tuning.make_tuner`, `tuning.search`) on the same "
        f"caches, then {trials} cached trials again; one cached trial is the mean of the "
        f"{2 * trials}. The cache build is the teacher's pass over the training and "
        "validation sets.",
        "",
        "| (3) | wall | CPU |",
        "|---|---|---|",
        f"| cache build (train + validation) | {cached['cache_build_seconds']:.2f} s | "
        f"{cached['cache_build_cpu_seconds']:.2f} s |",
        f"| {trials} cached trials before / after the search | "
        f"{search['cached_trials_before']['seconds']:.1f} s / "
        f"{search['cached_trials_after']['seconds']:.1f} s | "
        f"{search['cached_trials_before']['cpu_seconds']:.1f} s / "
        f"{search['cached_trials_after']['cpu_seconds']:.1f} s |",
        f"| one cached trial (mean) | {search['trial_seconds']:.2f} s | "
        f"{search['trial_cpu_seconds']:.2f} s |",
        f"| bound: 1.1 × {trials} × trial + build | {budget:.1f} s | {budget_cpu:.1f} s |",
        f"| {trials}-trial search | {search['seconds']:.1f} s | {search['cpu_seconds']:.1f} s |",
        f"| search overhead per trial | {r['search_overhead_per_trial']:+.2f} s | "
        f"{r['search_overhead_per_trial_cpu']:+.2f} s |",
        "| in garbage collection: trials before / search / trials after (full collections) | "
        + " / ".join(
            f"{block['gc_seconds']:.2f} s ({block['gc_full_collections']})"
            for block in (search["cached_trials_before"], search, search["cached_trials_after"])
        )
        + " | |",
        "",
        "| target | wall | CPU |",
        "|---|---|---|",
        f"| (1) cached epoch ≤ 1.15 × student alone | ×{r['cached_over_alone']:.2f}: "
        f"{verdict(r['cached_over_alone'] <= 1.15)} | ×{r['cached_over_alone_cpu']:.2f}: "
        f"{verdict(r['cached_over_alone_cpu'] <= 1.15)} |",
        f"| (2) online epoch / cached epoch (no target) | ×{r['online_over_cached']:.2f} | "
        f"×{r['online_over_cached_cpu']:.2f} |",
        f"| (3) search ≤ 1.1 × {trials} × trial + build | {r['search_over_budget']:.3f} of "
        f"the bound: {verdict(r['search_over_budget'] <= 1.0)} | "
        f"{r['search_over_budget_cpu']:.3f} of the bound: "
        f"{verdict(r['search_over_budget_cpu'] <= 1.0)} |",
        f"| (3) search / ({trials} × trial + build), for reference | "
        f"×{r['search_over_trials']:.3f} | ×{r['search_over_trials_cpu']:.3f} |",
        "",
        f"(4) test error on the {data['test']:,} test images: student alone "
        f"{alone['test_error']:.4f}, tuned distilled student {search['test_error']:.4f} "
        f"({r['tuned_minus_alone_test_error_points']:+.2f} points; target: lower than alone, "
        f"{verdict(error_met)}); distilled with T = 4, α = 0.5: {cached['test_error']:.4f} "
        f"cached, {online['test_error']:.4f} online. Best hyperparameters: "
        + ", ".join(f"{k} = {v:.4g}" for k, v in sorted(search["best_hyperparameters"].items()))
        + f" (validation accuracy {search['best_validation_accuracy']:.4f}).",
        "",
        "Trial checkpoints (`tuning.TrialDistiller`) hold the student and its optimizer's "
        f"state: {search['checkpoint_bytes']:,} bytes, against "
        f"{search['whole_distiller_checkpoint_bytes']:,} for the whole Distiller with its "
        "teacher (and the teacher's own optimizer slots). During the search the objects "
        "made before it are frozen (`gc.freeze`), so the garbage collections (Keras Tuner "
        "runs two full ones before each trial) scan only the trials' objects; the cached "
        "trials outside the search run without this (see the garbage-collection row).",
        "",
    ]
    return lines


def large_markdown(large):
    progress = large["disk_stream"]["rss_anon_growth_by_progress_mb"]
    shares = list(progress.values())
    # Flat: after the first tenth, the growth changes by less than 5 % of
    # the outputs' size, however many more examples are read.
    flat = max(shares) - shares[0] <= 0.05 * large["outputs_mb"]
    growth_text = (
        "it is reached within the first tenth of the epoch and does not grow with the "
        "examples read (TensorFlow's runtime and the shuffle buffer)"
        if flat
        else f"it grows by {max(shares) - shares[0]:.0f} MiB after the first tenth"
    )
    return [
        f"Disk cache of {large['examples']:,} examples (synthetic 64-feature inputs, "
        f"memory-mapped; logits and a 128-wide tapped layer, {large['outputs_mb']:.0f} MiB "
        "of teacher outputs). Growth of the process's private memory (RssAnon) over the "
        "start; file pages mapped from the cache (RssFile) are page cache the kernel can "
        "reclaim.",
        "",
        "| step | wall | RssAnon growth |",
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
        + ", ".join(f"{share}: {growth:.0f} MiB" for share, growth in progress.items())
        + f"; {growth_text}.",
        "",
    ]


def markdown(results, args):
    lines = ["## Teacher-output caching and Keras Tuner search (MNIST)", ""]
    if "mnist" in results:
        lines += mnist_markdown(results["mnist"], args)
    if "large" in results:
        lines += large_markdown(results["large"])
    lines += [
        common.conditions_markdown(
            results["conditions"], load_after=results["load_after"], note=args.note
        ),
        "",
        "Reproduce (from the repository root):",
        "",
        "```sh",
        results["command"],
        "```",
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
    parser.add_argument("--no-write", action="store_true", help="do not write docs/BENCHMARKS.md")
    parser.add_argument(
        "--note", default=None, help="a sentence on the run's conditions, for the report"
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    tf.get_logger().setLevel("ERROR")
    results = {"conditions": common.machine_conditions()}
    print(f"Conditions: {results['conditions']}", flush=True)
    if not args.skip_mnist:
        if not os.path.isdir(args.mnist):
            parser.error(f"No MNIST folder at {args.mnist!r}; pass --mnist or --skip-mnist.")
        results["mnist"] = mnist_benchmark(args)
    if args.large_examples:
        results["large"] = memory_benchmark(args)
        print(f"Memory: {results['large']}", flush=True)
    results["load_after"] = common.current_load()
    # The note describes the run; it is not one of its parameters.
    if "--note" in argv:
        index = argv.index("--note")
        del argv[index : index + 2]
    argv = [arg for arg in argv if not arg.startswith("--note=")]
    results["command"] = common.command_line(argv=[sys.argv[0]] + argv)
    text = markdown(results, args)
    atomic_write(
        os.path.join(args.output, "results.json"), json.dumps(results, indent=2, default=float)
    )
    atomic_write(os.path.join(args.output, "results.md"), text + "\n")
    print()
    common.publish("cache_tuning", text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
