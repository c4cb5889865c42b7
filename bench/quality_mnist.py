"""Parts 1–3 of `bench_quality.py`: Hinton et al. (2015)'s MNIST MLPs.

- `hinton_teacher`: 784-1200-1200-10 with the paper's regularization
  (dropout 0.2 on the inputs and 0.5 on the hidden units, max-norm,
  ±2-pixel jitter), trained by momentum SGD or Adam, once, and cached as a
  `.keras` file named after its recipe and data.
- `run_hinton`: the 784-800-800-10 student without regularization, alone
  and distilled, on the images as they are and on jittered images (the
  teacher queried on the same shifted images: `train_jittered`); T chosen
  on validation.
- `run_small_transfer`: the same student alone and distilled on stratified
  subsets (2 %, 5 %) of the training set.
- `run_unlabeled`: the labeled 2 % plus the rest of MNIST without labels.

Every student run goes through `Runs`, which keeps its errors under a
fingerprint (settings, data, teacher file for distilled runs, code), so a
rerun or a later part reads it back. On the images as they are, distilled
students train with a `tf_distill.Distiller` on the teacher's cached logits
(`tf_distill.build_teacher_cache`); the student alone trains with plain
cross-entropy on `ordered_batches`, the same batches in the same order,
from the same initial weights, so the comparison is paired within a seed
and the student alone needs no teacher. On jittered images both see the
same `jittered_batches`, and the Distiller runs the teacher at each step.
"""

import os
import time

import common
import numpy as np

import tf_distill
from tf_distill.backend import keras
from tf_distill.backend import tf

TEACHER_HIDDEN = (1200, 1200)
STUDENT_HIDDEN = (800, 800)
JITTER_PIXELS = 2
# Bumped when `hinton_teacher`'s training code changes (see `teacher_description`).
TEACHER_RECIPE = 3


def build_mlp(
    hidden,
    num_classes,
    input_shape,
    input_dropout=0.0,
    dropout=0.0,
    seed=0,
    name=None,
    max_norm=None,
):
    """A ReLU MLP that outputs logits, seeded layer by layer.

    `max_norm` bounds the L2 norm of each unit's incoming weights
    (Srivastava et al. 2014, the constraint Hinton et al.'s dropout nets
    were trained with); None leaves them free.
    """

    def constraint():
        return None if max_norm is None else keras.constraints.MaxNorm(max_norm, axis=0)

    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs)
    if input_dropout > 0:
        x = keras.layers.Dropout(input_dropout, seed=seed + 100, name="input_dropout")(x)
    for index, units in enumerate(hidden, start=1):
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + index),
            kernel_constraint=constraint(),
            name=f"dense{index}",
        )(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, seed=seed + 100 + index, name=f"dropout{index}")(x)
    outputs = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 99),
        kernel_constraint=constraint(),
        name="logits",
    )(x)
    return keras.Model(inputs, outputs, name=name or "mlp")


def stratified_indices(labels, count, seed):
    """`(chosen, rest)` index arrays: `count` examples with the class shares
    of `labels`, chosen with `seed`, and the others."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.floor(counts * count / len(labels)).astype(int)
    # Largest remainders get the examples that rounding down left over.
    remainders = counts * count / len(labels) - quotas
    for index in np.argsort(-remainders)[: count - quotas.sum()]:
        quotas[index] += 1
    chosen = []
    for label, quota in zip(classes, quotas):
        members = np.flatnonzero(labels == label)
        chosen.append(rng.choice(members, size=quota, replace=False))
    chosen = np.sort(np.concatenate(chosen))
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    return chosen, rest


def jitter(images, seed, pixels=JITTER_PIXELS):
    """Random integer translations by up to ±`pixels` (zero fill), one per
    image: `pad` then a random crop, as Hinton et al.'s teacher was trained."""
    height, width = images.shape[1:3]
    padded = tf.pad(images, [[0, 0], [pixels, pixels], [pixels, pixels], [0, 0]])
    batch = tf.shape(images)[0]
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed=seed, minval=0, maxval=2 * pixels + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[None, :]
    columns = offsets[:, 1:] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, columns, axis=2, batch_dims=1)


