"""Export benchmark: LiteRT quantization and pruning of a distilled student, on MNIST.

Part 1 (Keras 3): a CNN teacher (`architectures.build("cnn", size="large")`)
is trained, a CNN student (`size="medium"`) is distilled from it with
`tf_distill.Distiller` and Hinton's KD (`LogitsDistillation`), and the student
is exported with `tf_distill.export.export_litert` in the four modes
(`float32`, `dynamic`, `float16`, `int8`), int8 twice: with per-channel
weight scales (the default) and per-tensor ones (`per_channel=False`),
calibrated on 500 training images and verified on the 10,000 test images.
Targets:

- the int8 file is at most 0.30 × the float32 file;
- int8 top-1 agreement with Keras is at least 99 %, and its accuracy drop at
  most 0.5 point;
- int8 latency (batch 1, one thread) is at most the float32 LiteRT latency.

The int8 targets are judged on the better of the two int8 files (the one
meeting more targets; the smaller if tied), and both are shown. Latency is
taken twice: by `export_litert` (median of 200 calls, each model timed on its
own) and again with the five files interleaved, round after round, so that a
slow spell of the shared machine hits every mode; the target is judged on the
interleaved medians.

Part 2 (tf_keras, because TensorFlow Model Optimization only wraps tf_keras
models): the same script runs itself as a subprocess with
`TF_USE_LEGACY_KERAS=1` (`--part pruning`). It rebuilds the teacher of part 1
from its saved weights, then distills two students from the same initial
weights, on the same batches, with the same optimizer: a dense one, and one
pruned to 80 % overall sparsity while distilling (`compression.prune_student`
with its default `exclude="first_and_last"`, which keeps the first
convolution and the logits layer dense and prunes the others further, and
`pruning_callbacks()`; sparsity ramped from 0 at mid-first epoch to 80 % at
mid-third epoch, the last one and a half epochs fine-tuning at 80 %). Both
are exported to float32 `.tflite` and gzip'd. Targets:

- the pruned student's test accuracy within 0.5 point of the dense one's;
- its gzip'd `.tflite` at most 0.4 × the dense one's.

Usage (from the repository root):

    python bench/bench_export.py                      # the documented run
    python bench/bench_export.py --train-size 3000 --teacher-epochs 1 --epochs 2 --no-write

Part 2 alone (trains its own teacher unless given `--teacher-weights`):

    TF_USE_LEGACY_KERAS=1 python bench/bench_export.py --part pruning

Writes section "export" of docs/BENCHMARKS.md (unless --no-write), keeps the
models under runs/bench_export/, and prints PASS/FAIL per target and the
figures as one JSON line at the end.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tf_distill  # noqa: E402
from tf_distill import architectures  # noqa: E402
from tf_distill import export  # noqa: E402
from tf_distill import files as tf_distill_files  # noqa: E402
from tf_distill.backend import LEGACY_KERAS  # noqa: E402
from tf_distill.backend import keras  # noqa: E402
from tf_distill.backend import tf  # noqa: E402

# The targets.
INT8_MAX_SIZE_RATIO = 0.30
INT8_MIN_AGREEMENT = 0.99
INT8_MAX_DROP_POINTS = 0.5
TARGET_SPARSITY = 0.8
PRUNED_MAX_DROP_POINTS = 0.5
PRUNED_MAX_GZIP_RATIO = 0.4

# The exported files: (name, quantization, per_channel).
VARIANTS = (
    ("float32", "float32", True),
    ("dynamic", "dynamic", True),
    ("float16", "float16", True),
    ("int8", "int8", True),
    ("int8_per_tensor", "int8", False),
)
NAMES = tuple(name for name, _, _ in VARIANTS)
INT8_VARIANTS = ("int8", "int8_per_tensor")
INT8_LABELS = {"int8": "per-channel", "int8_per_tensor": "per-tensor"}
SCRIPT = os.path.relpath(os.path.abspath(__file__), common.REPO_ROOT)
DEFAULT_OUTPUT = os.path.join("runs", "bench_export")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part",
        choices=("all", "pruning"),
        default="all",
        help="'all': part 1 here, then part 2 in a tf_keras subprocess; "
        "'pruning': part 2 only (needs TF_USE_LEGACY_KERAS=1)",
    )
    parser.add_argument(
        "--data", default=None, help="MNIST idx folder (default ../shared/data/mnist)"
    )
    parser.add_argument(
        "--train-size", type=int, default=20000, help="training images used (stratified subset)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--teacher-size", default="large")
    parser.add_argument("--student-size", default="medium")
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument(
        "--teacher-learning-rate",
        type=float,
        default=0.005,
        help="initial Adam learning rate, cosine-decayed to 0",
    )
    parser.add_argument(
        "--epochs", type=int, default=4, help="distillation epochs of every student"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=0.01,
        help="students' initial Adam learning rate, cosine-decayed to 0",
    )
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.1,
        help="student_loss_weight: the weight of the labels' loss",
    )
    parser.add_argument("--calibration-examples", type=int, default=500)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=7,
        help="interleaved rounds of --latency-runs calls per mode",
    )
    # Half an epoch of distillation first, so that magnitudes mean something
    # when the first weights go; the last 1.5 epochs fine-tune at 80 %.
    parser.add_argument("--pruning-begin-epoch", type=float, default=0.5)
    parser.add_argument(
        "--pruning-end-epoch",
        type=float,
        default=2.5,
        help="epoch at which 80%% sparsity is reached; the rest fine-tunes",
    )
    parser.add_argument(
        "--pruning-exclude",
        default="first_and_last",
        help="prune_student's `exclude`: 'first_and_last', 'none' (prune every layer), "
        "or comma-separated layer names",
    )
    parser.add_argument(
        "--pruning-frequency", type=int, default=25, help="steps between pruning updates"
    )
    parser.add_argument(
        "--output-dir", default=DEFAULT_OUTPUT, help="where the models and the JSON results go"
    )
    parser.add_argument(
        "--teacher-weights",
        default=None,
        help="(--part pruning) .npz of the teacher's weights from part 1",
    )
    parser.add_argument(
        "--student-init",
        default=None,
        help="(--part pruning) .npz of the students' initial weights",
    )
    parser.add_argument(
        "--result-json", default=None, help="(--part pruning) where to write the figures"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write docs/BENCHMARKS.md")
    parser.add_argument(
        "--note", default=None, help="a sentence on the run's conditions, for the report"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.pruning_begin_epoch < args.pruning_end_epoch <= args.epochs:
        parser.error(
            "Expected 0 <= --pruning-begin-epoch < --pruning-end-epoch <= --epochs. "
            f"Received: {args.pruning_begin_epoch}, {args.pruning_end_epoch}, {args.epochs}"
        )
    return args


def log(message):
    print(message, flush=True)


# ----------------------------------------------------------------------
# Shared by both parts (each runs on its own Keras).


def load_data(args):
    try:
        return common.load_mnist(train_size=args.train_size, seed=0, path=args.data)
    except FileNotFoundError as error:
        sys.exit(f"bench_export: real MNIST is needed. {error}")


def steps_per_epoch(data, args):
    return math.ceil(len(data.x_train) / args.batch_size)


def train_data(data, args):
    # A new pipeline with the same seed gives every student the same batches.
    return data.as_tf_dataset("train", args.batch_size, shuffle=True, seed=0)


def test_accuracy(model, data):
    logits = model.predict(data.x_test, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == data.y_test))


def build_teacher(data, args):
    return architectures.build(
        "cnn", data.input_shape, data.num_classes, size=args.teacher_size, seed=0, name="teacher"
    )


def build_student(data, args, name="student"):
    return architectures.build(
        "cnn", data.input_shape, data.num_classes, size=args.student_size, seed=1, name=name
    )


def train_teacher(data, args):
    teacher = build_teacher(data, args)
    teacher.compile(
        optimizer=common.adam(
            args.teacher_learning_rate, args.teacher_epochs * steps_per_epoch(data, args)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    with common.stopwatch() as clock:
        teacher.fit(train_data(data, args), epochs=args.teacher_epochs, verbose=0)
    return teacher, clock["seconds"]


def distill(teacher, student, data, args, callbacks=None):
    """Distills into `student`; returns `(distiller, seconds)`."""
    distiller = tf_distill.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=tf_distill.LogitsDistillation(temperature=args.temperature),
        student_loss_weight=args.alpha,
    )
    distiller.compile(
        optimizer=common.adam(args.learning_rate, args.epochs * steps_per_epoch(data, args)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    with common.stopwatch() as clock:
        distiller.fit(train_data(data, args), epochs=args.epochs, verbose=0, callbacks=callbacks)
    return distiller, clock["seconds"]


def save_weights_npz(model, path):
    with tf_distill_files.atomic_path(path) as tmp:
        np.savez(tmp, *model.get_weights())


def load_weights_npz(model, path):
    """Sets `model`'s weights from `save_weights_npz`, checking every shape.

    The weights of a Keras 3 model go into the same architecture built with
    tf_keras: both list a Functional model's weights layer by layer, and
    BatchNormalization's as gamma, beta, moving mean, moving variance.
    """
    with np.load(path) as stored:
        weights = [stored[f"arr_{index}"] for index in range(len(stored.files))]
    expected = [tuple(weight.shape) for weight in model.get_weights()]
    received = [weight.shape for weight in weights]
    if expected != received:
        raise ValueError(
            f"The weights in {path} do not fit model {model.name!r}: expected shapes "
            f"{expected}, received {received}. Were they saved with other --teacher-size "
            "or --student-size options?"
        )
    model.set_weights(weights)


def buffer_bytes(tflite_path):
    """Bytes of constant data (weights, biases) in a `.tflite` flatbuffer.

    The rest of the file is the graph: operators, tensor names, shapes, and
    quantization parameters (per-channel scales and zero points in int8).
    """
    from ai_edge_litert import schema_py_generated as schema

    with open(tflite_path, "rb") as handle:
        content = handle.read()
    model = schema.Model.GetRootAs(content, 0)
    total = 0
    for index in range(model.BuffersLength()):
        buffer = model.Buffers(index)
        # Buffers over 2 GB live after the flatbuffer, described by `Size`.
        total += buffer.DataLength() or buffer.Size()
    return total


def verdict(passed):
    return "PASS" if passed else "FAIL"


# ----------------------------------------------------------------------
# Part 1: export of a distilled student (Keras 3).


def export_modes(student, data, args, output_dir):
    rng = np.random.default_rng(0)
    calibration = data.x_train[rng.permutation(len(data.x_train))[: args.calibration_examples]]
    reports, seconds = [], {}
    for name, mode, per_channel in VARIANTS:
        path = os.path.join(output_dir, f"student_{name}.tflite")
        with common.stopwatch() as clock:
            report = export.export_litert(
                student,
                path,
                quantization=mode,
                per_channel=per_channel,
                representative_data=calibration,
                validation_data=(data.x_test, data.y_test),
                # The benchmark checks its own, stricter targets below and
                # wants the figures even when a mode misses them.
                max_accuracy_drop=100.0,
                latency_runs=args.latency_runs,
                calibration_examples=args.calibration_examples,
            )
        seconds[name] = clock["seconds"]
        log(
            f"  {name}: {report.file_size_bytes:,} bytes, agreement "
            f"{100 * report.top1_agreement:.2f} %, drop {report.accuracy_drop_points:+.2f} "
            f"points, {report.latency_ms:.4f} ms ({clock['seconds']:.1f} s)"
        )
        reports.append(report)
    return reports, calibration, seconds


def interleaved_latency(paths, runs, rounds):
    """Per mode, the median over rounds of the median time of `runs` calls (ms).

    Each round times every model in turn (`common.interleave`), one thread
    and batch size 1, as `export_litert` does.
    """
    from ai_edge_litert.interpreter import Interpreter

    def timer(interpreter):
        def run():
            timings = []
            for _ in range(runs):
                start = time.perf_counter()
                interpreter.invoke()
                timings.append(time.perf_counter() - start)
            return 1000.0 * statistics.median(timings)

        return run

    tasks = {}
    for name, path in paths.items():
        interpreter = Interpreter(model_path=path, num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        tasks[name] = timer(interpreter)
    samples = common.interleave(tasks, rounds, warmup=1)
    return {name: common.summarize(values) for name, values in samples.items()}


SIZE_VARIANTS = ("float32",) + INT8_VARIANTS


def size_breakdown(models, calibration, output_dir):
    """float32 and int8 file sizes of several models, split into data and graph."""
    settings = {name: (mode, per_channel) for name, mode, per_channel in VARIANTS}
    rows = []
    for label, model, paths in models:
        if paths is None:
            paths = {}
            for name in SIZE_VARIANTS:
                mode, per_channel = settings[name]
                path = os.path.join(output_dir, f"size_{model.name}_{name}.tflite")
                tf_distill_files.atomic_write(
                    path,
                    export.convert_to_litert(
                        model,
                        quantization=mode,
                        per_channel=per_channel,
                        representative_data=calibration[:100],
                        calibration_examples=100,
                    ),
                )
                paths[name] = path
        row = {"model": label, "parameters": int(model.count_params())}
        for name in SIZE_VARIANTS:
            row[f"{name}_bytes"] = os.path.getsize(paths[name])
            row[f"{name}_data"] = buffer_bytes(paths[name])
            row[f"{name}_graph"] = row[f"{name}_bytes"] - row[f"{name}_data"]
        for name in INT8_VARIANTS:
            row[f"{name}_ratio"] = row[f"{name}_bytes"] / row["float32_bytes"]
        row["data_ratio"] = row["int8_data"] / row["float32_data"]
        rows.append(row)
    return rows


def run_pruning_subprocess(args, output_dir, teacher_weights, student_init):
    result_json = os.path.join(output_dir, "pruning_results.json")
    if os.path.exists(result_json):
        os.remove(result_json)
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--part",
        "pruning",
        "--train-size",
        str(args.train_size),
        "--batch-size",
        str(args.batch_size),
        "--teacher-size",
        str(args.teacher_size),
        "--student-size",
        str(args.student_size),
        "--epochs",
        str(args.epochs),
        "--learning-rate",
        str(args.learning_rate),
        "--temperature",
        str(args.temperature),
        "--alpha",
        str(args.alpha),
        "--pruning-begin-epoch",
        str(args.pruning_begin_epoch),
        "--pruning-end-epoch",
        str(args.pruning_end_epoch),
        "--pruning-frequency",
        str(args.pruning_frequency),
        "--pruning-exclude",
        args.pruning_exclude,
        "--latency-runs",
        str(args.latency_runs),
        "--output-dir",
        output_dir,
        "--teacher-weights",
        teacher_weights,
        "--student-init",
        student_init,
        "--result-json",
        result_json,
    ]
    if args.data:
        command += ["--data", args.data]
    # Set before the child imports TensorFlow: only then does it take effect.
    environment = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    log("Part 2 (pruning) in a tf_keras subprocess:")
    completed = subprocess.run(command, env=environment, check=False)
    if completed.returncode != 0:
        sys.exit(
            f"bench_export: the pruning part failed (exit code {completed.returncode}); "
            "docs/BENCHMARKS.md was not changed."
        )
    with open(result_json) as handle:
        return json.load(handle)


def run_all(args):
    if LEGACY_KERAS:
        sys.exit(
            "bench_export: part 1 runs on Keras 3. Unset TF_USE_LEGACY_KERAS (the "
            "script sets it for its tf_keras subprocess itself), or pass --part pruning."
        )
    started = time.perf_counter()
    conditions = common.machine_conditions()
    log(f"Conditions: {conditions}")
    output_dir = os.path.abspath(args.output_dir)
    os.makedirs(output_dir, exist_ok=True)
    data = load_data(args)
    log(f"Data: {data}")
    keras.utils.set_random_seed(0)

    teacher, teacher_seconds = train_teacher(data, args)
    teacher_accuracy = test_accuracy(teacher, data)
    log(
        f"Teacher: {teacher.count_params():,} parameters, test accuracy "
        f"{100 * teacher_accuracy:.2f} %, trained in {teacher_seconds:.1f} s"
    )
    teacher_weights = os.path.join(output_dir, "teacher.weights.npz")
    save_weights_npz(teacher, teacher_weights)

    student = build_student(data, args)
    student_init = os.path.join(output_dir, "student_init.weights.npz")
    save_weights_npz(student, student_init)
    distiller, student_seconds = distill(teacher, student, data, args)
    student_accuracy = test_accuracy(distiller.student, data)
    log(
        f"Student: {student.count_params():,} parameters, test accuracy "
        f"{100 * student_accuracy:.2f} %, distilled in {student_seconds:.1f} s"
    )

    log("Exporting the student:")
    reports, calibration, export_seconds = export_modes(distiller.student, data, args, output_dir)
    by_name = dict(zip(NAMES, reports))
    latency = interleaved_latency(
        {name: by_name[name].path for name in NAMES}, args.latency_runs, args.latency_rounds
    )
    log(
        "Interleaved latency (ms): "
        + ", ".join(f"{name} {latency[name]['median']:.4f}" for name in NAMES)
    )
    small = architectures.build(
        "cnn", data.input_shape, data.num_classes, size="small", seed=2, name="cnn_small"
    )
    sizes = size_breakdown(
        [
            ('CNN "small" (untrained)', small, None),
            (
                f'student, CNN "{args.student_size}"',
                distiller.student,
                {name: by_name[name].path for name in SIZE_VARIANTS},
            ),
            (f'teacher, CNN "{args.teacher_size}"', teacher, None),
        ],
        calibration,
        output_dir,
    )
    part1_seconds = time.perf_counter() - started

    pruning = run_pruning_subprocess(args, output_dir, teacher_weights, student_init)

    int8_targets = {
        name: judge_int8(by_name[name], by_name["float32"], latency, name) for name in INT8_VARIANTS
    }
    # The better int8 file: more targets met, then the smaller.
    int8_choice = max(
        INT8_VARIANTS,
        key=lambda name: (
            sum(target["passed"] for target in int8_targets[name].values()),
            -by_name[name].file_size_bytes,
        ),
    )
    targets = {
        **int8_targets[int8_choice],
        "pruned_accuracy": {
            "value": pruning["drop_points"],
            "limit": PRUNED_MAX_DROP_POINTS,
            "passed": pruning["drop_points"] <= PRUNED_MAX_DROP_POINTS,
        },
        "pruned_gzip": {
            "value": pruning["gzip_ratio"],
            "limit": PRUNED_MAX_GZIP_RATIO,
            "passed": pruning["gzip_ratio"] <= PRUNED_MAX_GZIP_RATIO,
        },
    }

    results = {
        "command": common.command_line(
            argv=[sys.argv[0]] + list(sys.argv[1:] if args.argv is None else args.argv),
            script=SCRIPT,
        ),
        "conditions": conditions,
        "load_after": common.current_load(),
        "data": {"train": len(data.x_train), "test": len(data.x_test)},
        "teacher": {
            "parameters": int(teacher.count_params()),
            "test_accuracy": teacher_accuracy,
            "seconds": teacher_seconds,
        },
        "student": {
            "parameters": int(student.count_params()),
            "test_accuracy": student_accuracy,
            "seconds": student_seconds,
        },
        "exports": [report.to_dict() for report in reports],
        "export_seconds": export_seconds,
        "interleaved_latency_ms": latency,
        "sizes": sizes,
        "pruning": pruning,
        "int8_choice": int8_choice,
        "int8_targets": int8_targets,
        "targets": targets,
        "seconds": {"part1": part1_seconds, "total": time.perf_counter() - started},
    }
    tf_distill_files.atomic_write_json(os.path.join(output_dir, "results.json"), results)

    log("\nTargets:")
    for line in target_lines(results):
        log("  " + line)
    markdown = report_markdown(results, reports, args)
    common.publish("export", markdown, write=not args.no_write, log=log)
    common.print_results_json(results)
    return 0


def judge_int8(int8, float32, latency, name):
    """The four int8 targets for one int8 export (`name` in `INT8_VARIANTS`)."""
    targets = {
        "int8_size": {
            "value": int8.file_size_bytes / float32.file_size_bytes,
            "limit": INT8_MAX_SIZE_RATIO,
        },
        "int8_agreement": {"value": int8.top1_agreement, "limit": INT8_MIN_AGREEMENT},
        "int8_drop": {"value": int8.accuracy_drop_points, "limit": INT8_MAX_DROP_POINTS},
        "int8_latency": {
            "value": latency[name]["median"] / latency["float32"]["median"],
            "limit": 1.0,
            "export_litert_ratio": int8.latency_ms / float32.latency_ms,
        },
    }
    for target_name, target in targets.items():
        if target_name == "int8_agreement":
            target["passed"] = target["value"] >= target["limit"]
        else:
            target["passed"] = target["value"] <= target["limit"]
    return targets


# ----------------------------------------------------------------------
# Part 2: pruning while distilling (tf_keras subprocess).


def run_pruning(args):
    if not LEGACY_KERAS:
        sys.exit(
            "bench_export: --part pruning uses TensorFlow Model Optimization, which needs "
            "tf_keras. Run it as `TF_USE_LEGACY_KERAS=1 python bench/bench_export.py "
            "--part pruning`."
        )
    from tf_distill import compression

    started = time.perf_counter()
    output_dir = os.path.join(os.path.abspath(args.output_dir), "pruning")
    os.makedirs(output_dir, exist_ok=True)
    data = load_data(args)
    keras.utils.set_random_seed(0)
    steps = steps_per_epoch(data, args)

    if args.teacher_weights:
        teacher = build_teacher(data, args)
        load_weights_npz(teacher, args.teacher_weights)
        teacher_seconds = 0.0
    else:
        teacher, teacher_seconds = train_teacher(data, args)
    teacher_accuracy = test_accuracy(teacher, data)
    log(
        f"  teacher (tf_keras{', weights of part 1' if args.teacher_weights else ''}): "
        f"test accuracy {100 * teacher_accuracy:.2f} %"
    )

    initial = build_student(data, args)
    if args.student_init:
        load_weights_npz(initial, args.student_init)
    initial_weights = initial.get_weights()

    def fresh_student(name):
        student = build_student(data, args, name=name)
        student.set_weights(initial_weights)
        return student

    dense_distiller, dense_seconds = distill(teacher, fresh_student("dense"), data, args)
    dense = dense_distiller.student
    dense_accuracy = test_accuracy(dense, data)
    log(f"  dense student: test accuracy {100 * dense_accuracy:.2f} % ({dense_seconds:.1f} s)")

    begin_step = int(round(args.pruning_begin_epoch * steps))
    end_step = int(round(args.pruning_end_epoch * steps))
    wrapped = compression.prune_student(
        fresh_student("pruned"),
        target_sparsity=TARGET_SPARSITY,
        begin_step=begin_step,
        end_step=end_step,
        frequency=min(args.pruning_frequency, end_step - begin_step),
        exclude=pruning_exclude(args),
    )
    kept_dense = sorted(
        layer.name
        for layer in wrapped.layers
        if getattr(layer, "kernel", None) is not None
        and type(layer).__name__ != "PruneLowMagnitude"
    )
    pruned_distiller, pruned_seconds = distill(
        teacher, wrapped, data, args, callbacks=compression.pruning_callbacks()
    )
    pruned = compression.strip_pruning(pruned_distiller.student)
    pruned_accuracy = test_accuracy(pruned, data)
    pruned_sparsity = compression.sparsity(pruned)
    log(
        f"  pruned student: test accuracy {100 * pruned_accuracy:.2f} %, sparsity "
        f"{100 * pruned_sparsity:.1f} % ({pruned_seconds:.1f} s)"
    )

    files = {}
    for name, model in (("dense", dense), ("pruned", pruned)):
        path = os.path.join(output_dir, f"{name}_float32.tflite")
        report = export.export_litert(
            model,
            path,
            quantization="float32",
            validation_data=(data.x_test, data.y_test),
            latency_runs=args.latency_runs,
        )
        with open(path, "rb") as handle:
            zero_bytes = float(np.mean(np.frombuffer(handle.read(), np.uint8) == 0))
        files[name] = {
            "path": path,
            "bytes": report.file_size_bytes,
            "data_bytes": buffer_bytes(path),
            "gzip_bytes": compression.gzipped_size(path),
            "litert_accuracy": report.litert_accuracy,
            "latency_ms": report.latency_ms,
            "zero_byte_fraction": zero_bytes,
        }
        log(f"  {name}: {files[name]['bytes']:,} bytes, gzip'd {files[name]['gzip_bytes']:,}")

    results = {
        "teacher_accuracy": teacher_accuracy,
        "teacher_seconds": teacher_seconds,
        "teacher_from_part1": bool(args.teacher_weights),
        "dense_accuracy": dense_accuracy,
        "pruned_accuracy": pruned_accuracy,
        "drop_points": 100.0 * (dense_accuracy - pruned_accuracy),
        "sparsity": pruned_sparsity,
        "dense_sparsity": compression.sparsity(dense),
        "layers": kernel_sparsity(pruned),
        "exclude": args.pruning_exclude,
        "kept_dense": kept_dense,
        "schedule": {
            "begin_step": begin_step,
            "end_step": end_step,
            "total_steps": args.epochs * steps,
            "frequency": min(args.pruning_frequency, end_step - begin_step),
        },
        "dense_seconds": dense_seconds,
        "pruned_seconds": pruned_seconds,
        "files": files,
        "gzip_ratio": files["pruned"]["gzip_bytes"] / files["dense"]["gzip_bytes"],
        "seconds": time.perf_counter() - started,
        "keras": keras.__version__,
    }
    if args.result_json:
        tf_distill_files.atomic_write_json(args.result_json, results)
    else:
        print(json.dumps(results, default=float))
    return 0


def pruning_exclude(args):
    """`--pruning-exclude` as `prune_student`'s `exclude`."""
    if args.pruning_exclude == "first_and_last":
        return "first_and_last"
    if args.pruning_exclude == "none":
        return ()
    return [name.strip() for name in args.pruning_exclude.split(",") if name.strip()]


