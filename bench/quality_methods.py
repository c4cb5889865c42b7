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

import dataclasses
import time

import common
from quality_mnist import count_errors

import tf_distill
from tf_distill.backend import keras

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
        "standardize=True, T = 2; CE 0.1 + KD 9 (Sun et al. 2024)",
    ),
    Method(
        "ctkd",
        "CTKD",
        [{"name": "ctkd", "lambda_max": 1.0, "curriculum_epochs": 10}],
        [1.0],
        0.1,
        "global T = 1 + 20·sigmoid(θ) learned through gradient reversal, λ: 0 → 1 "
        "on a cosine over 10 epochs; CE 0.1 + KD 0.9 (Li et al. 2023, official script)",
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
        "`features`, 128-d heads, τ = 0.07, momentum 0.5, K = 4096 negatives capped at "
        "a quarter of the training set (paper: 16,384 of 50,000); CE 1 + CRD 0.8 "
        "(Tian et al. 2020)",
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
        "test": count_errors(student, data.x_test, data.y_test),
        "validation": count_errors(student, data.x_val, data.y_val),
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


def run_methods(teacher, data, settings, seeds, keys, factors=SEARCH_FACTORS):
    """Trains the student alone and every method; returns the raw results.

    Returns:
        `{"alone": {"test": [...], "validation": [...]}, "methods": {key:
        {"runs": {factor: {"test": {seed: n}, "validation": {seed: n}}},
        "chosen_factor": f, "revision": r}}}` (`r`: the method's `revision`;
        results without it were measured at revision 1).
    """
    cache = teacher_cache(teacher, data)
    common.log(f"Methods: {cache}")
    alone = {"test": [], "validation": [], "seconds": []}
    for seed in seeds:
        run = train_one(teacher, cache, data, settings, seed)
        for name in alone:
            alone[name].append(run[name])
        common.log(f"methods seed {seed} alone: {run['test']} test errors ({run['seconds']:.0f} s)")
    chosen_methods = methods_by_key()
    results = {}
    for key in keys:
        method = chosen_methods[key]
        runs = {}

        def record(factor, seed, method=method, runs=runs, key=key):
            run = train_one(teacher, cache, data, settings, seed, method, factor)
            entry = runs.setdefault(repr(float(factor)), {"test": {}, "validation": {}})
            entry["test"][seed] = run["test"]
            entry["validation"][seed] = run["validation"]
            common.log(
                f"methods seed {seed} {key} ×{factor:g}: {run['test']} test, "
                f"{run['validation']} validation errors ({run['seconds']:.0f} s)"
            )

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
        results[key] = {"runs": runs, "chosen_factor": float(chosen), "revision": revision(key)}
    return {"alone": alone, "methods": results}
