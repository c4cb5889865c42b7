"""Parts 1–3 of `bench_quality.py`: Hinton et al. (2015)'s MNIST MLPs.

- `hinton_teacher`: 784-1200-1200-10 with dropout, trained on all 60,000
  images with ±2-pixel jitter, once, and cached as a `.keras` file.
- `run_hinton`: the 784-800-800-10 student without regularization, alone
  and distilled at T = 20, on all the data.
- `run_small_transfer`: the same student alone and distilled on stratified
  subsets (2 %, 5 %) of the training set.
- `run_unlabeled`: the labeled 2 % plus the rest of MNIST without labels.

Every student run is a `tf_distill.Distiller` training on the teacher's
cached logits (`tf_distill.build_teacher_cache`): "alone" is the same
Distiller with `student_loss_weight=1` and the distillation weight 0, so
that, within a seed, alone and distilled start from the same weights and
see the same batches in the same order.
"""

import time

import common
import numpy as np

import tf_distill
from tf_distill.backend import keras
from tf_distill.backend import tf

TEACHER_HIDDEN = (1200, 1200)
STUDENT_HIDDEN = (800, 800)
JITTER_PIXELS = 2


def build_mlp(hidden, num_classes, input_shape, input_dropout=0.0, dropout=0.0, seed=0, name=None):
    """A ReLU MLP that outputs logits, seeded layer by layer."""
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs)
    if input_dropout > 0:
        x = keras.layers.Dropout(input_dropout, seed=seed + 100, name="input_dropout")(x)
    for index, units in enumerate(hidden, start=1):
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + index),
            name=f"dense{index}",
        )(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, seed=seed + 100 + index, name=f"dropout{index}")(x)
    outputs = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 99),
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


def hinton_teacher(data, settings, cache_dir):
    """Loads the cached teacher, or trains it once (dropout, jitter) and
    caches it. Returns `(teacher, info)`."""
    batch_size = settings["batch_size"]
    # Everything that shapes the teacher names its file.
    description = {
        "kind": "hinton_teacher",
        "hidden": TEACHER_HIDDEN,
        "train": len(data.x_train),
        "epochs": settings["teacher_epochs"],
        "batch": batch_size,
        "lr": settings["teacher_learning_rate"],
        "dropout": [settings["teacher_input_dropout"], settings["teacher_dropout"]],
        "jitter": JITTER_PIXELS,
        "keras": keras.__version__,
    }

    def train():
        teacher = build_mlp(
            TEACHER_HIDDEN,
            data.num_classes,
            data.input_shape,
            input_dropout=settings["teacher_input_dropout"],
            dropout=settings["teacher_dropout"],
            seed=0,
            name="hinton_teacher",
        )
        steps = settings["teacher_epochs"] * -(-len(data.x_train) // batch_size)
        teacher.compile(
            optimizer=common.adam(settings["teacher_learning_rate"], steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        teacher.fit(
            jittered_batches(data.x_train, data.y_train, batch_size, seed=0),
            epochs=settings["teacher_epochs"],
            verbose=0,
        )
        return teacher

    path = common.cache_path(cache_dir, "hinton_teacher", description)
    return common.cached_model(path, train, "Hinton teacher")


def distill_student(teacher, train, epochs, seed, settings, distilled, data, extra=None):
    """Trains one 784-800-800-10 student on `train` (a `TeacherCache`).

    Args:
        distilled: KD at `settings["temperature"]` with hard-label weight
            `settings["alpha"]`; otherwise the student alone (CE only).
        extra: An optional second `TeacherCache` (unlabeled: x only),
            alternated with `train` epoch by epoch, `extra` first.

    Returns:
        Test error count (of `len(data.y_test)`).
    """
    student = build_mlp(
        STUDENT_HIDDEN, data.num_classes, data.input_shape, seed=1000 + seed, name="student"
    )
    batch_size = settings["student_batch_size"]
    steps = -(-len(train) // batch_size)
    if extra is not None:
        steps += -(-len(extra) // batch_size)
    distiller = tf_distill.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=tf_distill.LogitsDistillation(temperature=settings["temperature"]),
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
    return count_errors(student, data.x_test, data.y_test)


def paired_runs(teacher, train, epochs, seeds, settings, data, label, variants):
    """`{variant: [errors per seed]}` for `variants` ⊂ {"alone", "distilled"}."""
    errors = {variant: [] for variant in variants}
    for seed in seeds:
        for variant in variants:
            start = time.perf_counter()
            value = distill_student(
                teacher, train, epochs, seed, settings, variant == "distilled", data
            )
            errors[variant].append(value)
            common.log(
                f"{label} seed {seed} {variant}: {value} errors "
                f"({time.perf_counter() - start:.0f} s)"
            )
    return errors


def run_hinton(teacher, data, settings, seeds):
    """Part 1: the student alone and distilled on all the training data."""
    train = tf_distill.build_teacher_cache(teacher, (data.x_train, data.y_train))
    return paired_runs(
        teacher,
        train,
        settings["student_epochs"],
        seeds,
        settings,
        data,
        "hinton",
        ("alone", "distilled"),
    )


def subset_epochs(size, settings):
    """Epochs on a subset: about `settings["subset_steps"]` steps, at least
    `settings["student_epochs"]` epochs."""
    steps_per_epoch = -(-size // settings["student_batch_size"])
    return max(settings["student_epochs"], round(settings["subset_steps"] / steps_per_epoch))


def run_small_transfer(teacher, data, settings, seeds, fractions):
    """Part 2: alone and distilled on the same stratified subsets.

    Returns `{fraction: {"size", "epochs", "alone": [...], "distilled": [...]}}`.
    """
    results = {}
    for fraction in fractions:
        size = int(round(fraction * len(data.x_train)))
        chosen, _ = stratified_indices(data.y_train, size, seed=0)
        train = tf_distill.build_teacher_cache(
            teacher, (data.x_train[chosen], data.y_train[chosen])
        )
        epochs = subset_epochs(size, settings)
        errors = paired_runs(
            teacher,
            train,
            epochs,
            seeds,
            settings,
            data,
            f"subset {fraction:.0%}",
            ("alone", "distilled"),
        )
        results[fraction] = {"size": size, "epochs": epochs, **errors}
    return results


def run_unlabeled(teacher, data, settings, seeds, fraction):
    """Part 3: the labeled subset plus the rest of the training images
    without their labels, alternated epoch by epoch.

    Returns `{"labeled", "unlabeled", "epochs", "distilled": [...]}`.
    """
    size = int(round(fraction * len(data.x_train)))
    chosen, rest = stratified_indices(data.y_train, size, seed=0)
    labeled = tf_distill.build_teacher_cache(teacher, (data.x_train[chosen], data.y_train[chosen]))
    unlabeled = tf_distill.build_teacher_cache(teacher, (data.x_train[rest], None))
    epochs = settings["student_epochs"]
    errors = []
    for seed in seeds:
        start = time.perf_counter()
        value = distill_student(
            teacher, labeled, epochs, seed, settings, True, data, extra=unlabeled
        )
        errors.append(value)
        common.log(f"unlabeled seed {seed}: {value} errors ({time.perf_counter() - start:.0f} s)")
    return {"labeled": size, "unlabeled": len(rest), "epochs": epochs, "distilled": errors}
