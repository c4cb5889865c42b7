"""Part 4 of `bench_quality.py`: a fair method table.

A CNN "large" teacher is trained once on the training subset and cached;
its logits and every tapped layer are computed once for the training
images (`tf_distill.build_teacher_cache`), and every student, alone or
distilled, trains from that one cache, so within a seed every variant
starts from the same weights and sees the same batches.

Each method runs at its paper's setting (`factor` 1) on every seed, and at
its distillation weight × 0.1 and × 10 on the first seed; the factor with
the fewest *validation* errors on that seed is chosen (ties go to the
paper's) and run on the other seeds. Test errors are never used to choose.

A loss's total in a row is `α · CE + (1 − α) · factor · Σᵢ wᵢ · Lᵢ`.

Two rows change who teaches, not the loss (`tf_distill.stages`): the
teacher-assistant row distills the teacher into a CNN "medium" assistant,
then the assistant into the student (Mirzadeh et al. 2020); the born-again
row trains the student alone (generation 0, the "alone" row's run) and
distills two generations of it, each from the last (Furlanello et al.
2018), and reports the last. Every stage uses the row's losses, weights and
epochs, and reads its teacher online (the cache holds the big teacher's
outputs only), from the same seeded pipeline.
"""

import argparse
import dataclasses
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import common
from quality_mnist import count_errors

import tf_distill
from tf_distill.backend import keras
from tf_distill.backend import tf

TEACHER_SIZE = "large"
ASSISTANT_SIZE = "medium"
BORN_AGAIN_GENERATIONS = 2
STUDENT_SIZE = "small"
SEARCH_FACTORS = (0.1, 1.0, 10.0)
# Attention maps of `block3_relu` on 28×28 MNIST are 7×7.
ATTENTION_SIZE = 49


@dataclasses.dataclass
class Method:
    """One row: the losses (registry configs), their weights, α, warm-up.

    Attributes:
        key: Short name (JSON, logs).
        label: The row's name.
        losses: Registry configs for `tf_distill.losses.get`.
        weights: One weight per loss (the paper's).
        alpha: `student_loss_weight`.
        setting: The paper's setting, in words.
        warmup_epochs: Linear ramp of the distillation weight over the first
            epochs (DKD: `min(epoch / warmup, 1)` with epochs from 1, as its
            reference code; `tf_distill.schedules.linear_warmup`).
        scheme: `"teacher"` (a `Distiller` from the cached teacher),
            `"mutual"` (a `MutualDistiller` of the student and a peer of the
            same architecture, another seed; the row scores the student; the
            one loss gives the divergence's temperature, its weight the
            mutual term's) or `"self"` (a `SelfDistiller`: the teacher is an
            EMA of the student, `options` its arguments). Neither of the last
            two reads the teacher; all see the same batches.
        options: Extra arguments of the scheme's model.
    """

    key: str
    label: str
    losses: list
    weights: list
    alpha: float
    setting: str
    warmup_epochs: int = 0
    # "teacher" (distilled from the teacher), "mutual", "self" (no teacher),
    # "teacher_assistant" or "born_again" (chains of Distillers).
    scheme: str = "teacher"
    options: dict = dataclasses.field(default_factory=dict)


def _layers(name, layer):
    return {"name": name, "teacher_layer_name": layer, "student_layer_name": layer}


