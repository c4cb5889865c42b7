"""Core benchmark: what distillation costs per epoch, and what it buys, on MNIST.

A CNN teacher (`architectures.build("cnn", size="large")`, ~248k parameters)
is trained once; then, for each seed, the same small CNN student (~7.4k
parameters, same initial weights) is trained three ways, epoch by epoch and
side by side, over the same batches:

- (a) **student alone**: `student.fit` on the labels;
- (b) **teacher inference**: one `teacher.predict` pass over the training data;
- (c) **tf_distill**: `tf_distill.Distiller` with Hinton's KD
  (`LogitsDistillation(temperature)`, `student_loss_weight=alpha`);
- (k) **keras.distillation**: `keras.distillation.Distiller` with the same
  teacher, student initial weights, α, temperature, optimizer and data. Its
  `LogitsDistillation` gets `loss=keras.losses.KLDivergence()` — the KL between
  the softened distributions, the same maths as (c). (Its default string
  `"kl_divergence"` applies `kl_divergence` to the raw `logits / T`, without a
  softmax: less work, and the wrong loss.)

Targets: (c) ≤ (a) + (b), since a distillation step is a student step plus a
teacher forward pass; and (c) ≤ 1.05 × (k). Epochs are timed after one
warm-up epoch per model (graph tracing), repetitions are interleaved with a
rotating order, and medians are reported, because the machine is shared.

The student's test error alone and distilled is reported per seed, after the
same number of epochs (warm-up included).

Usage (from the repository root):

    python bench/bench_core.py                       # the documented run
    python bench/bench_core.py --train-size 5000 --epochs 1 --seeds 1 --no-write

Writes section "core" of docs/BENCHMARKS.md (unless --no-write) and prints
the figures as one JSON line at the end.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from keras import distillation as keras_distillation  # noqa: E402

import tf_distill  # noqa: E402
from tf_distill import architectures  # noqa: E402
from tf_distill import saving  # noqa: E402
from tf_distill.backend import keras  # noqa: E402
from tf_distill.backend import tf  # noqa: E402

MODES = ("student_alone", "teacher_inference", "tf_distill", "keras_distillation")
LABELS = {
    "student_alone": "(a) student alone",
    "teacher_inference": "(b) teacher inference pass",
    "tf_distill": "(c) tf_distill.Distiller",
    "keras_distillation": "(k) keras.distillation.Distiller",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=None, help="MNIST idx folder (default ../shared/data/mnist)"
    )
    parser.add_argument(
        "--train-size", type=int, default=20000, help="training images used (stratified subset)"
    )
    parser.add_argument(
        "--epochs", type=int, default=2, help="timed epochs per seed, after one warm-up epoch"
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of student seeds")
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.1,
        help="student_loss_weight: the weight of the labels' loss",
    )
    parser.add_argument(
        "--teacher-cache",
        default=None,
        help="a .keras file: load the teacher from it, or save it there",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write docs/BENCHMARKS.md")
    parser.add_argument(
        "--note", default=None, help="a sentence on the run's conditions, for the report"
    )
    return parser.parse_args(argv)


def log(message):
    print(message, flush=True)


def student_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_teacher(data, args):
    if args.teacher_cache and os.path.exists(args.teacher_cache):
        log(f"Loading the teacher from {args.teacher_cache}")
        return saving.load_model(args.teacher_cache), 0.0
    teacher = architectures.build(
        "cnn", data.input_shape, data.num_classes, size="large", seed=0, name="teacher"
    )
    teacher.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=student_loss(),
        metrics=["accuracy"],
    )
    with common.stopwatch() as clock:
        teacher.fit(
            data.as_tf_dataset("train", args.batch_size, shuffle=True, seed=0),
            epochs=args.teacher_epochs,
            verbose=0,
        )
    if args.teacher_cache:
        saving.save_model(teacher, args.teacher_cache)
    return teacher, clock["seconds"]


def test_error(model, data, batch_size):
    logits = model.predict(data.x_test, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) != data.y_test))


def run_seed(seed, teacher, data, args):
    """Trains (a), (c) and (k) from the same initial student, interleaved
    with (b); returns `(samples, errors)`."""
    keras.utils.set_random_seed(seed)
    initial = architectures.build(
        "cnn", data.input_shape, data.num_classes, size="small", seed=1000 + seed
    )
    initial_weights = initial.get_weights()

    def fresh_student(name):
        student = architectures.build(
            "cnn", data.input_shape, data.num_classes, size="small", name=name
        )
        student.set_weights(initial_weights)
        return student

    def optimizer():
        return keras.optimizers.Adam(args.learning_rate)

    def train_data():
        # One pipeline object per model, all with the same seed: each sees
        # the same sequence of shuffled batches.
        return data.as_tf_dataset("train", args.batch_size, shuffle=True, seed=seed)

    alone = fresh_student("student_alone")
    alone.compile(optimizer=optimizer(), loss=student_loss(), metrics=["accuracy"])

    ours = tf_distill.Distiller(
        teacher=teacher,
        student=fresh_student("student_tf_distill"),
        distillation_losses=tf_distill.LogitsDistillation(temperature=args.temperature),
        student_loss_weight=args.alpha,
    )
    ours.compile(optimizer=optimizer(), loss=student_loss(), metrics=["accuracy"])

    theirs = keras_distillation.Distiller(
        teacher=teacher,
        student=fresh_student("student_keras"),
        distillation_losses=keras_distillation.LogitsDistillation(
            temperature=args.temperature, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=args.alpha,
    )
    theirs.compile(optimizer=optimizer(), loss=student_loss(), metrics=["accuracy"])

    datasets = {
        "student_alone": train_data(),
        "tf_distill": train_data(),
        "keras_distillation": train_data(),
    }
    models = {"student_alone": alone, "tf_distill": ours, "keras_distillation": theirs}
    inference_data = data.as_tf_dataset("train", args.batch_size, shuffle=False)

    def fit_one_epoch(mode):
        def task():
            timer = common.EpochTimer()
            models[mode].fit(datasets[mode], epochs=1, verbose=0, callbacks=[timer])
            return timer.last()

        return task

    def teacher_pass():
        timer = common.PredictTimer()
        teacher.predict(inference_data, verbose=0, callbacks=[timer])
        return timer.last()

    tasks = {
        mode: fit_one_epoch(mode) for mode in ("student_alone", "tf_distill", "keras_distillation")
    }
    tasks["teacher_inference"] = teacher_pass
    tasks = {mode: tasks[mode] for mode in MODES}
    samples = common.interleave(
        tasks, args.epochs, warmup=1, log=lambda line: log(f"  seed {seed}: {line}")
    )
    errors = {
        "student_alone": test_error(alone, data, args.batch_size),
        "tf_distill": test_error(ours.student, data, args.batch_size),
        "keras_distillation": test_error(theirs.student, data, args.batch_size),
    }
    log(f"  seed {seed}: test errors {errors}")
    return samples, errors


def check_targets(samples):
    """The two targets on medians of one clock, and on paired ratios."""
    medians = {mode: statistics.median(samples[mode]) for mode in MODES}
    a, b = medians["student_alone"], medians["teacher_inference"]
    c, k = medians["tf_distill"], medians["keras_distillation"]
    paired_sum = [
        c_i / (a_i + b_i)
        for a_i, b_i, c_i in zip(
            samples["student_alone"], samples["teacher_inference"], samples["tf_distill"]
        )
    ]
    paired_k = [c_i / k_i for c_i, k_i in zip(samples["tf_distill"], samples["keras_distillation"])]
    return {
        "a_plus_b": a + b,
        "c_over_a_plus_b": c / (a + b),
        "paired_c_over_a_plus_b": statistics.median(paired_sum),
        "c_le_a_plus_b": c <= a + b,
        "c_over_k": c / k,
        "paired_c_over_k": statistics.median(paired_k),
        "c_le_1_05_k": c <= 1.05 * k,
    }


def _target_lines(times, targets, clock):
    verdict = {True: "met", False: "missed"}
    return [
        f"- {clock}: (c) ≤ (a) + (b): {times['tf_distill']['median']:.2f} s vs "
        f"{targets['a_plus_b']:.2f} s, ratio {targets['c_over_a_plus_b']:.3f} "
        f"(paired per repetition: median {targets['paired_c_over_a_plus_b']:.3f}): "
        f"**{verdict[targets['c_le_a_plus_b']]}**",
        f"- {clock}: (c) ≤ 1.05 × (k): {times['tf_distill']['median']:.2f} s vs "
        f"{times['keras_distillation']['median']:.2f} s, ratio {targets['c_over_k']:.3f} "
        f"(paired: median {targets['paired_c_over_k']:.3f}): "
        f"**{verdict[targets['c_le_1_05_k']]}**",
    ]


def report(results, args):
    wall, cpu = results["seconds_per_epoch"]["wall"], results["seconds_per_epoch"]["cpu"]
    rows = [
        {
            "variant": LABELS[mode],
            "median": wall[mode]["median"],
            "min": wall[mode]["min"],
            "max": wall[mode]["max"],
            "cpu": cpu[mode]["median"],
            "n": wall[mode]["n"],
        }
        for mode in MODES
    ]
    table = common.markdown_table(
        rows,
        [
            ("variant", "per epoch", "s"),
            ("median", "wall median (s)", ".2f"),
            ("min", "wall min (s)", ".2f"),
            ("max", "wall max (s)", ".2f"),
            ("cpu", "CPU median (s)", ".2f"),
            ("n", "samples", "d"),
        ],
    )
    target_lines = _target_lines(wall, results["targets"]["wall"], "wall") + _target_lines(
        cpu, results["targets"]["cpu"], "CPU"
    )
    error_modes = ("student_alone", "tf_distill", "keras_distillation")
    error_rows = [
        {
            "seed": str(seed),
            **{mode: 100 * results["test_errors"][mode][index] for mode in error_modes},
        }
        for index, seed in enumerate(results["seeds"])
    ]
    means = results["mean_test_errors"]
    error_rows.append({"seed": "mean", **{mode: 100 * means[mode] for mode in error_modes}})
    error_table = common.markdown_table(
        error_rows,
        [
            ("seed", "seed", "s"),
            ("student_alone", "student alone (%)", ".2f"),
            ("tf_distill", "distilled, tf_distill (%)", ".2f"),
            ("keras_distillation", "distilled, keras.distillation (%)", ".2f"),
        ],
    )
    data = results["data"]
    conditions = common.conditions_markdown(
        results["conditions"], load_after=results["load_after"], note=args.note
    )
    return f"""## Core: cost per epoch and test error (MNIST)