def kernel_sparsity(model):
    """`[{"layer", "weights", "kept", "units", "sparsity"}]` per layer with a kernel."""
    rows = []
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        values = np.asarray(kernel.numpy())
        kept = int(np.count_nonzero(values))
        rows.append(
            {
                "layer": layer.name,
                "weights": int(values.size),
                "kept": kept,
                # Output channels of a convolution, units of a Dense layer.
                "units": int(values.shape[-1]),
                "sparsity": 1.0 - kept / values.size,
            }
        )
    return rows


# ----------------------------------------------------------------------
# Reporting.


def variant_label(name):
    """`int8` per-tensor, as `export.reports_table` writes it."""
    return "`int8` per-tensor" if name == "int8_per_tensor" else f"`{name}`"


def target_lines(results):
    targets, pruning = results["targets"], results["pruning"]
    latency = results["interleaved_latency_ms"]
    choice = results["int8_choice"]
    other = next(name for name in INT8_VARIANTS if name != choice)
    other_targets = results["int8_targets"][other]

    def versus(key, text):
        # The other int8 file's figure, so both are in view.
        return (
            f"{INT8_LABELS[choice]}; {INT8_LABELS[other]}: {text(other_targets[key]['value'])}, "
            f"{verdict(other_targets[key]['passed'])}"
        )

    return [
        f"int8 file ≤ {INT8_MAX_SIZE_RATIO:.2f} × float32 file: "
        f"{targets['int8_size']['value']:.3f} ({versus('int8_size', '{:.3f}'.format)}) — "
        f"{verdict(targets['int8_size']['passed'])}",
        f"int8 top-1 agreement ≥ {100 * INT8_MIN_AGREEMENT:.0f} %: "
        f"{100 * targets['int8_agreement']['value']:.2f} % "
        f"({versus('int8_agreement', lambda value: f'{100 * value:.2f} %')}) — "
        f"{verdict(targets['int8_agreement']['passed'])}",
        f"int8 accuracy drop ≤ {INT8_MAX_DROP_POINTS} point: "
        f"{targets['int8_drop']['value']:+.2f} ({versus('int8_drop', '{:+.2f}'.format)}) — "
        f"{verdict(targets['int8_drop']['passed'])}",
        f"int8 latency ≤ float32 LiteRT latency: {latency[choice]['median']:.4f} ms vs "
        f"{latency['float32']['median']:.4f} ms, ratio {targets['int8_latency']['value']:.3f} "
        f"({versus('int8_latency', '{:.3f}'.format)}; export_litert's own timings: "
        f"{targets['int8_latency']['export_litert_ratio']:.3f}) — "
        f"{verdict(targets['int8_latency']['passed'])}",
        f"pruned ({100 * pruning['sparsity']:.1f} % sparse) within {PRUNED_MAX_DROP_POINTS} "
        f"point of dense: {100 * pruning['pruned_accuracy']:.2f} % vs "
        f"{100 * pruning['dense_accuracy']:.2f} %, drop {pruning['drop_points']:+.2f} — "
        f"{verdict(targets['pruned_accuracy']['passed'])}",
        f"pruned gzip'd .tflite ≤ {PRUNED_MAX_GZIP_RATIO} × dense: "
        f"{pruning['files']['pruned']['gzip_bytes']:,} vs "
        f"{pruning['files']['dense']['gzip_bytes']:,} bytes, ratio "
        f"{pruning['gzip_ratio']:.3f} — {verdict(targets['pruned_gzip']['passed'])}",
    ]