METHODS = [
    Method(
        "kd",
        "KD",
        [{"name": "kd", "temperature": 4.0}],
        [1.0],
        0.1,
        "T = 4; CE 0.1 + KD 0.9 (Hinton et al. 2015; RepDistiller)",
    ),
    Method(
        "kd_standardized",
        "KD + logit standardization",
        [{"name": "kd", "temperature": 2.0, "standardize": True}],
        [10.0],
        0.1,
        "standardize=True (the sample std, as the authors' code), T = 2; CE 0.1 + KD 9 "
        "(Sun et al. 2024)",
    ),
    Method(
        "ctkd",
        "CTKD",
        [{"name": "ctkd", "lambda_max": 1.0, "curriculum_epochs": 10}],
        [1.0],
        0.1,
        "global T = 1 + 20·sigmoid(θ) learned through gradient reversal, λ: 0 → 1 "
        "on a cosine over 10 epochs counted from 1; CE 0.1 + KD 0.9 (Li et al. 2023, "
        "official script)",
    ),
    Method(
        "dkd",
        "DKD",
        [{"name": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 4.0}],
        [1.0],
        0.5,
        "α = 1, β = 8, T = 4; CE 1 + DKD 1, linear warm-up of the DKD weight "
        "over the first {warmup} epochs (Zhao et al. 2022)",
        warmup_epochs=3,
    ),
    Method(
        "dist",
        "DIST",
        [{"name": "dist", "beta": 1.0, "gamma": 1.0, "temperature": 4.0}],
        [1.0],
        0.5,
        "β = γ = 1, T = 4; CE 1 + DIST 1 (Huang et al. 2022)",
    ),
    Method(
        "fitnets",
        "FitNets",
        [_layers("fitnets", "block2_relu")],
        [100.0],
        0.5,
        "hint on block2_relu, 1×1-conv adapter; CE 1 + hint 100 (RepDistiller)",
    ),
    Method(
        "attention_transfer",
        "attention transfer",
        [{**_layers("attention_transfer", "block3_relu"), "power": 2.0}],
        [1000.0 / 2.0 / ATTENTION_SIZE],
        0.5,
        "p = 2 on block3_relu; CE 1 + β/2 = 500 over the 7×7 map (Zagoruyko & Komodakis 2017)",
    ),
    Method(
        "rkd",
        "RKD",
        [_layers("rkd_distance", "features"), _layers("rkd_angle", "features")],
        [25.0, 50.0],
        0.5,
        "distance 25 + angle 50 on `features` (Park et al. 2019)",
    ),
    Method(
        "similarity_preserving",
        "SP",
        [_layers("similarity_preserving", "block3_relu")],
        [3000.0],
        0.5,
        "block3_relu; CE 1 + γ 3000 (Tung & Mori 2019)",
    ),
    Method(
        "pkt",
        "PKT",
        [_layers("pkt", "features")],
        [30000.0 / 64.0],
        0.5,
        "`features`; RepDistiller's 30,000 at batch 64 over b² pairs = 469 over b rows "
        "(Passalis & Tefas 2018)",
    ),
    Method(
        "crd",
        "CRD",
        [{**_layers("crd", "features"), "feature_dim": 128, "nce_temperature": 0.07,
          "momentum": 0.5}],
        [0.8],
        0.5,
        "`features`, 128-d heads, τ = 0.07, momentum 0.5, K = 4096 negatives of other "
        "classes capped at a quarter of the training set (paper: 16,384 of 50,000); "
        "CE 1 + CRD 0.8 (Tian et al. 2020)",
    ),
    Method(
        "mutual",
        "deep mutual learning",
        [{"name": "kd", "temperature": 1.0}],
        [1.0],
        1.0,
        "no teacher: student + a peer (same CNN, another seed), each CE 1 + KL(peer ‖ self) 1, "
        "T = 1 (Zhang et al. 2018); twice the training compute",
        scheme="mutual",
    ),
    Method(
        "self_ema",
        "self-distillation (EMA teacher)",
        [{"name": "kd", "temperature": 4.0}],
        [1.0],
        0.5,
        "no teacher: KD T = 4 from an EMA of the student, decay min(0.99, (1 + t)/(10 + t)); "
        "CE 0.5 + KD 0.5 (mean teacher, Tarvainen & Valpola 2017)",
        scheme="self",
        options={"decay": 0.99, "adaptive_decay": True},
    ),
    Method(
        "teacher_assistant",
        "KD via a teacher assistant",
        [{"name": "kd", "temperature": 4.0}],
        [1.0],
        0.1,
        f"teacher → CNN \"{ASSISTANT_SIZE}\" assistant → student, KD T = 4 and CE 0.1 + KD 0.9 "
        "at both stages (Mirzadeh et al. 2020)",
        scheme="teacher_assistant",
    ),
    Method(
        "born_again",
        "born-again, 2 generations",
        [{"name": "kd", "temperature": 1.0}],
        [1.0],
        0.5,
        "the student alone, then 2 generations of it, each taught by the last; "
        "T = 1, CE 0.5 + KD 0.5 (Furlanello et al. 2018)",
        scheme="born_again",
    ),
]
METHOD_KEYS = [method.key for method in METHODS]