def jittered_batches(x, y, batch_size, seed):
    """Shuffled batches with a fresh jitter each epoch (seeded)."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    # One random seed per batch, drawn anew each epoch.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip((dataset, seeds))

    def shift(batch, batch_seed):
        images, labels = batch
        return jitter(images, tf.stack([batch_seed, tf.constant(seed, tf.int64)])), labels

    return dataset.map(shift, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def count_errors(model, x, y):
    logits = model.predict(x, batch_size=1000, verbose=0)
    return int(np.sum(np.argmax(logits, axis=-1) != y))


def momentum_sgd(learning_rate, momentum, total_steps):
    """Nesterov momentum SGD with a cosine decay of `learning_rate` to 0."""
    return keras.optimizers.SGD(
        keras.optimizers.schedules.CosineDecay(learning_rate, max(1, int(total_steps))),
        momentum=momentum,
        nesterov=True,
    )


def teacher_optimizer_name(settings):
    """`settings["teacher_optimizer"]`: "sgd" (Nesterov momentum, the
    paper's kind, the default) or "adam", both cosine-decayed to 0."""
    kind = settings.get("teacher_optimizer", "sgd")
    if kind not in ("sgd", "adam"):
        raise ValueError(f"Expected teacher_optimizer 'sgd' or 'adam'. Received: {kind!r}")
    return {"sgd": "sgd_nesterov_cosine", "adam": "adam_cosine"}[kind]


def teacher_description(data, settings):
    """Everything that shapes the teacher: its recipe, the content of its
    training data, the versions. The teacher is plain Keras (no tf_distill
    code trains it), so `TEACHER_RECIPE` is bumped by hand when
    `hinton_teacher`'s code changes."""
    from tf_distill.data import fingerprint_arrays

    return {
        "kind": "hinton_teacher",
        "recipe": TEACHER_RECIPE,
        "hidden": TEACHER_HIDDEN,
        "data": fingerprint_arrays(data.x_train, data.y_train),
        "epochs": settings["teacher_epochs"],
        "batch": settings["batch_size"],
        "optimizer": teacher_optimizer_name(settings),
        "lr": settings["teacher_learning_rate"],
        "momentum": settings["teacher_momentum"],
        "max_norm": settings["teacher_max_norm"],
        "dropout": [settings["teacher_input_dropout"], settings["teacher_dropout"]],
        "jitter": JITTER_PIXELS,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def hinton_teacher(data, settings, cache_dir):
    """Loads the cached teacher, or trains it once and caches it.

    As Hinton et al. (2015) trained theirs: dropout 0.2 on the inputs and
    0.5 on the hidden units, max-norm constraints, ±2-pixel jitter, momentum
    SGD at a high learning rate (decayed to 0). The file is named after
    `teacher_description`. Returns `(teacher, info)`.
    """
    batch_size = settings["batch_size"]

    def train():
        teacher = build_mlp(
            TEACHER_HIDDEN,
            data.num_classes,
            data.input_shape,
            input_dropout=settings["teacher_input_dropout"],
            dropout=settings["teacher_dropout"],
            max_norm=settings["teacher_max_norm"],
            seed=0,
            name="hinton_teacher",
        )
        steps = settings["teacher_epochs"] * -(-len(data.x_train) // batch_size)
        if teacher_optimizer_name(settings) == "adam_cosine":
            optimizer = common.adam(settings["teacher_learning_rate"], steps)
        else:
            optimizer = momentum_sgd(
                settings["teacher_learning_rate"], settings["teacher_momentum"], steps
            )
        teacher.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        teacher.fit(
            jittered_batches(data.x_train, data.y_train, batch_size, seed=0),
            epochs=settings["teacher_epochs"],
            verbose=0,
            callbacks=[EpochLog("Hinton teacher")],
        )
        return teacher

    path = common.cache_path(cache_dir, "hinton_teacher", teacher_description(data, settings))
    return common.cached_model(path, train, "Hinton teacher")


class EpochLog(keras.callbacks.Callback):
    """Logs the loss every `every` epochs: a long training shows its progress."""

    def __init__(self, name, every=5):
        super().__init__()
        self.name, self.every = name, every

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            common.log(f"{self.name}: epoch {epoch + 1}, loss {(logs or {}).get('loss', 0):.4f}")


def ordered_batches(x, y, batch_size, seed):
    """`(x, y)` batches in the order `TeacherCache.dataset(shuffle=True,
    seed=seed)` gives its examples: the student alone sees, batch for
    batch, what its distilled twin sees, without any teacher."""
    tensors = [tf.constant(x), tf.constant(y)]
    indices = tf.data.Dataset.range(len(x))
    indices = indices.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

    def gather(index):
        index = tf.sort(index)
        return tuple(tf.gather(t, index) for t in tensors)

    batches = indices.batch(batch_size).map(gather, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)


def build_student(data, seed):
    return build_mlp(
        STUDENT_HIDDEN, data.num_classes, data.input_shape, seed=1000 + seed, name="student"
    )


def evaluate(student, data):
    """`{"validation": errors or None, "test": errors}`."""
    validation = None
    if data.x_val is not None and len(data.x_val):
        validation = count_errors(student, data.x_val, data.y_val)
    return {"validation": validation, "test": count_errors(student, data.x_test, data.y_test)}


def train_alone(x, y, epochs, seed, settings, data):
    """The 784-800-800-10 student trained alone (cross-entropy, no teacher)
    on `(x, y)`. Returns `evaluate`'s errors."""
    # The global seed too: the shuffles depend on it (paired with `distill_student`).
    keras.utils.set_random_seed(seed)
    student = build_student(data, seed)
    batch_size = settings["student_batch_size"]
    steps = -(-len(x) // batch_size)
    student.compile(
        optimizer=common.adam(settings["learning_rate"], epochs * steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    student.fit(ordered_batches(x, y, batch_size, seed), epochs=epochs, verbose=0)
    return evaluate(student, data)


def distill_student(teacher, train, epochs, seed, settings, distilled, data, extra=None,
                    temperature=None, both_splits=False):
    """Trains one 784-800-800-10 student on `train` (a `TeacherCache`).

    Args:
        distilled: KD at `temperature` (default `settings["temperature"]`)
            with hard-label weight `settings["alpha"]`; otherwise the
            student alone (CE only, the same Distiller with KD weight 0).
        extra: An optional second `TeacherCache` (unlabeled: x only),
            alternated with `train` epoch by epoch, `extra` first.
        both_splits: Return `evaluate`'s dict instead of the test count.

    Returns:
        Test error count (of `len(data.y_test)`), or the dict.
    """
    keras.utils.set_random_seed(seed)
    student = build_student(data, seed)
    batch_size = settings["student_batch_size"]
    steps = -(-len(train) // batch_size)
    if extra is not None:
        steps += -(-len(extra) // batch_size)
    if temperature is None:
        temperature = settings["temperature"]
    distiller = tf_distill.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=tf_distill.LogitsDistillation(temperature=temperature),
        distillation_loss_weights=[1.0 if distilled else 0.0],
        student_loss_weight=settings["alpha"] if distilled else 1.0,
    )
    distiller.compile(
        optimizer=common.adam(settings["learning_rate"], epochs * steps),
        loss="sparse_categorical_crossentropy",
    )
    batches = train.dataset(batch_size=batch_size, shuffle=True, seed=seed)
    if extra is None:
        distiller.fit(batches, epochs=epochs, verbose=0)
    else:
        unlabeled = extra.dataset(batch_size=batch_size, shuffle=True, seed=seed)
        for _ in range(epochs):
            distiller.fit(unlabeled, epochs=1, verbose=0)
            distiller.fit(batches, epochs=1, verbose=0)
    errors = evaluate(student, data)
    return errors if both_splits else errors["test"]


def train_jittered(teacher, x, y, epochs, seed, settings, data, temperature=None):
    """The 784-800-800-10 student on jittered images (`jittered_batches`:
    a fresh ±2-pixel shift of every image each epoch, as the teacher was
    trained), alone or distilled.

    Args:
        teacher: None: the student alone (cross-entropy). Otherwise a
            `tf_distill.Distiller` queries the teacher on the very images the
            student sees at each step (the "consistent" teaching of Beyer
            et al. 2022), KD at `temperature` with hard-label weight
            `settings["alpha"]`: the transfer set is the teacher's own
            training distribution, so its soft targets pass on the shift
            invariance it learned.

    The same initial weights and the same jittered batches in the same
    order for alone and distilled within a seed (paired). Returns
    `evaluate`'s errors.
    """
    keras.utils.set_random_seed(seed)
    student = build_student(data, seed)
    batch_size = settings["student_batch_size"]
    optimizer = common.adam(settings["learning_rate"], epochs * -(-len(x) // batch_size))
    batches = jittered_batches(x, y, batch_size, seed)
    if teacher is None:
        student.compile(
            optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        student.fit(batches, epochs=epochs, verbose=0)
    else:
        distiller = tf_distill.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=tf_distill.LogitsDistillation(temperature=temperature),
            student_loss_weight=settings["alpha"],
        )
        distiller.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        distiller.fit(batches, epochs=epochs, verbose=0)
    return evaluate(student, data)


# ----------------------------------------------------------------------
# Fingerprinted runs: a student's errors are kept under a digest of what
# shapes them, so that a rerun, or a later part, reads them back.

# The source of these functions is the code that shapes a student run.
_RUN_CODE = (
    "build_mlp", "ordered_batches", "build_student", "evaluate", "train_alone",
    "distill_student", "count_errors", "jitter", "jittered_batches", "train_jittered",
)
_STUDENT_SETTINGS = ("student_batch_size", "learning_rate", "alpha")


def code_fingerprint():
    """sha256 of the library's source and of the functions above: a change
    anywhere in either trains anew; a change elsewhere in the bench does not."""
    import hashlib
    import inspect

    import quality_methods

    digest = hashlib.sha256(quality_methods.library_fingerprint().encode())
    for name in _RUN_CODE:
        digest.update(inspect.getsource(globals()[name]).encode())
    return digest.hexdigest()


class Runs:
    """The student runs of parts 1–3, each cached as JSON under
    `cache_dir/hinton_runs/` with a name digested from its description:
    the settings that shape it, the content of its data, the teacher's file
    (distilled runs only: a student alone does not depend on the teacher),
    the code and the versions."""

    def __init__(self, cache_dir, data, settings, teacher=None, teacher_path=None):
        import quality_methods

        from tf_distill.data import fingerprint_arrays

        self.cache_dir, self.data, self.settings = cache_dir, data, settings
        self.teacher = teacher
        self.teacher_digest = quality_methods.file_digest(teacher_path) if teacher_path else None
        self.shared = {
            "students": {key: settings[key] for key in _STUDENT_SETTINGS},
            "evaluation": fingerprint_arrays(data.x_val, data.y_val, data.x_test, data.y_test),
            "code": code_fingerprint(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        }
        self._train_fingerprints = {}
        self._caches = {}

    def _train_fingerprint(self, indices):
        from tf_distill.data import fingerprint_arrays

        key = None if indices is None else indices.tobytes()
        if key not in self._train_fingerprints:
            x, y = self._arrays(indices)
            self._train_fingerprints[key] = fingerprint_arrays(x, y)
        return self._train_fingerprints[key]

    def _arrays(self, indices):
        if indices is None:
            return self.data.x_train, self.data.y_train
        return self.data.x_train[indices], self.data.y_train[indices]

    def teacher_cache(self, indices, labeled=True):
        key = (None if indices is None else indices.tobytes(), labeled)
        if key not in self._caches:
            x, y = self._arrays(indices)
            self._caches[key] = tf_distill.build_teacher_cache(
                self.teacher, (x, y if labeled else None)
            )
        return self._caches[key]

    def run(self, label, variant, seed, epochs, indices=None, temperature=None, unlabeled=None):
        """One student's `{"validation", "test", "seconds", "cached"}`.

        Args:
            variant: "alone" or "distilled" (on the images as they are,
                the teacher's logits cached), or "alone_jittered" or
                "distilled_jittered" (`train_jittered`: every image shifted
                anew each epoch, the teacher queried on the shifted images).
            indices: Training images (rows of `data.x_train`); None: all.
            unlabeled: Rows used without labels, alternated with `indices`
                epoch by epoch (distilled only).
        """
        import hashlib
        import json

        description = {
            "kind": "hinton_run",
            "variant": variant,
            "seed": seed,
            "epochs": epochs,
            "train": self._train_fingerprint(indices),
            "unlabeled": None if unlabeled is None else self._train_fingerprint(unlabeled),
            **self.shared,
        }
        if variant.startswith("distilled"):
            description.update({"temperature": float(temperature), "teacher": self.teacher_digest})
        if variant.endswith("jittered"):
            description["jitter"] = JITTER_PIXELS
        text = json.dumps(description, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        path = None
        if self.cache_dir:
            path = os.path.join(self.cache_dir, "hinton_runs", f"{variant}_{digest}.json")
        name = f"{label} seed {seed} {variant}" + (
            f" T={temperature:g}" if variant.startswith("distilled") else ""
        )
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                result = {**json.load(handle), "cached": True}
            common.log(f"{name}: {result['test']} test errors (cached)")
            return result
        start = time.perf_counter()
        if variant == "alone":
            x, y = self._arrays(indices)
            errors = train_alone(x, y, epochs, seed, self.settings, self.data)
        elif variant.endswith("jittered"):
            x, y = self._arrays(indices)
            teacher = self.teacher if variant == "distilled_jittered" else None
            errors = train_jittered(
                teacher, x, y, epochs, seed, self.settings, self.data, temperature=temperature
            )
        else:
            extra = None if unlabeled is None else self.teacher_cache(unlabeled, labeled=False)
            errors = distill_student(
                self.teacher, self.teacher_cache(indices), epochs, seed, self.settings, True,
                self.data, extra=extra, temperature=temperature, both_splits=True,
            )
        result = {**errors, "seconds": time.perf_counter() - start}
        if path:
            from tf_distill.files import atomic_write

            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, json.dumps(result))
        common.log(
            f"{name}: {result['test']} test, {result['validation']} validation errors "
            f"({result['seconds']:.0f} s)"
        )
        return {**result, "cached": False}


def choose_temperature(by_temperature):
    """The temperature of fewest validation errors summed over seeds (the
    first listed on a tie). `by_temperature`: `{T: {"validation": [...]}}`."""
    return min(by_temperature, key=lambda t: sum(by_temperature[t]["validation"]))


def run_hinton(runs, settings, seeds):
    """Part 1, every seed:

    - the student alone on the images as they are (the paper's baseline,
      no regularization);
    - the student alone on jittered images (the control: what the shifts
      alone give);
    - the student distilled on jittered images, the teacher queried on the
      same shifted images, at each of `settings["temperatures"]`; T is
      chosen on the validation images and the test errors reported at it;
    - the student distilled on the images as they are (the teacher's
      logits cached: the paper's protocol read literally) at that T.

    Returns `{"errors": {"alone", "distilled", "alone_jittered",
    "distilled_unjittered"} (test errors per seed; "distilled" is the
    jittered one at the chosen T), "alone_validation", "temperatures": {T:
    {"validation", "test", "seconds", "cached"}}, "chosen_temperature",
    "others": {name: the same keys}}` ("alone_seconds" and "alone_cached"
    too).
    """
    epochs = settings["student_epochs"]

    def columns(results):
        return {key: [r[key] for r in results] for key in ("validation", "test", "seconds", "cached")}

    alone = columns([runs.run("hinton", "alone", seed, epochs) for seed in seeds])
    alone_jittered = columns([runs.run("hinton", "alone_jittered", seed, epochs) for seed in seeds])
    by_temperature = {}
    for temperature in settings["temperatures"]:
        by_temperature[float(temperature)] = columns([
            runs.run("hinton", "distilled_jittered", seed, epochs, temperature=temperature)
            for seed in seeds
        ])
    chosen = choose_temperature(by_temperature)
    unjittered = columns([
        runs.run("hinton", "distilled", seed, epochs, temperature=chosen) for seed in seeds
    ])
    return {
        "errors": {
            "alone": alone["test"],
            "distilled": by_temperature[chosen]["test"],
            "alone_jittered": alone_jittered["test"],
            "distilled_unjittered": unjittered["test"],
        },
        "alone_validation": alone["validation"],
        "alone_seconds": alone["seconds"],
        "alone_cached": alone["cached"],
        "others": {"alone_jittered": alone_jittered, "distilled_unjittered": unjittered},
        "temperatures": {repr(t): entry for t, entry in by_temperature.items()},
        "chosen_temperature": chosen,
    }


def subset_epochs(size, settings):
    """Epochs on a subset: about `settings["subset_steps"]` steps, at least
    `settings["student_epochs"]` epochs."""
    steps_per_epoch = -(-size // settings["student_batch_size"])
    return max(settings["student_epochs"], round(settings["subset_steps"] / steps_per_epoch))


def run_small_transfer(runs, settings, seeds, fractions, temperature):
    """Part 2: alone and distilled (at `temperature`) on the same
    stratified subsets.

    Returns `{fraction: {"size", "epochs", "alone": [...], "distilled": [...]}}`.
    """
    labels = runs.data.y_train
    results = {}
    for fraction in fractions:
        size = int(round(fraction * len(labels)))
        chosen, _ = stratified_indices(labels, size, seed=0)
        epochs = subset_epochs(size, settings)
        label = f"subset {fraction:.0%}"
        entry = {"size": size, "epochs": epochs, "temperature": temperature, "seconds": 0.0}
        for variant in ("alone", "distilled"):
            done = [
                runs.run(label, variant, seed, epochs, indices=chosen, temperature=temperature)
                for seed in seeds
            ]
            entry[variant] = [r["test"] for r in done]
            entry["seconds"] += sum(r["seconds"] for r in done)
        results[fraction] = entry
    return results


def run_unlabeled(runs, settings, seeds, fraction, temperature):
    """Part 3: the labeled subset plus the rest of the training images
    without their labels, alternated epoch by epoch, distilled at
    `temperature`.

    Returns `{"labeled", "unlabeled", "epochs", "distilled": [...]}`.
    """
    labels = runs.data.y_train
    size = int(round(fraction * len(labels)))
    chosen, rest = stratified_indices(labels, size, seed=0)
    epochs = settings["student_epochs"]
    done = [
        runs.run(
            "unlabeled", "distilled", seed, epochs, indices=chosen, temperature=temperature,
            unlabeled=rest,
        )
        for seed in seeds
    ]
    return {
        "labeled": size,
        "unlabeled": len(rest),
        "epochs": epochs,
        "distilled": [r["test"] for r in done],
        "seconds": sum(r["seconds"] for r in done),
    }