def int8_notes(results):
    """Why the int8 file has the size it has, and what per-tensor scales cost."""
    by_name = dict(zip(NAMES, results["exports"]))
    per_channel, per_tensor = by_name["int8"], by_name["int8_per_tensor"]
    student_row = results["sizes"][1]
    saved = per_channel["file_size_bytes"] - per_tensor["file_size_bytes"]
    choice = results["int8_choice"]
    passed = results["targets"]["int8_size"]["passed"]
    notes = [
        f"**int8, per-channel or per-tensor.** The weights shrink to "
        f"{student_row['data_ratio']:.3f} × (int8 kernels, int32 biases), but a "
        f"{student_row['parameters']:,}-parameter model is small enough for the rest of the "
        f"file to matter: {student_row['float32_graph']:,} bytes in float32 (graph, tensor "
        f"names), {student_row['int8_graph']:,} bytes in per-channel int8, which stores a "
        "float32 scale and an int64 zero point per output channel for every kernel and bias "
        "(and quantization parameters for every activation), "
        f"{student_row['int8_per_tensor_graph']:,} bytes in per-tensor int8 "
        f"(`export_litert(..., per_channel=False)`): {saved:,} bytes less. One scale for "
        "all the filters of a convolution (with its batch normalization folded in) can "
        "cost accuracy; here per-tensor int8 is "
        f"{per_tensor['accuracy_drop_points']:+.2f} points below Keras with "
        f"{100 * per_tensor['top1_agreement']:.2f} % top-1 agreement, per-channel int8 "
        f"{per_channel['accuracy_drop_points']:+.2f} points with "
        f"{100 * per_channel['top1_agreement']:.2f} %. "
        f"The targets are judged on the {INT8_LABELS[choice]} file. The saving matters less "
        "as models grow (table above)."
    ]
    if not passed:
        passing = [
            row["model"]
            for row in results["sizes"]
            if min(row[f"{name}_ratio"] for name in INT8_VARIANTS) <= INT8_MAX_SIZE_RATIO
        ]
        notes.append(
            f"**The int8 size target is missed** ({results['targets']['int8_size']['value']:.3f}"
            f" > {INT8_MAX_SIZE_RATIO})"
            + (f"; it is met by: {', '.join(passing)}." if passing else ".")
        )
    return notes