@dataclasses.dataclass
class Change:
    """A change to a row's method in the library since an earlier measurement.

    Attributes:
        revision: The row's revision from this change on (the first is 1).
        what: In a few words, for the table's verdict cells.
        why: The sentence below the table: what changed, and what the
            earlier measurement ran.
    """

    revision: int
    what: str
    why: str


# Issue 23: methods as their authors ran them. A result records the revision
# of its row (`run_methods`); the report marks a row measured at an earlier
# revision "changed since measured", until it is measured again.
CHANGES = {
    "kd_standardized": [Change(
        2,
        "sample std, as the authors",
        "logit standardization divides by the sample standard deviation (the authors' "
        "`torch.std`, ddof = 1); the row was measured with the population one (ddof = 0), "
        "with which T = 2 acted as the authors' T = 1.90 with the KD weight ×1.11 on 10 "
        "classes",
    )],
    "ctkd": [Change(
        2,
        "λ from epoch 1, as the official script",
        "CTKD's reversal weight λ counts epochs from 1, as the official script does; the row "
        "was measured with λ one epoch late (0 in the first epoch, 1 from the 11th epoch "
        "instead of the 10th)",
    )],
    "crd": [Change(
        2,
        "negatives from other classes, as RepDistiller",
        "CRD draws its negatives from the examples of other classes only (RepDistiller's "
        "`contrast_idx`, mode `exact`; the bench records every example's class up front); "
        "the row was measured drawing them from all rows, about a tenth of which share the "
        "anchor's class",
    )],
}


def revision(key):
    """The current revision of a row's method (1 unless `CHANGES` says more)."""
    return max((change.revision for change in CHANGES.get(key, ())), default=1)


def changes_since(key, measured_revision):
    """The changes to a row's method after the revision it was measured at."""
    return [change for change in CHANGES.get(key, ()) if change.revision > measured_revision]
# CRD's negatives: at most this many, and at most a quarter of the examples.
CRD_NEGATIVES = 4096


def uses_example_indices(method):
    """Whether a row's losses keep per-example state (CRD's memory banks)."""
    return method is not None and any(config["name"] == "crd" for config in method.losses)


