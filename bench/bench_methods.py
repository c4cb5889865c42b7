"""Methods benchmark: ten ways to train one small CNN on MNIST, and two
timings against `keras.distillation`.

One CNN teacher (`architectures.build("cnn", size="large")`) is trained once
and cached; then, for each seed, the same small CNN student (same initial
weights, same shuffled batches) is trained by every method below, the
methods' epochs interleaved. Each method is `Distiller(...,
student_loss_weight=α)`, so its loss is

    α · CE(y, student) + (1 − α) · Σᵢ wᵢ · Lᵢ(teacher, student)

with the weights the method's paper or reference code uses (converted to
tf_distill's per-example normalization where it differs; see `METHODS`):

- student alone: CE only;
- KD (Hinton et al. 2015): α = 0.1, T = 4;
- FitNets (Romero et al. 2015): hint on `block2_relu` through a learned
  1×1-convolution adapter, weight 100 (RepDistiller);
- attention transfer (Zagoruyko & Komodakis 2017): `block3_relu`, the
  paper's β = 1000 / 2 divided by the attention map's size (7 × 7);
- RKD (Park et al. 2019): distance 25 + angle 50 on `features`, the
  penultimate embedding;
- SP (Tung & Mori 2019): `block3_relu`, γ = 3000;
- PKT (Passalis & Tefas 2018): `features`, RepDistiller's β = 30,000 at
  batch 64 on a loss 64 times smaller than tf_distill's: 30,000 / 64;
- DKD (Zhao et al. 2022): α = 1, β = 8, T = 4, CE weight 1, no warm-up;
- DIST (Huang et al. 2022): β = γ = 1, T = 4, CE weight 1;
- KD with logit standardization (Sun et al. 2024): the authors' CIFAR-100
  setting, T = 2, CE 0.1 + KD 9.

"CE + β · L" is written α = 0.5, w = β: the Distiller's total is then half
the paper's, which Adam's step does not see.

Alongside, in the same interleaved rounds and from the same initial weights:

- (1) logits only: tf_distill's KD row against `keras.distillation` with
  `LogitsDistillation(temperature=4, loss=keras.losses.KLDivergence())`,
  the same maths (its default `"kl_divergence"` string skips the softmax).
  Target: ours ≤ 1.0 × theirs.
- (2) named-layer feature distillation: `FeatureDistillation("mse",
  "logits", "logits")` in both libraries, α = 0.5. The large teacher and
  the small student share no other layer shape. `keras.distillation` runs
  the student twice per step when a layer is named (once for the
  predictions, once through its feature extractor); tf_distill taps every
  layer in one pass. Target: theirs ≥ 1.5 × ours.

The gain of (2) is one student forward and backward pass out of a step that
also runs the teacher, so it grows with the student's share of the cost.
A last part times (2) again with a student as large as the teacher, tapping
`features` (same width in both), on a shorter epoch.

Epochs are timed with `common.EpochTimer` (wall and CPU time) after an
untimed warm-up of two steps per model that traces its graphs; the state the
warm-up changed is then restored. Medians over all seeds' epochs are
reported.

Usage (from the repository root):

    python bench/bench_methods.py                  # the documented run
    python bench/bench_methods.py --train-size 2560 --epochs 1 --seeds 1 \\
        --larger-train-size 0 --no-write           # a smoke test

Writes section "methods" of docs/BENCHMARKS.md (unless --no-write) and prints
the figures as one JSON line at the end.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import quality_methods  # noqa: E402
from keras import distillation as keras_distillation  # noqa: E402

import tf_distill  # noqa: E402
from tf_distill import architectures  # noqa: E402
from tf_distill import losses  # noqa: E402
from tf_distill import saving  # noqa: E402
from tf_distill.backend import keras  # noqa: E402
from tf_distill.backend import tf  # noqa: E402
from tf_distill.comparison import mean_std  # noqa: E402
from tf_distill.comparison import paired  # noqa: E402

TEACHER_SIZE = "large"
STUDENT_SIZE = "small"
WARMUP_STEPS = 2
TRAIN_ERROR_IMAGES = 2048
# RepDistiller's PKT weight is tuned for batch 64 and a loss averaged over
# all b² pairs; tf_distill's PKT averages over the b rows (see losses.pkt).
REPDISTILLER_PKT_WEIGHT = 30000.0
REPDISTILLER_BATCH = 64


@dataclasses.dataclass
class Method:
    """One row of the table: how the student is trained.

    Attributes:
        key: Short name used in logs and JSON.
        label: The row's name.
        alpha: `student_loss_weight`; `None` for the student alone.
        make_losses: `fn(attention_size) -> [DistillationLoss]`.
        weights: `fn(attention_size) -> [w]`, one per loss.
        setting: The row's settings, as printed in the table.
    """

    key: str
    label: str
    alpha: float | None = None
    make_losses: object = None
    weights: object = None
    setting: str = ""


def _attention_weight(attention_size):
    # Zagoruyko & Komodakis (2017), §3: β/2 · ‖·‖₂ per example with
    # β = 1000 divided by the number of elements of the attention map.
    return 1000.0 / 2.0 / attention_size


METHODS = [
    Method("student", "student alone", setting="CE only"),
    Method(
        "kd",
        "KD",
        alpha=0.1,
        make_losses=lambda _: [losses.LogitsDistillation(temperature=4.0)],
        weights=lambda _: [1.0],
        setting="`kd` T = 4; α = 0.1, w = 1",
    ),
    Method(
        "fitnets",
        "FitNets",
        alpha=0.5,
        make_losses=lambda _: [losses.FitNets("block2_relu", "block2_relu")],
        weights=lambda _: [100.0],
        setting="`fitnets` on block2_relu (14×14, 1×1-conv adapter 16→96 ch.); α = 0.5, w = 100",
    ),
    Method(
        "attention_transfer",
        "attention transfer",
        alpha=0.5,
        make_losses=lambda _: [losses.AttentionTransfer(2.0, "block3_relu", "block3_relu")],
        weights=lambda size: [_attention_weight(size)],
        setting="`attention_transfer` p = 2 on block3_relu (7×7); α = 0.5, w = 500/49 = 10.2",
    ),
    Method(
        "rkd",
        "RKD",
        alpha=0.5,
        make_losses=lambda _: [
            losses.RKDDistance("features", "features"),
            losses.RKDAngle("features", "features"),
        ],
        weights=lambda _: [25.0, 50.0],
        setting="`rkd_distance` + `rkd_angle` on features (192 / 32); α = 0.5, w = 25 + 50",
    ),
    Method(
        "sp",
        "SP",
        alpha=0.5,
        make_losses=lambda _: [losses.SimilarityPreserving("block3_relu", "block3_relu")],
        weights=lambda _: [3000.0],
        setting="`similarity_preserving` on block3_relu; α = 0.5, w = 3000",
    ),
    Method(
        "pkt",
        "PKT",
        alpha=0.5,
        make_losses=lambda _: [losses.PKT("features", "features")],
        weights=lambda _: [REPDISTILLER_PKT_WEIGHT / REPDISTILLER_BATCH],
        setting="`pkt` on features; α = 0.5, w = 30000/64 = 469",
    ),
    Method(
        "dkd",
        "DKD",
        alpha=0.5,
        make_losses=lambda _: [losses.DecoupledKD(alpha=1.0, beta=8.0, temperature=4.0)],
        weights=lambda _: [1.0],
        setting="`dkd` α = 1, β = 8, T = 4, no warm-up; α = 0.5, w = 1",
    ),
    Method(
        "dist",
        "DIST",
        alpha=0.5,
        make_losses=lambda _: [losses.DIST(beta=1.0, gamma=1.0, temperature=4.0)],
        weights=lambda _: [1.0],
        setting="`dist` β = γ = 1, T = 4; α = 0.5, w = 1",
    ),
    Method(
        "kd_standardized",
        "KD + logit standardization",
        alpha=0.1,
        make_losses=lambda _: [losses.LogitsDistillation(temperature=2.0, standardize=True)],
        weights=lambda _: [10.0],
        setting="`kd` standardize=True, T = 2; α = 0.1, w = 10 (CE 0.1 + KD 9)",
    ),
]

# The side-by-side variants, trained in the same rounds as the methods.
COMPARISON_KEYS = ("keras_kd", "feature_ours", "feature_keras")
COMPARISON_LABELS = {
    "kd": "tf_distill, KD (the KD row)",
    "keras_kd": "keras.distillation, KD (`KLDivergence()`)",
    "feature_ours": "tf_distill, FeatureDistillation on `logits`",
    "feature_keras": "keras.distillation, FeatureDistillation on `logits`",
    "larger_ours": "tf_distill, FeatureDistillation on `features`",
    "larger_keras": "keras.distillation, FeatureDistillation on `features`",
}
FEATURE_ALPHA = 0.5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=None, help="MNIST idx folder (default ../shared/data/mnist)"
    )
    parser.add_argument(
        "--train-size",
        type=int,
        default=8192,
        help="training images (stratified subset; 8192 = 64 batches of 128)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs per seed and method")
    parser.add_argument("--seeds", type=int, default=3, help="number of student seeds")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=0.01,
        help="students' initial Adam learning rate, cosine-decayed to 0 over --epochs",
    )
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument(
        "--teacher-learning-rate",
        type=float,
        default=0.005,
        help="teacher's initial Adam learning rate, cosine-decayed to 0",
    )
    parser.add_argument(
        "--teacher-cache",
        default=None,
        help="a .keras file to load the teacher from or save it to (default: a file "
        "named after the teacher's settings in the temporary folder)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(method.key for method in METHODS),
        help="comma-separated method keys to run (the student alone always runs)",
    )
    parser.add_argument(
        "--no-comparison",
        action="store_true",
        help="skip the keras.distillation variants in the rounds",
    )
    parser.add_argument(
        "--larger-student-size",
        default=TEACHER_SIZE,
        help="student size of the last part (default: the teacher's)",
    )
    parser.add_argument(
        "--larger-train-size",
        type=int,
        default=2560,
        help="images per timed epoch in the last part (0 skips it)",
    )
    parser.add_argument(
        "--larger-repetitions", type=int, default=3, help="timed epochs per variant, last part"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write docs/BENCHMARKS.md")
    parser.add_argument(
        "--note", default=None, help="a sentence on the run's conditions, for the report"
    )
    parser.add_argument("--results", default=None, help="also save every figure as JSON here")
    parser.add_argument(
        "--render",
        default=None,
        help="only rewrite the report from a --results JSON file (no training)",
    )
    args = parser.parse_args(argv)
    known = {method.key for method in METHODS}
    chosen = [key.strip() for key in args.methods.split(",") if key.strip()]
    unknown = sorted(set(chosen) - known)
    if unknown:
        parser.error(f"Unknown method(s) {unknown}. Expected some of {sorted(known)}.")
    args.methods = ["student"] + [key for key in chosen if key != "student"]
    return args


def crossentropy():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def steps_per_epoch(data, args):
    # Full batches only (drop_remainder), so one graph serves every step and
    # the batch statistics of RKD, SP, PKT and DIST always see the same batch.
    return len(data.x_train) // args.batch_size


def train_batches(data, args, seed):
    """The shuffled training batches; same seed, same sequence of epochs."""
    return data.as_tf_dataset(
        "train", args.batch_size, shuffle=True, seed=seed, drop_remainder=True
    )


def error_rate(model, x, y):
    logits = model.predict(x, batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) != y))


def test_error(model, data):
    return error_rate(model, data.x_test, data.y_test)


def train_error(model, data):
    """Error on the first TRAIN_ERROR_IMAGES training images: a test error
    as high as this one means the student underfits."""
    return error_rate(model, data.x_train[:TRAIN_ERROR_IMAGES], data.y_train[:TRAIN_ERROR_IMAGES])


# ----------------------------------------------------------------------
# The teacher.


def default_teacher_cache(args, data):
    settings = (
        f"cnn-{TEACHER_SIZE}-train{len(data.x_train)}-epochs{args.teacher_epochs}-"
        f"lr{args.teacher_learning_rate:g}-batch{args.batch_size}-seed0-"
        f"{keras.__version__}"
    )
    digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
    folder = os.path.join(tempfile.gettempdir(), "tf_distill_bench_methods")
    return os.path.join(folder, f"teacher_{digest}.keras")


def get_teacher(data, args):
    """Loads the cached teacher, or trains it once and caches it."""
    path = args.teacher_cache or default_teacher_cache(args, data)
    if os.path.exists(path):
        common.log(f"Loading the teacher from {path}")
        return saving.load_model(path), path, None
    teacher = architectures.build(
        "cnn", data.input_shape, data.num_classes, size=TEACHER_SIZE, seed=0, name="teacher"
    )
    teacher.compile(
        optimizer=common.adam(
            args.teacher_learning_rate, args.teacher_epochs * steps_per_epoch(data, args)
        ),
        loss=crossentropy(),
    )
    with common.stopwatch() as clock:
        teacher.fit(train_batches(data, args, seed=0), epochs=args.teacher_epochs, verbose=0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    saving.save_model(teacher, path)
    common.log(f"Trained the teacher in {clock['seconds']:.1f} s; cached at {path}")
    return teacher, path, clock["seconds"]


# ----------------------------------------------------------------------
# Training variants.


class Variant:
    """A model trained epoch by epoch, whose state can be reset per seed.

    `snapshot` is taken once the optimizer is built and before the warm-up
    steps that trace the graphs; `reset(initial_weights)` restores it (the
    optimizer's step count and moments, adapters) and loads the seed's
    initial student weights, so every seed starts alike without a retrace.
    """

    def __init__(self, key, model, student, has_distillation):
        self.key = key
        self.model = model
        self.student = student
        self.has_distillation = has_distillation
        model.optimizer.build(model.trainable_variables)
        variables, seen = [], set()
        for variable in list(model.optimizer.variables) + list(model.weights):
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
        self._variables = variables
        self._snapshot = [variable.numpy() for variable in variables]

    def reset(self, initial_weights):
        for variable, value in zip(self._variables, self._snapshot):
            variable.assign(value)
        self.student.set_weights(initial_weights)

    def warm_up(self, data, args):
        batches = train_batches(data, args, seed=12345).take(WARMUP_STEPS)
        self.model.fit(batches, epochs=1, verbose=0)

    def fit_epoch(self, batches):
        """One epoch; returns `({"wall", "cpu"}, {metric: value})`."""
        timer = common.EpochTimer()
        history = self.model.fit(batches, epochs=1, verbose=0, callbacks=[timer])
        logs = {name: float(values[-1]) for name, values in history.history.items()}
        return timer.last(), logs


def build_student(data, size, name, seed=None):
    return architectures.build(
        "cnn", data.input_shape, data.num_classes, size=size, seed=seed, name=name
    )


def make_variant(key, teacher, data, args, total_steps, attention_size, size=STUDENT_SIZE):
    """Builds and compiles the model of variant `key` (a method or a
    comparison), with a fresh student."""
    student = build_student(data, size, name=f"student_{key}")
    optimizer = common.adam(args.learning_rate, total_steps)
    methods = {method.key: method for method in METHODS}
    if key == "student":
        student.compile(optimizer=optimizer, loss=crossentropy())
        return Variant(key, student, student, has_distillation=False)
    if key in methods:
        method = methods[key]
        model = tf_distill.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=method.make_losses(attention_size),
            distillation_loss_weights=method.weights(attention_size),
            student_loss_weight=method.alpha,
        )
    elif key == "keras_kd":
        model = keras_distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=keras_distillation.LogitsDistillation(
                temperature=4.0, loss=keras.losses.KLDivergence()
            ),
            student_loss_weight=methods["kd"].alpha,
        )
    elif key in ("feature_ours", "larger_ours"):
        layer = "logits" if key == "feature_ours" else "features"
        model = tf_distill.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=tf_distill.FeatureDistillation("mse", layer, layer),
            student_loss_weight=FEATURE_ALPHA,
        )
    elif key in ("feature_keras", "larger_keras"):
        layer = "logits" if key == "feature_keras" else "features"
        model = keras_distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=keras_distillation.FeatureDistillation(
                loss="mse", teacher_layer_name=layer, student_layer_name=layer
            ),
            student_loss_weight=FEATURE_ALPHA,
        )
    else:
        raise ValueError(f"Unknown variant. Received: key={key!r}")
    model.compile(optimizer=optimizer, loss=crossentropy())
    return Variant(key, model, student, has_distillation=True)


# ----------------------------------------------------------------------
# The rounds.


def run_rounds(teacher, data, args):
    """Trains every variant for every seed, epochs interleaved.

    Returns `{"keys": [...], "samples": {key: [{"wall", "cpu"}]}, "errors":
    {key: [test error per seed]}, "train_errors": {key: [...]},
    "first_epoch": {key: [logs of each seed's first epoch]}, "revisions":
    {key: revision of the row's method}}`.
    """
    total_steps = args.epochs * steps_per_epoch(data, args)
    attention_size = int(np.prod(teacher.get_layer("block3_relu").output.shape[1:3]))
    keys = list(args.methods)
    if not args.no_comparison:
        if "kd" not in keys:
            keys.append("kd")
        keys += list(COMPARISON_KEYS)
    variants = {}
    for key in keys:
        with common.stopwatch() as clock:
            variant = make_variant(key, teacher, data, args, total_steps, attention_size)
            variant.warm_up(data, args)
        variants[key] = variant
        common.log(f"Built and warmed up {key} in {clock['seconds']:.1f} s")

    samples = {key: [] for key in keys}
    errors = {key: [] for key in keys}
    train_errors = {key: [] for key in keys}
    first_epoch = {key: [] for key in keys}
    for seed in range(args.seeds):
        initial = build_student(data, STUDENT_SIZE, name="initial", seed=1000 + seed)
        initial_weights = initial.get_weights()
        batches = {}
        for key, variant in variants.items():
            variant.reset(initial_weights)
            # One pipeline object per variant, all with the same seed: each
            # sees the same sequence of shuffled batches.
            batches[key] = train_batches(data, args, seed=seed)
        epoch_logs = {key: [] for key in keys}

        def task(key, batches=batches, epoch_logs=epoch_logs):
            def run():
                times, logs = variants[key].fit_epoch(batches[key])
                epoch_logs[key].append(logs)
                return times

            return run

        # Rotate the starting variant from seed to seed too, so that no
        # variant always runs first in a round.
        shift = (seed * args.epochs) % len(keys)
        order = keys[shift:] + keys[:shift]
        seed_samples = common.interleave(
            {key: task(key) for key in order},
            args.epochs,
            warmup=0,
            log=lambda line, seed=seed: common.log(f"  seed {seed}: {line}"),
        )
        for key in keys:
            samples[key] += seed_samples[key]
            errors[key].append(test_error(variants[key].student, data))
            train_errors[key].append(train_error(variants[key].student, data))
            first_epoch[key].append(epoch_logs[key][0])
        common.log(
            f"  seed {seed}: test errors "
            + ", ".join(f"{key} {100 * errors[key][-1]:.2f} %" for key in keys)
        )
    return {
        "keys": keys,
        "samples": samples,
        "errors": errors,
        "train_errors": train_errors,
        "first_epoch": first_epoch,
        # What each row's method was at (quality_methods.CHANGES): the table
        # marks rows measured before a change.
        "revisions": {key: quality_methods.revision(key) for key in keys},
    }


def run_larger_student(teacher, data, args):
    """Part 3: named-layer feature distillation with a large student."""
    subset = data.x_train[: args.larger_train_size], data.y_train[: args.larger_train_size]
    larger = tf_distill.data.DataSplits(
        x_train=subset[0],
        y_train=subset[1],
        x_val=data.x_val,
        y_val=data.y_val,
        x_test=data.x_test,
        y_test=data.y_test,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        name=data.name,
    )
    total_steps = (args.larger_repetitions + 1) * steps_per_epoch(larger, args)
    keys = ("larger_ours", "larger_keras")
    variants = {}
    for key in keys:
        variants[key] = make_variant(
            key, teacher, larger, args, total_steps, None, size=args.larger_student_size
        )
        variants[key].warm_up(larger, args)
    initial = build_student(larger, args.larger_student_size, name="initial", seed=2000)
    initial_weights = initial.get_weights()
    batches = {}
    for key in keys:
        variants[key].reset(initial_weights)
        batches[key] = train_batches(larger, args, seed=0)
    samples = common.interleave(
        {key: (lambda key=key: variants[key].fit_epoch(batches[key])[0]) for key in keys},
        args.larger_repetitions,
        warmup=0,
        log=lambda line: common.log(f"  larger student: {line}"),
    )
    return {
        "samples": samples,
        "student_parameters": int(initial.count_params()),
        "train": len(larger.x_train),
    }


def teacher_pass_times(teacher, data, args, repetitions):
    """Wall and CPU time of one inference pass of the teacher over the
    training batches (the teacher's share of a distillation epoch)."""
    batches = data.as_tf_dataset("train", args.batch_size, shuffle=False, drop_remainder=True)

    def run():
        timer = common.PredictTimer()
        teacher.predict(batches, verbose=0, callbacks=[timer])
        return timer.last()

    return common.interleave({"teacher": run}, repetitions, warmup=1)["teacher"]


# ----------------------------------------------------------------------
# Figures.


def clock_values(samples, clock):
    return [sample[clock] for sample in samples]


def median(samples, clock):
    return statistics.median(clock_values(samples, clock))


def paired_ratios(numerator, denominator, clock):
    return [a[clock] / b[clock] for a, b in zip(numerator, denominator)]


def percent_mean_std(values):
    """Mean ± std of error rates, in percent."""
    return mean_std([100 * value for value in values])


def comparison_figures(rounds):
    """Ratios of part (1) and (2), on both clocks."""
    samples = rounds["samples"]
    figures = {}
    for name, ours, theirs in (
        ("logits", "kd", "keras_kd"),
        ("feature", "feature_ours", "feature_keras"),
    ):
        if ours not in samples or theirs not in samples:
            continue
        entry = {}
        for clock in ("wall", "cpu"):
            entry[clock] = {
                "ours": median(samples[ours], clock),
                "theirs": median(samples[theirs], clock),
                "theirs_over_ours": median(samples[theirs], clock) / median(samples[ours], clock),
                "paired_theirs_over_ours": statistics.median(
                    paired_ratios(samples[theirs], samples[ours], clock)
                ),
            }
            entry[clock]["ours_over_theirs"] = 1.0 / entry[clock]["theirs_over_ours"]
        figures[name] = entry
    return figures


def larger_figures(larger):
    samples = larger["samples"]
    figures = {}
    for clock in ("wall", "cpu"):
        ours = median(samples["larger_ours"], clock)
        theirs = median(samples["larger_keras"], clock)
        figures[clock] = {
            "ours": ours,
            "theirs": theirs,
            "theirs_over_ours": theirs / ours,
            "paired_theirs_over_ours": statistics.median(
                paired_ratios(samples["larger_keras"], samples["larger_ours"], clock)
            ),
        }
    return figures


def seed_summary(rounds):
    """Which methods beat, or lost to, the student alone on every seed."""
    errors = rounds["errors"]
    alone = errors["student"]
    better, worse = [], []
    for method in METHODS[1:]:
        if method.key not in errors:
            continue
        differences = paired(alone, errors[method.key])
        label = method.label
        if quality_methods.changes_since(method.key, rounds.get("revisions", {}).get(method.key, 1)):
            label += " (changed since measured)"
        if differences["improved"] == differences["n"]:
            better.append(label)
        elif differences["worsened"] == differences["n"]:
            worse.append(label)
    seeds = len(alone)
    compared = sum(method.key in errors for method in METHODS[1:])
    mixed = compared - len(better) - len(worse)
    return (
        f"Paired with the student alone from the same initial weights, "
        f"lower test error on all {seeds} seeds: {', '.join(better) or 'none'}; "
        f"higher on all {seeds}: {', '.join(worse) or 'none'}"
        + ("; the others are mixed." if mixed > 0 else ".")
    )


def methods_table(rounds, args):
    samples, errors, first = rounds["samples"], rounds["errors"], rounds["first_epoch"]
    alone = errors["student"]
    rows = []
    for method in METHODS:
        if method.key not in samples:
            continue
        mean, std = percent_mean_std(errors[method.key])
        difference = [e - a for e, a in zip(errors[method.key], alone)]
        d_mean, d_std = percent_mean_std(difference)
        logs = first[method.key]
        ce_key = "student_loss" if method.alpha is not None else "loss"
        changes = quality_methods.changes_since(
            method.key, rounds.get("revisions", {}).get(method.key, 1)
        )
        mark = f" (changed since measured: {'; '.join(c.what for c in changes)})" if changes else ""
        row = {
            "method": method.label + mark,
            "setting": method.setting,
            "error": f"{mean:.2f} ± {std:.2f}",
            "seeds": " / ".join(f"{100 * e:.2f}" for e in errors[method.key]),
            "train": 100 * statistics.fmean(rounds["train_errors"][method.key]),
            "difference": "—" if method.key == "student" else f"{d_mean:+.2f} ± {d_std:.2f}",
            "wall": median(samples[method.key], "wall"),
            "cpu": median(samples[method.key], "cpu"),
            "ce": statistics.fmean(log_[ce_key] for log_ in logs),
        }
        if method.alpha is not None:
            row["distillation"] = statistics.fmean(log_["distillation_loss"] for log_ in logs)
        rows.append(row)
    return common.markdown_table(
        rows,
        [
            ("method", "method", "s"),
            ("setting", "losses (registry names), layers, weights", "s"),
            ("error", "test error % (mean ± std)", "s"),
            ("seeds", "per seed %", "s"),
            ("difference", "Δ vs alone, paired (points)", "s"),
            ("train", "train error %", ".2f"),
            ("wall", "epoch wall median (s)", ".2f"),
            ("cpu", "epoch CPU median (s)", ".2f"),
            ("ce", "CE, epoch 1", ".3f"),
            ("distillation", "Σ wᵢ·Lᵢ, epoch 1", ".3f"),
        ],
    )


def comparison_table(rounds):
    samples, errors = rounds["samples"], rounds["errors"]
    rows = []
    for key in ("kd", "keras_kd", "feature_ours", "feature_keras"):
        if key not in samples:
            continue
        mean, std = percent_mean_std(errors[key])
        rows.append(
            {
                "variant": COMPARISON_LABELS[key],
                "wall": median(samples[key], "wall"),
                "wall_min": min(clock_values(samples[key], "wall")),
                "wall_max": max(clock_values(samples[key], "wall")),
                "cpu": median(samples[key], "cpu"),
                "n": len(samples[key]),
                "error": f"{mean:.2f} ± {std:.2f}",
            }
        )
    return common.markdown_table(
        rows,
        [
            ("variant", "variant", "s"),
            ("wall", "epoch wall median (s)", ".2f"),
            ("wall_min", "wall min (s)", ".2f"),
            ("wall_max", "wall max (s)", ".2f"),
            ("cpu", "epoch CPU median (s)", ".2f"),
            ("n", "epochs timed", "d"),
            ("error", "test error % (mean ± std)", "s"),
        ],
    )


def verdict(passed):
    return "**met**" if passed else "**missed**"


def target_lines(figures):
    lines = []
    if "logits" in figures:
        for clock in ("wall", "cpu"):
            f = figures["logits"][clock]
            lines.append(
                f"- (1) logits only, {clock}: ours / theirs = {f['ours']:.2f} s / "
                f"{f['theirs']:.2f} s = {f['ours_over_theirs']:.3f} (paired per round: "
                f"{1 / f['paired_theirs_over_ours']:.3f}); target ≤ 1.0: "
                f"{verdict(f['ours_over_theirs'] <= 1.0)}"
            )
    if "feature" in figures:
        for clock in ("wall", "cpu"):
            f = figures["feature"][clock]
            lines.append(
                f"- (2) named-layer features, {clock}: theirs / ours = {f['theirs']:.2f} s / "
                f"{f['ours']:.2f} s = {f['theirs_over_ours']:.3f} (paired per round: "
                f"{f['paired_theirs_over_ours']:.3f}); target ≥ 1.5: "
                f"{verdict(f['theirs_over_ours'] >= 1.5)}"
            )
    return lines


def multiply_adds(model):
    """Multiply-adds of one forward pass of one example (Conv2D and Dense)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            kernel = int(np.prod(layer.kernel.shape))
            total += height * width * kernel
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)


def cost_model_text(results):
    """Why the feature ratio is what it is: (T + 2S) / (T + S)."""
    teacher_cpu = results["teacher_pass"]["cpu"]
    student_cpu = results["student_epoch_cpu"]
    predicted = (teacher_cpu + 2 * student_cpu) / (teacher_cpu + student_cpu)
    macs = results["multiply_adds"]
    return (
        f"Why (2) is what it is: a step of theirs costs one teacher forward pass (T) and "
        f"two student forward and backward passes (2S), ours T + S, so theirs / ours ≈ "
        f"(T + 2S) / (T + S), which reaches 1.5 only when S ≥ T. Here one teacher "
        f"inference pass over the training batches takes {teacher_cpu:.2f} s of CPU and "
        f"one epoch of the student alone (forward, backward and update) {student_cpu:.2f} s: "
        f"S / T = {student_cpu / teacher_cpu:.2f}, and the model predicts "
        f"{predicted:.2f}. By arithmetic the student is far cheaper still: "
        f"{macs['student']:,} multiply-adds per image against the teacher's "
        f"{macs['teacher']:,} ({macs['student'] / macs['teacher']:.1%}); its measured "
        f"share is larger because its tiny convolutions are dominated by per-operation "
        f"overhead on the CPU. Running a student that small twice cannot cost 50 % more "
        f"than a step dominated by a 3×-wider teacher."
    )


def report(results, args):
    figures = results["comparison"]
    data = results["data"]
    conditions = common.conditions_markdown(
        results["conditions"], load_after=results["load_after"], note=args.note
    )
    larger_text = ""
    if results.get("larger"):
        larger = results["larger"]
        f = larger["figures"]
        larger_text = f"""
### (2) again with a larger student

The same comparison with a student as large as the teacher (CNN
"{args.larger_student_size}", {larger["student_parameters"]:,} parameters), where the
student's passes dominate a step, tapping `features` (192 units in both).
{larger["train"]:,} training images per timed epoch ({larger["train"] // args.batch_size}
steps), after the same {WARMUP_STEPS}-step warm-up, {args.larger_repetitions} epochs of each,
interleaved:

- wall: theirs / ours = {f["wall"]["theirs"]:.2f} s / {f["wall"]["ours"]:.2f} s =
  {f["wall"]["theirs_over_ours"]:.3f} (paired: {f["wall"]["paired_theirs_over_ours"]:.3f}):
  {verdict(f["wall"]["theirs_over_ours"] >= 1.5)} against 1.5
- CPU: theirs / ours = {f["cpu"]["theirs"]:.2f} s / {f["cpu"]["ours"]:.2f} s =
  {f["cpu"]["theirs_over_ours"]:.3f} (paired: {f["cpu"]["paired_theirs_over_ours"]:.3f}):
  {verdict(f["cpu"]["theirs_over_ours"] >= 1.5)} against 1.5

This is a different configuration from the one the target names; the figure
of record for the target is (2) above.
"""
    comparison = ""
    if figures:
        comparison = f"""
### Side by side with keras.distillation

Trained in the same interleaved rounds as the methods, from the same initial
weights and batches. (1) is the KD row against `keras.distillation`'s
`LogitsDistillation(temperature=4, loss=keras.losses.KLDivergence())`, α = 0.1.
(2) is `FeatureDistillation("mse", teacher_layer_name="logits",
student_layer_name="logits")` in each library with α = 0.5: `logits` is the
only layer the large teacher and the small student share a shape at, and
naming it makes `keras.distillation` build its feature extractor and run the
student a second time each step.

{comparison_table(results["rounds"])}

{chr(10).join(target_lines(figures))}

Wall times on a loaded shared machine swing by a factor of two from epoch to
epoch (min and max columns); CPU time, the work the process did, is the
steadier figure, and the paired ratios compare epochs run back to back.

{cost_model_text(results)}

The two libraries' losses agree (same epoch-1 losses from the same weights
and batches), but with a named layer `keras.distillation`'s second student
pass also runs in training mode, so BatchNormalization's moving statistics
are updated twice per step (after one step at momentum 0.9 they move
1 − 0.9² = 0.19 of the way to the batch statistics instead of 0.1); its
student is evaluated with different inference statistics than ours.
"""
    teacher_seconds = results.get("teacher_training_seconds")
    teacher_note = (
        f", of which {teacher_seconds:.0f} s training the teacher"
        if teacher_seconds
        else " (teacher loaded from the cache)"
    )
    return f"""## Methods: ten ways to train a small CNN on MNIST

Teacher: CNN "{TEACHER_SIZE}" ({results["teacher_parameters"]:,} parameters,
{args.teacher_epochs} epochs, Adam {args.teacher_learning_rate:g} cosine-decayed to 0,
test error {100 * results["teacher_test_error"]:.2f} %), trained once and cached.
Student: CNN "{STUDENT_SIZE}" ({results["student_parameters"]:,} parameters). Data:
{data["train"]:,} MNIST training images (stratified subset; {data["steps"]} full
batches of {args.batch_size} per epoch, the remainder dropped) and the full
{data["test"]:,}-image test set. Each method: {args.epochs} epochs, Adam
{args.learning_rate:g} cosine-decayed to 0; for each of {len(results["seeds"])} seeds
the same initial student weights and the same sequence of batches for every
method; epochs of all methods interleaved in rotating order.

Every row trains `α · CE + (1 − α) · Σᵢ wᵢ · Lᵢ` (`Distiller(...,
student_loss_weight=α, distillation_loss_weights=[w…])`), with the weights
of each method's paper or reference code; "CE + β · L" in a paper is
α = 0.5, w = β (half the paper's total, which Adam's step ignores). The
two loss columns are epoch-1 means of the CE and of the weighted distillation
term, averaged over seeds, to show how large each term is. Errors: mean ±
sample standard deviation over seeds; "Δ vs alone" pairs each seed with the
student alone from the same initial weights. Epoch times: medians over
{args.seeds} seeds × {args.epochs} epochs, graph tracing excluded (an untimed
warm-up of {WARMUP_STEPS} steps per model, its state then restored).

{methods_table(results["rounds"], args)}

Weights: FitNets 100 is RepDistiller's (mean squared hint); attention
transfer uses the paper's β/2 = 500 divided by the 7 × 7 map size on the
paper's per-example norm; PKT's 469 is RepDistiller's 30,000 at batch 64 on a
loss averaged over b² pairs where tf_distill averages over b rows; KD with
logit standardization is the authors' CIFAR-100 setting (base T = 2, KD
weight 9 with CE 0.1).

These weights were tuned in their papers for wide ResNets trained for
hundreds of epochs on CIFAR; on a {results["student_parameters"]:,}-parameter
student trained for {args.epochs} epochs some of them make the distillation
term dominate the step (DKD's β = 8 also without the authors' 20-epoch
linear warm-up, FitNets without its separate hint stage). A train error
(on the first {TRAIN_ERROR_IMAGES:,} training images) as high as the test error
means the student underfits: the distillation term holds it back.

{seed_summary(results["rounds"])}

With {args.epochs} epochs on {data["train"]:,} images the student is far from
converged, and the seed-to-seed spread (std and per-seed columns) is of the
same order as several of the differences: {args.seeds} seeds separate only the
largest effects. Read the table as "which methods run, at what cost, and
which settings transfer to a short run", not as a ranking of the methods.

Epoch times: every distillation row runs the {TEACHER_SIZE} teacher's forward
pass ({results["teacher_pass"]["cpu"]:.2f} s of CPU per epoch, below), which
dominates; a method's own cost is its difference from the KD row, visible
mainly for RKD (its angle term compares b³ = {args.batch_size**3:,} triplets
per batch).
{comparison}{larger_text}
Teacher inference pass over the {data["steps"]} training batches (for the cost
model): {results["teacher_pass"]["wall"]:.2f} s wall, {results["teacher_pass"]["cpu"]:.2f} s
CPU (median of {results["teacher_pass"]["n"]}).

{conditions} Whole run: {results["total_seconds"]:.0f} s wall{teacher_note}.

Reproduce (from the repository root; the teacher is cached in the temporary
folder, so a second run skips its training):

```sh
{results["command"]}
```
"""


def render(args):
    """Re-renders the report of a saved run (e.g. after editing the text)."""
    with open(args.render, encoding="utf-8") as handle:
        results = json.load(handle)
    saved = argparse.Namespace(**results["args"])
    saved.no_write, saved.note = args.no_write, args.note or saved.note
    markdown = report(results, saved)
    common.publish("methods", markdown, write=not args.no_write, log=common.log)
    return 0


def main(argv=None):
    start = time.perf_counter()
    args = parse_args(argv)
    if args.render:
        return render(args)
    conditions = common.machine_conditions()
    common.log(f"Conditions: {conditions}")
    data = common.load_mnist(train_size=args.train_size, seed=0, path=args.data)
    common.log(f"Data: {data}")
    teacher, teacher_path, teacher_seconds = get_teacher(data, args)
    teacher_error = test_error(teacher, data)
    common.log(f"Teacher: {teacher.count_params():,} parameters, test error {100 * teacher_error:.2f} %")

    rounds = run_rounds(teacher, data, args)
    teacher_samples = teacher_pass_times(teacher, data, args, repetitions=3)
    larger = None
    if args.larger_train_size > 0 and not args.no_comparison:
        larger = run_larger_student(teacher, data, args)
        larger["figures"] = larger_figures(larger)

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--note" in argv:  # a description of the run, not one of its parameters
        index = argv.index("--note")
        del argv[index : index + 2]
    argv = [arg for arg in argv if not arg.startswith("--note=")]
    if "--results" in argv:  # where figures are saved, not how they are made
        index = argv.index("--results")
        del argv[index : index + 2]
    argv = [arg for arg in argv if not arg.startswith("--results=")]
    results = {
        "args": vars(args),
        "command": common.command_line(argv=[sys.argv[0]] + argv),
        "conditions": conditions,
        "data": {
            "train": len(data.x_train),
            "test": len(data.x_test),
            "steps": steps_per_epoch(data, args),
        },
        "teacher_cache": teacher_path,
        "teacher_training_seconds": teacher_seconds,
        "teacher_parameters": int(teacher.count_params()),
        "student_parameters": int(build_student(data, STUDENT_SIZE, name="count").count_params()),
        "teacher_test_error": teacher_error,
        "seeds": list(range(args.seeds)),
        "rounds": rounds,
        "comparison": comparison_figures(rounds),
        "teacher_pass": {
            "wall": median(teacher_samples, "wall"),
            "cpu": median(teacher_samples, "cpu"),
            "n": len(teacher_samples),
        },
        "student_epoch_cpu": median(rounds["samples"]["student"], "cpu"),
        "multiply_adds": {
            "teacher": multiply_adds(teacher),
            "student": multiply_adds(build_student(data, STUDENT_SIZE, name="count")),
        },
        "larger": larger,
    }
    results["load_after"] = common.current_load()
    results["total_seconds"] = time.perf_counter() - start
    markdown = report(results, args)
    common.publish("methods", markdown, write=not args.no_write, log=common.log)
    if args.results:
        from tf_distill.files import atomic_write

        atomic_write(args.results, json.dumps(results, default=float, indent=1))
    common.print_results_json(results)
    return 0


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    sys.exit(main())