def report_markdown(results, reports, args):
    latency = results["interleaved_latency_ms"]
    latency_table = common.markdown_table(
        [{"mode": variant_label(name), **latency[name]} for name in NAMES],
        [
            ("mode", "Quantization", "s"),
            ("median", "median (ms)", ".4f"),
            ("min", "min (ms)", ".4f"),
            ("max", "max (ms)", ".4f"),
            ("n", "rounds", "d"),
        ],
    )
    size_table = common.markdown_table(
        [
            {
                **row,
                "int8_ratio_text": f"{row['int8_ratio']:.3f}",
                "int8_per_tensor_ratio_text": f"{row['int8_per_tensor_ratio']:.3f}",
                "data_ratio_text": f"{row['data_ratio']:.3f}",
            }
            for row in results["sizes"]
        ],
        [
            ("model", "Model", "s"),
            ("parameters", "Parameters", ","),
            ("float32_bytes", "float32 file", ","),
            ("int8_bytes", "int8 file", ","),
            ("int8_ratio_text", "ratio", "s"),
            ("int8_per_tensor_bytes", "int8 per-tensor file", ","),
            ("int8_per_tensor_ratio_text", "ratio", "s"),
            ("float32_data", "float32 data", ","),
            ("int8_data", "int8 data", ","),
            ("data_ratio_text", "data ratio", "s"),
            ("float32_graph", "float32 rest", ","),
            ("int8_graph", "int8 rest", ","),
            ("int8_per_tensor_graph", "int8 per-tensor rest", ","),
        ],
    )
    pruning = results["pruning"]
    files = pruning["files"]
    pruning_table = common.markdown_table(
        [
            {
                "student": "dense",
                "accuracy": 100 * pruning["dense_accuracy"],
                "sparsity": 100 * pruning["dense_sparsity"],
                **files["dense"],
            },
            {
                "student": "pruned to 80 %",
                "accuracy": 100 * pruning["pruned_accuracy"],
                "sparsity": 100 * pruning["sparsity"],
                **files["pruned"],
            },
        ],
        [
            ("student", "Student (float32 .tflite)", "s"),
            ("accuracy", "test acc. (%)", ".2f"),
            ("sparsity", "kernel sparsity (%)", ".1f"),
            ("bytes", "file (bytes)", ","),
            ("gzip_bytes", "gzip'd (bytes)", ","),
            ("latency_ms", "latency (ms)", ".4f"),
        ],
    )
    kept_dense = set(pruning["kept_dense"])
    layer_table = common.markdown_table(
        [
            {
                **row,
                "sparsity": 100 * row["sparsity"],
                "policy": "kept dense" if row["layer"] in kept_dense else "pruned",
            }
            for row in pruning["layers"]
        ],
        [
            ("layer", "Pruned student's layer", "s"),
            ("policy", "policy", "s"),
            ("weights", "kernel weights", ","),
            ("kept", "non-zero", ","),
            ("sparsity", "sparsity (%)", ".1f"),
        ],
    )
    targets = results["targets"]
    notes = int8_notes(results)
    if not targets["int8_latency"]["passed"]:
        notes.append("**The int8 latency target is missed** on this run (see the timings).")
    pruned_rows = [row for row in pruning["layers"] if row["layer"] not in kept_dense]
    layer_sparsity = max(row["sparsity"] for row in pruned_rows) if pruned_rows else 0.0
    if kept_dense:
        exclusion = (
            f'`prune_student`\'s default `exclude="first_and_last"` kept '
            f"{' and '.join(f'`{name}`' for name in pruning['kept_dense'])} dense "
            f"({sum(row['weights'] for row in pruning['layers'] if row['layer'] in kept_dense):,}"
            f" of {sum(row['weights'] for row in pruning['layers']):,} kernel weights) and "
            f"pruned the other layers to {100 * layer_sparsity:.1f} %, so that "
            f"{100 * pruning['sparsity']:.1f} % of all kernel weights are zero."
            if pruning["exclude"] == "first_and_last"
            else f"`exclude={pruning['exclude']!r}` kept {', '.join(pruning['kept_dense'])} dense."
        )
    else:
        exclusion = "Every layer was pruned to the same sparsity (`exclude=()`)."
    if targets["pruned_accuracy"]["passed"]:
        notes.append(
            f"**Pruning.** {exclusion} The pruned student is "
            f"{pruning['drop_points']:.2f} points below the dense one (at most "
            f"{PRUNED_MAX_DROP_POINTS} allowed)."
        )
    else:
        notes.append(
            f"**The pruned student misses the accuracy target** ({pruning['drop_points']:.2f} "
            f"points below the dense one, for at most {PRUNED_MAX_DROP_POINTS}). {exclusion} "
            f"A student of {results['student']['parameters']:,} parameters has little "
            "redundancy to lose."
        )
    if not targets["pruned_gzip"]["passed"]:
        notes.append("**The pruned student's gzip'd file misses the size target.**")
    data = results["data"]
    schedule = pruning["schedule"]
    steps = schedule["total_steps"] // args.epochs
    conditions = common.conditions_markdown(
        results["conditions"],
        load_after=results["load_after"],
        note=("2 CPU cores shared with other jobs. " + (args.note or "")).strip(),
    )
    seconds = results["seconds"]
    return f"""## Export: LiteRT quantization and pruning of a distilled student (MNIST)

Teacher: CNN "{args.teacher_size}" ({results["teacher"]["parameters"]:,} parameters,
{args.teacher_epochs} epochs, Adam {args.teacher_learning_rate:g} cosine-decayed to 0,
test accuracy {100 * results["teacher"]["test_accuracy"]:.2f} %). Student: CNN
"{args.student_size}" ({results["student"]["parameters"]:,} parameters) distilled
{args.epochs} epochs with `tf_distill.Distiller` and `LogitsDistillation`
(T = {args.temperature:g}, α = {args.alpha:g}, Adam {args.learning_rate:g} cosine-decayed
to 0), test accuracy {100 * results["student"]["test_accuracy"]:.2f} %. Data:
{data["train"]:,} MNIST training images (stratified subset), batch {args.batch_size};
every accuracy is on the full {data["test"]:,}-image test set.

### Part 1: `export_litert` in each mode (Keras 3)

Calibration: {args.calibration_examples} random training images. Latency: median of
{args.latency_runs} interpreter calls, batch 1, one thread, float32 input and output.
int8 twice: per-channel weight scales (the default) and per-tensor
(`per_channel=False`).

{export.reports_table(reports).strip()}

Latency again, the five files interleaved: {args.latency_rounds} rounds, each timing
{args.latency_runs} calls of every file in turn (rotating order); per round the median
call, then the median over rounds:

{latency_table}

Where the bytes go (`.tflite` constant data, i.e. weights and biases, and the rest:
graph, tensor names, quantization parameters); the student's files are those above,
the other models were converted (not verified) for comparison:

{size_table}

### Part 2: pruning to 80 % while distilling (tf_keras, `TF_USE_LEGACY_KERAS=1`)

The teacher of part 1 (its weights loaded into the same architecture under tf_keras,
test accuracy {100 * pruning["teacher_accuracy"]:.2f} %) distills two students from the
same initial weights, on the same batches, {args.epochs} epochs each with the optimizer
above: a dense one, and one wrapped by
`compression.prune_student(target_sparsity=0.8, exclude={pruning["exclude"]!r})`
and trained with `pruning_callbacks()`: overall sparsity ramped from 0 at step
{schedule["begin_step"]} to 80 % at step {schedule["end_step"]} (cubic schedule, updated every
{schedule["frequency"]} steps), then fine-tuned at 80 % until step {schedule["total_steps"]}
({steps} steps per epoch); then `strip_pruning`. Both exported with
`export_litert(quantization="float32")`; gzip level 9 (`compression.gzipped_size`).

{pruning_table}

{layer_table}

### Targets

{chr(10).join("- " + line for line in target_lines(results))}

{(chr(10) * 2).join(notes)}

{conditions} Wall time: {seconds["total"]:.0f} s in all (part 1 {seconds["part1"]:.0f} s,
part 2 {pruning["seconds"]:.0f} s).

Reproduce (from the repository root; the models are kept under `{args.output_dir}/`):

```sh
{results["command"]}
```
"""


def main(argv=None):
    args = parse_args(argv)
    args.argv = argv
    if args.part == "pruning":
        return run_pruning(args)
    return run_all(args)


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    sys.exit(main())