def loss_config(config, num_examples):
    """A row's loss config, completed with what depends on the training set."""
    config = dict(config)
    if config["name"] == "crd":
        config.setdefault("num_examples", num_examples)
        config.setdefault("num_negatives", min(CRD_NEGATIVES, num_examples // 4))
    return config


def scheme_options(method):
    """What a row's scheme needs besides its losses: `options`, with the
    assistant's size or the number of generations of a chain."""
    options = dict(method.options)
    if method.scheme == "mutual":
        options["peers"] = 1
    elif method.scheme == "teacher_assistant":
        options["assistant_size"] = ASSISTANT_SIZE
    elif method.scheme == "born_again":
        options["generations"] = BORN_AGAIN_GENERATIONS
    return options


def methods_by_key():
    return {method.key: method for method in METHODS}


def build_student(data, seed, size=STUDENT_SIZE, name="student"):
    return tf_distill.architectures.build(
        "cnn",
        data.input_shape,
        data.num_classes,
        size=size,
        seed=1000 + seed,
        name=name,
    )


def method_teacher(data, settings, cache_dir):
    """The CNN teacher, trained once on the training subset and cached."""
    description = {
        "kind": "methods_teacher",
        "size": TEACHER_SIZE,
        "train": len(data.x_train),
        "epochs": settings["teacher_epochs"],
        "lr": settings["teacher_learning_rate"],
        "batch": settings["batch_size"],
        "keras": keras.__version__,
    }

    def train():
        teacher = tf_distill.architectures.build(
            "cnn", data.input_shape, data.num_classes, size=TEACHER_SIZE, seed=0, name="teacher"
        )
        batches = data.as_tf_dataset("train", settings["batch_size"], shuffle=True, seed=0)
        steps = settings["teacher_epochs"] * -(-len(data.x_train) // settings["batch_size"])
        teacher.compile(
            optimizer=common.adam(settings["teacher_learning_rate"], steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        teacher.fit(batches, epochs=settings["teacher_epochs"], verbose=0)
        return teacher

    path = common.cache_path(cache_dir, "methods_teacher", description)
    return common.cached_model(path, train, "Methods teacher")


def teacher_cache(teacher, data):
    """One cache of the teacher's logits and of every layer a method taps."""
    losses = [tf_distill.losses.get(config) for method in METHODS for config in method.losses
              if method.scheme == "teacher"]
    return tf_distill.build_teacher_cache(
        teacher, (data.x_train, data.y_train), distillation_losses=losses
    )


def distillation_weights(method, factor, epochs):
    """A row's weights × `factor`; with a warm-up, each ramped up as DKD's
    `min(epoch / warmup, 1)` (epochs from 1), a `schedules.linear_warmup`."""
    warmup = min(method.warmup_epochs, epochs)
    if warmup <= 1:
        return [w * factor for w in method.weights]
    return [tf_distill.schedules.linear_warmup(w * factor, warmup) for w in method.weights]


def _distiller(teacher, student, method, factor, epochs=1, train_labels=None):
    """A row's Distiller. CRD's memory gets the training set's classes up
    front (`train_labels`, in the cache's order of example indices), so its
    negatives come from other classes from the first step, as RepDistiller's."""
    if method is None:  # The student alone: CE only, through the same pipeline.
        return tf_distill.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=tf_distill.LogitsDistillation(temperature=1.0),
            distillation_loss_weights=[0.0],
            student_loss_weight=1.0,
        )
    num_examples = None if train_labels is None else len(train_labels)
    losses = [tf_distill.losses.get(loss_config(config, num_examples)) for config in method.losses]
    distiller = tf_distill.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=losses,
        distillation_loss_weights=distillation_weights(method, factor, epochs),
        student_loss_weight=method.alpha,
    )
    for loss in losses:
        if getattr(loss, "negatives", None) == "other_classes":
            loss.set_example_labels(train_labels)
    return distiller


def _without_teacher_outputs(x, y):
    return x["inputs"], y


def _online_model(student, method, factor, data, seed):
    """The `MutualDistiller` or `SelfDistiller` of a row without a teacher."""
    weights = [w * factor for w in method.weights]
    if method.scheme == "mutual":
        peer = tf_distill.architectures.build(
            "cnn", data.input_shape, data.num_classes, size=STUDENT_SIZE, seed=2000 + seed,
            name="peer",
        )
        return tf_distill.MutualDistiller(
            [student, peer],
            temperature=method.losses[0]["temperature"],
            mutual_loss_weight=weights[0],
        )
    return tf_distill.SelfDistiller(
        student,
        distillation_losses=[tf_distill.losses.get(dict(config)) for config in method.losses],
        distillation_loss_weights=weights,
        student_loss_weight=method.alpha,
        **method.options,
    )


def train_one(teacher, cache, data, settings, seed, method=None, factor=1.0):
    """One student run; returns `{"test", "validation", "seconds"}` (error counts).

    A warm-up ramps the distillation weights within the one Distiller (see
    `distillation_weights`). A row without a teacher (`scheme`) trains its
    own model on the same batches.
    """
    start = time.perf_counter()
    student = build_student(data, seed)
    batch_size = settings["batch_size"]
    steps = len(data.x_train) // batch_size
    epochs = settings["epochs"]
    optimizer = common.adam(settings["learning_rate"], epochs * steps)
    batches = cache.dataset(
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        drop_remainder=True,
        example_indices=uses_example_indices(method),
    )
    if method is not None and method.scheme in ("mutual", "self"):
        model = _online_model(student, method, factor, data, seed)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        model.fit(batches.map(_without_teacher_outputs), epochs=epochs, verbose=0)
    elif method is not None and method.scheme in ("teacher_assistant", "born_again"):
        student = train_chain(
            teacher, student, data, settings, seed, method, factor, optimizer, batches
        )
    else:
        distiller = _distiller(teacher, student, method, factor, epochs, data.y_train)
        distiller.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        distiller.fit(batches, epochs=epochs, verbose=0)
    return {
        "test": int(count_errors(student, data.x_test, data.y_test)),
        "validation": int(count_errors(student, data.x_val, data.y_val)),
        "seconds": time.perf_counter() - start,
    }


def train_chain(teacher, student, data, settings, seed, method, factor, optimizer, batches):
    """A teacher-assistant or born-again row's chain; returns its last student.

    Born-again: generation 0 is `student` trained alone (as the "alone"
    row, same seed, optimizer and batches); then each generation, a fresh
    student of its architecture, learns from the last.
    """
    batch_size, epochs = settings["batch_size"], settings["epochs"]
    steps = len(data.x_train) // batch_size

    def stage(build, name):
        return tf_distill.Stage(
            build, [tf_distill.losses.get(dict(config)) for config in method.losses],
            [w * factor for w in method.weights], student_loss_weight=method.alpha,
            epochs=epochs, optimizer=common.adam(settings["learning_rate"], epochs * steps),
            compile_kwargs={"loss": "sparse_categorical_crossentropy"}, name=name,
        )

    if method.scheme == "teacher_assistant":
        first = teacher
        chain = [stage(lambda: build_student(data, seed, ASSISTANT_SIZE, "assistant"), "assistant"),
                 stage(student, "student")]
    else:
        distiller = _distiller(teacher, student, None, factor)
        distiller.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        distiller.fit(batches, epochs=epochs, verbose=0)
        first = student
        chain = [
            stage(lambda k=k: build_student(data, 100 * k + seed, name=f"generation_{k}"),
                  f"generation_{k}")
            for k in range(1, BORN_AGAIN_GENERATIONS + 1)
        ]
    plain = data.as_tf_dataset("train", batch_size, shuffle=True, seed=seed, drop_remainder=True)
    return tf_distill.distill_stages(first, chain, plain, verbose=0).students[-1]


# ----------------------------------------------------------------------
# Running the rows: each in a process of its own, each run cached.

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
# The bench's own modules whose code shapes a run's result (of
# quality_mnist.py, only `count_errors`: a change to the Hinton parts does
# not retrain the method table).
BENCH_SOURCES = ("common.py", "quality_methods.py")


def library_fingerprint():
    """sha256 of the library's source (`tf_distill/**/*.py`)."""
    return _source_digest([])


def code_fingerprint():
    """sha256 of the library's and the bench's source: a cached result is
    of this code, as a teacher cache is of its teacher (`tf_distill.cache`)."""
    import inspect

    paths = [os.path.join(BENCH_DIR, name) for name in BENCH_SOURCES]
    return _source_digest(paths, inspect.getsource(count_errors))


def _source_digest(extra_paths, extra_text=""):
    digest = hashlib.sha256(extra_text.encode())
    library = os.path.join(REPO_ROOT, "tf_distill")
    paths = sorted(glob.glob(os.path.join(library, "**", "*.py"), recursive=True))
    paths += extra_paths
    for path in paths:
        digest.update(os.path.relpath(path, REPO_ROOT).encode())
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


def file_digest(path):
    """sha256 of a file's bytes (the cached teacher: its weights, not its name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprints(data, teacher_path):
    """What every run of the part shares: the data's content, the teacher's
    file, the code and the versions."""
    from tf_distill.data import fingerprint_arrays

    return {
        "data": fingerprint_arrays(
            data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test
        ),
        "teacher": file_digest(teacher_path),
        "code": code_fingerprint(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def run_description(key, factor, seed, settings, shared):
    """Everything that shapes one run's result (JSON-able)."""
    method = methods_by_key().get(key)
    return {
        "kind": "methods_run",
        "key": key,
        "factor": float(factor),
        "seed": seed,
        "settings": settings,
        "method": None if method is None else dataclasses.asdict(method),
        "revision": None if method is None else revision(key),
        **shared,
    }


def run_seed(description):
    """The global seed of one run: a function of the run alone, so its
    unseeded random ops (CRD's negatives) do not depend on what ran before."""
    text = json.dumps([description["key"], description["factor"], description["seed"]])
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class NotCached(Exception):
    """A run asked for from the cache only (`compute=None`) is not in it."""


def cached_run(cache_dir, description, compute):
    """Loads the run's result saved under its fingerprint, or computes and saves it.

    Args:
        cache_dir: The folder (runs go in `methods_runs/` there), or None.
        description: `run_description(...)`.
        compute: A function of no arguments returning the run's result, or
            None to raise `NotCached` on a miss.

    Returns:
        The result, with `"cached": True` when it was loaded.
    """
    text = json.dumps(description, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    name = f"{description['key'] or 'alone'}_{digest}.json"
    path = os.path.join(cache_dir, "methods_runs", name) if cache_dir else None
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            return {**json.load(handle), "cached": True}
    if compute is None:
        raise NotCached(description["key"])
    keras.utils.set_random_seed(run_seed(description))
    result = compute()
    if path:
        from tf_distill.files import atomic_write

        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, json.dumps(result))
    return {**result, "cached": False}


def run_row(teacher, cache, data, settings, seeds, key, factors, shared, cache_dir=None,
            cached_only=False):
    """One row: the student alone (`key=None`) on every seed, or a method at
    its paper's setting on every seed, its search factors on the first seed
    and the chosen factor on the others.

    With `cached_only`, every run must be in the cache (else `NotCached`):
    the teacher, its cache and the data's arrays are not read.

    Returns:
        For the alone row, `{"test": [...], "validation": [...], "seconds":
        [...]}`; for a method, `{"runs": ..., "chosen_factor": f,
        "revision": r}` (see `run_methods`).
    """
    method = methods_by_key().get(key)

    def one(factor, seed):
        description = run_description(key, factor, seed, settings, shared)
        run = cached_run(
            cache_dir, description,
            None if cached_only else (
                lambda: train_one(teacher, cache, data, settings, seed, method, factor)
            ),
        )
        origin = "cached" if run["cached"] else f"{run['seconds']:.0f} s"
        common.log(
            f"methods seed {seed} {key or 'alone'}"
            + ("" if method is None else f" ×{factor:g}")
            + f": {run['test']} test, {run['validation']} validation errors ({origin})"
        )
        return run

    if method is None:
        runs = [one(1.0, seed) for seed in seeds]
        return {name: [run[name] for run in runs] for name in ("test", "validation", "seconds")}
    runs = {}

    def record(factor, seed):
        run = one(factor, seed)
        entry = runs.setdefault(repr(float(factor)), {"test": {}, "validation": {}})
        entry["test"][seed] = run["test"]
        entry["validation"][seed] = run["validation"]

    for seed in seeds:
        record(1.0, seed)
    for factor in factors:
        if factor != 1.0:
            record(factor, seeds[0])
    # Fewest validation errors on the first seed; ties go to the paper's.
    candidates = sorted(runs, key=lambda f: (runs[f]["validation"][seeds[0]], float(f) != 1.0))
    chosen = candidates[0]
    for seed in seeds[1:]:
        if seed not in runs[chosen]["test"]:
            record(float(chosen), seed)
    return {"runs": runs, "chosen_factor": float(chosen), "revision": revision(key)}


def _row_in_process(spec):
    """The worker's side: loads the data and the cached teacher, runs one row."""
    data = common.load_mnist(**spec["data_args"])
    teacher = keras.saving.load_model(spec["teacher_path"])
    cache = teacher_cache(teacher, data)
    return run_row(
        teacher, cache, data, spec["settings"], spec["seeds"], spec["key"], spec["factors"],
        spec["shared"], spec["cache_dir"],
    )


def _row_in_subprocess(spec, threads=None):
    """Runs one row in a fresh Python process (`--worker`); returns its result.

    `threads`: TensorFlow's intra-op threads in that process (None: its
    default, every core)."""
    with tempfile.TemporaryDirectory() as folder:
        spec_path = os.path.join(folder, "spec.json")
        out_path = os.path.join(folder, "result.json")
        with open(spec_path, "w", encoding="utf-8") as handle:
            json.dump(spec, handle)
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [REPO_ROOT, BENCH_DIR] + [p for p in [environment.get("PYTHONPATH")] if p]
        )
        if threads is not None:
            environment["TF_NUM_INTRAOP_THREADS"] = str(threads)
            environment["TF_NUM_INTEROP_THREADS"] = "1"
        subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", spec_path, out_path],
            check=True, env=environment,
        )
        with open(out_path, encoding="utf-8") as handle:
            return _int_seeds(json.load(handle))


def _int_seeds(row):
    """JSON turned the seeds (dict keys) into strings; back to ints."""
    for entry in row.get("runs", {}).values():
        for split in ("test", "validation"):
            entry[split] = {int(seed): n for seed, n in entry[split].items()}
    return row


def run_methods(teacher, data, settings, seeds, keys, factors=SEARCH_FACTORS,
                cache_dir=None, teacher_path=None, data_args=None, isolate=None, jobs=1):
    """Trains the student alone and every method; returns the raw results.

    Each row (the student alone, then each method) runs in a process of its
    own when `isolate` (the default given `teacher_path` and `data_args`,
    which the process needs to load the teacher and the data), so no row's
    result depends on which rows ran before it; each run also starts from a
    global seed of its own (`run_seed`). With `cache_dir`, each run's errors
    are saved under the fingerprint of everything that shapes them
    (`run_description`: settings, method, data, teacher file, code), and a
    later part or run with the same fingerprint reads them instead of
    training again. With `isolate`, `jobs` rows run at a time, each process
    on `cpu_count // jobs` threads (a small CNN uses 2 cores poorly: two rows
    of one thread each finish sooner than one after the other on two).

    Returns:
        `{"alone": {"test": [...], "validation": [...]}, "methods": {key:
        {"runs": {factor: {"test": {seed: n}, "validation": {seed: n}}},
        "chosen_factor": f, "revision": r}}}` (`r`: the method's `revision`;
        results without it were measured at revision 1).
    """
    if isolate is None:
        isolate = teacher_path is not None and data_args is not None
    if teacher_path is None:
        cache_dir = None  # No fingerprint of the teacher: nothing is cached.
    shared = fingerprints(data, teacher_path) if teacher_path else {}
    spec = {"data_args": data_args, "teacher_path": teacher_path, "settings": settings,
            "seeds": list(seeds), "factors": list(factors), "shared": shared,
            "cache_dir": cache_dir}
    if isolate:
        def row(key):
            # A row whose every run is cached needs no process of its own.
            if cache_dir is not None:
                try:
                    return run_row(None, None, None, settings, seeds, key, factors, shared,
                                   cache_dir, cached_only=True)
                except NotCached:
                    pass
            return _row_in_subprocess({**spec, "key": key}, threads)

        threads = None if jobs <= 1 else max(1, (os.cpu_count() or 1) // jobs)
    else:
        cache = teacher_cache(teacher, data)
        common.log(f"Methods: {cache}")

        def row(key):
            return run_row(teacher, cache, data, settings, seeds, key, factors, shared, cache_dir)

    if isolate and jobs > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            done = list(pool.map(row, [None, *keys]))
        return {"alone": done[0], "methods": dict(zip(keys, done[1:]))}
    alone = row(None)
    return {"alone": alone, "methods": {key: row(key) for key in keys}}


def _worker(argv):
    """`quality_methods.py --worker SPEC OUT`: one row, its result written to OUT."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), required=True)
    spec_path, out_path = parser.parse_args(argv).worker
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    result = _row_in_process(spec)
    from tf_distill.files import atomic_write

    atomic_write(out_path, json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(_worker(sys.argv[1:]))