Teacher: CNN "large" ({results["teacher_parameters"]:,} parameters, trained
{args.teacher_epochs} epochs, test error {100 * results["teacher_test_error"]:.2f} %).
Student: CNN "small" ({results["student_parameters"]:,} parameters). Data:
{data["train"]:,} MNIST training images (stratified subset) and the full
{data["test"]:,}-image test set; batch {args.batch_size}, Adam
({args.learning_rate:g}), α = {args.alpha:g}, T = {args.temperature:g}.
For each of {len(results["seeds"])} seeds: one untimed warm-up epoch of each
variant, then {args.epochs} timed epochs of each, interleaved. Wall time is
what a user waits; CPU time (all threads of the process) measures the work
done and is less disturbed by other programs on a shared machine.

{table}

{chr(10).join(target_lines)}

On a loaded machine the medians of a few wall-time samples are noisy; the
paired ratios (each repetition runs the variants back to back) and the CPU
times are the steadier figures.

(k) uses `LogitsDistillation(loss=keras.losses.KLDivergence())`, the same
maths as (c); its default `"kl_divergence"` string would skip the softmax.

Test error after {args.epochs + 1} epochs, from the same initial student
weights and the same batches in each row:

{error_table}

{conditions}

Reproduce (from the repository root):

```sh
{results["command"]}
```
"""


def main(argv=None):
    args = parse_args(argv)
    conditions = common.machine_conditions()
    log(f"Conditions: {conditions}")
    data = common.load_mnist(train_size=args.train_size, seed=0, path=args.data)
    log(f"Data: {data}")
    teacher, teacher_seconds = train_teacher(data, args)
    teacher_error = test_error(teacher, data, args.batch_size)
    log(
        f"Teacher: {teacher.count_params():,} parameters, test error {teacher_error:.4f}, "
        f"trained in {teacher_seconds:.1f} s"
    )

    seeds = list(range(args.seeds))
    samples = {mode: [] for mode in MODES}
    errors = {mode: [] for mode in ("student_alone", "tf_distill", "keras_distillation")}
    for seed in seeds:
        seed_samples, seed_errors = run_seed(seed, teacher, data, args)
        for mode in MODES:
            samples[mode] += seed_samples[mode]
        for mode in errors:
            errors[mode].append(seed_errors[mode])

    clocks = ("wall", "cpu")
    by_clock = {
        clock: {mode: [sample[clock] for sample in samples[mode]] for mode in MODES}
        for clock in clocks
    }
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--note" in argv:  # a description of the run, not one of its parameters
        index = argv.index("--note")
        del argv[index : index + 2]
    argv = [arg for arg in argv if not arg.startswith("--note=")]
    results = {
        "command": common.command_line(argv=[sys.argv[0]] + argv),
        "conditions": conditions,
        "load_after": common.current_load(),
        "data": {"train": len(data.x_train), "test": len(data.x_test)},
        "teacher_parameters": int(teacher.count_params()),
        "student_parameters": int(
            architectures.build(
                "cnn", data.input_shape, data.num_classes, size="small"
            ).count_params()
        ),
        "teacher_test_error": teacher_error,
        "seeds": seeds,
        "samples": by_clock,
        "seconds_per_epoch": {
            clock: {mode: common.summarize(by_clock[clock][mode]) for mode in MODES}
            for clock in clocks
        },
        "targets": {clock: check_targets(by_clock[clock]) for clock in clocks},
        "test_errors": errors,
        "mean_test_errors": {mode: float(np.mean(values)) for mode, values in errors.items()},
    }
    markdown = report(results, args)
    common.publish("core", markdown, write=not args.no_write, log=log)
    common.print_results_json(results)
    return 0


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    sys.exit(main())
