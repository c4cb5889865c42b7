import hashlib
import json
import os

import numpy as np
import pytest

from tf_distill import architectures
from tf_distill import cache
from tf_distill import data as data_lib
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.distillers.distiller import Distiller

INPUT_SHAPE = (8, 8, 1)
# Soft labels plus a tapped hidden layer: the cache must hold both.
LOSSES = [
    {"name": "kd", "temperature": 4.0},
    {"name": "fitnets", "teacher_layer_name": "features", "student_layer_name": "features"},
]


@pytest.fixture(scope="module")
def splits():
    return data_lib.load("digits")


def _teacher(seed=0):
    return architectures.build("mlp", INPUT_SHAPE, 10, size="medium", seed=seed, name="teacher")


def _distiller(teacher, losses=LOSSES):
    # The same seed makes the same student and adapter in every call.
    keras.utils.set_random_seed(3)
    student = architectures.build("mlp", INPUT_SHAPE, 10, size="small", seed=1, name="student")
    distiller = Distiller(teacher, student, losses, student_loss_weight=0.3)
    distiller.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy", ["accuracy"])
    return distiller


def _no_teacher(x):
    raise AssertionError("The teacher ran although its outputs were cached.")


def _random_arrays(count=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count,) + INPUT_SHAPE).astype("float32")
    y = rng.integers(0, 10, size=count).astype("int32")
    return x, y


def test_cached_training_equals_online_training_on_the_same_batches(splits):
    teacher = _teacher()
    cached, online = _distiller(teacher), _distiller(teacher)
    train = cache.cache_teacher_outputs(cached, splits, batch_size=64, seed=0)
    batches = list(train.take(6))
    cached.teacher_forward = _no_teacher
    for x, y in batches:
        assert set(x) == {"inputs", "teacher_outputs"}
        assert set(x["teacher_outputs"]) == {"logits", "features"}
        cached_logs = cached.train_on_batch(x, y, return_dict=True)
        online_logs = online.train_on_batch(x["inputs"], y, return_dict=True)
        for key in ("loss", "student_loss", "distillation_loss"):
            np.testing.assert_allclose(cached_logs[key], online_logs[key], rtol=1e-6)
    assert cached_logs["distillation_loss"] > 0.01
    assert len(cached.trainable_variables) == len(online.trainable_variables) > 6
    for a, b in zip(cached.trainable_variables, online.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    # The student did learn: its weights moved from their start.
    start = _distiller(teacher).student.get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(start, cached.student.get_weights())) > 1e-3


def test_fit_and_evaluate_on_a_cache_run_no_teacher(splits):
    distiller = _distiller(_teacher())
    train = cache.cache_teacher_outputs(distiller, splits, batch_size=128, seed=0)
    validation = cache.cache_teacher_outputs(distiller, splits, split="validation", batch_size=128)
    expected = distiller.evaluate(splits.x_val, splits.y_val, verbose=0, return_dict=True)
    distiller.teacher_forward = _no_teacher
    cached = distiller.evaluate(validation, verbose=0, return_dict=True)
    for key in ("loss", "accuracy", "distillation_loss", "total_loss"):
        np.testing.assert_allclose(cached[key], expected[key], rtol=1e-5)
    history = distiller.fit(train, validation_data=validation, epochs=2, verbose=0, shuffle=False)
    assert history.history["loss"][1] < history.history["loss"][0]
    assert 0.0 <= history.history["val_accuracy"][-1] <= 1.0


@pytest.mark.parametrize("memory_mapped", [False, True])
def test_outputs_stay_aligned_with_their_examples_under_shuffling(tmp_path, memory_mapped):
    teacher = _teacher()
    x, y = _random_arrays()
    if memory_mapped:
        np.save(tmp_path / "x.npy", x)
        x = np.load(tmp_path / "x.npy", mmap_mode="r")
    expected = teacher.predict(np.asarray(x), verbose=0)
    row_of = {row.tobytes(): index for index, row in enumerate(np.asarray(x))}
    assert len(row_of) == len(x)
    train = cache.cache_teacher_outputs(teacher, (x, y), batch_size=32, seed=1)
    orders = []
    for _ in range(2):
        order = []
        for batch_x, batch_y in train:
            indices = [row_of[row.tobytes()] for row in batch_x["inputs"].numpy()]
            np.testing.assert_allclose(
                batch_x["teacher_outputs"]["logits"], expected[indices], atol=1e-5
            )
            np.testing.assert_array_equal(batch_y, y[indices])
            order += indices
        assert sorted(order) == list(range(len(x)))
        orders.append(order)
    assert orders[0] != list(range(len(x)))
    assert orders[0] != orders[1], "each epoch must be shuffled anew"


def test_sample_weights_stay_aligned(splits):
    teacher = _teacher()
    x, y = _random_arrays(100)
    weights = np.arange(100, dtype="float32")
    expected = teacher.predict(x, verbose=0)
    for batch_x, batch_y, batch_weights in cache.cache_teacher_outputs(
        teacher, (x, y, weights), batch_size=16, seed=0
    ):
        indices = batch_weights.numpy().astype(int)
        np.testing.assert_array_equal(batch_y, y[indices])
        np.testing.assert_allclose(batch_x["inputs"], x[indices])
        np.testing.assert_allclose(
            batch_x["teacher_outputs"]["logits"], expected[indices], atol=1e-5
        )


def test_disk_cache_is_memory_mapped_reused_and_pickle_free(tmp_path, splits):
    teacher = _teacher()
    messages = []
    first = cache.build_teacher_cache(
        teacher, splits, distillation_losses=LOSSES, directory=tmp_path, log=messages.append
    )
    assert not first.reused and first.on_disk
    assert isinstance(first.outputs["logits"], np.memmap)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["fingerprint"] == first.fingerprint
    assert manifest["num_examples"] == len(splits.x_train) == len(first)
    assert manifest["tap_names"] == ["features"]
    assert set(manifest["outputs"]) == {"logits", "features"}
    logits = np.load(tmp_path / manifest["outputs"]["logits"], allow_pickle=False)
    np.testing.assert_allclose(logits, teacher.predict(splits.x_train, verbose=0), atol=1e-5)
    features_model = keras.Model(teacher.inputs, teacher.get_layer("features").output)
    np.testing.assert_allclose(
        first.outputs["features"], features_model.predict(splits.x_train, verbose=0), atol=1e-5
    )
    assert sorted(os.listdir(tmp_path)) == sorted(["manifest.json", *manifest["outputs"].values()])

    second = cache.build_teacher_cache(
        teacher, splits, distillation_losses=LOSSES, directory=tmp_path, log=messages.append
    )
    assert second.reused and second.fingerprint == first.fingerprint
    assert messages[-1].startswith(f"Reusing the teacher cache in {tmp_path}")

    in_memory = cache.build_teacher_cache(teacher, splits, distillation_losses=LOSSES)
    assert type(in_memory.outputs["logits"]) is np.ndarray
    assert in_memory.fingerprint == first.fingerprint
    for from_disk, from_memory in zip(
        second.dataset(batch_size=100, seed=7), in_memory.dataset(batch_size=100, seed=7)
    ):
        for a, b in zip(tf.nest.flatten(from_disk), tf.nest.flatten(from_memory)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("damage", ["cut_short", "flipped_bytes"])
def test_a_damaged_disk_cache_is_rebuilt_never_read(tmp_path, splits, damage):
    teacher = _teacher()
    first = cache.build_teacher_cache(teacher, splits, distillation_losses=LOSSES,
                                      directory=tmp_path)
    expected = np.array(first.outputs["logits"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    path = tmp_path / manifest["outputs"]["logits"]
    assert manifest["checksums"][path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    data = bytearray(path.read_bytes())
    if damage == "cut_short":
        data = data[: len(data) - 64]
    else:
        for offset in range(len(data) - 64, len(data)):
            data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    messages = []
    again = cache.build_teacher_cache(teacher, splits, distillation_losses=LOSSES,
                                      directory=tmp_path, log=messages.append)
    assert not again.reused
    assert any("is incomplete or damaged" in message for message in messages)
    np.testing.assert_array_equal(np.array(again.outputs["logits"]), expected)


def test_stale_cache_of_changed_weights_is_detected_and_rebuilt(tmp_path, splits):
    teacher = _teacher()
    old = cache.build_teacher_cache(teacher, splits, directory=tmp_path)
    old_files = set(os.listdir(tmp_path))
    weights = teacher.get_weights()
    weights[-1] = weights[-1] + 1.0
    teacher.set_weights(weights)
    with pytest.raises(cache.StaleCacheError, match="made with a different teacher"):
        cache.build_teacher_cache(teacher, splits, directory=tmp_path, on_stale="raise")
    messages = []
    new = cache.build_teacher_cache(teacher, splits, directory=tmp_path, log=messages.append)
    assert any("is stale" in message and "rebuilding" in message for message in messages)
    assert not new.reused and new.fingerprint != old.fingerprint
    np.testing.assert_allclose(
        new.outputs["logits"], teacher.predict(splits.x_train, verbose=0), atol=1e-5
    )
    # The old files are gone; only the new cache remains.
    assert not (old_files - {"manifest.json"}) & set(os.listdir(tmp_path))
    assert len(os.listdir(tmp_path)) == 2


def test_stale_cache_of_changed_data_is_detected(tmp_path):
    teacher = _teacher()
    x, y = _random_arrays(50)
    cache.build_teacher_cache(teacher, (x, y), directory=tmp_path)
    relabelled = y.copy()
    relabelled[0] = (relabelled[0] + 1) % 10
    with pytest.raises(cache.StaleCacheError, match="made with different data"):
        cache.build_teacher_cache(teacher, (x, relabelled), directory=tmp_path, on_stale="raise")
    with pytest.raises(cache.StaleCacheError, match="different data"):
        cache.build_teacher_cache(teacher, (x[::-1], y[::-1]), directory=tmp_path, on_stale="raise")


def test_incomplete_disk_cache_is_rebuilt(tmp_path):
    teacher = _teacher()
    x, y = _random_arrays(40)
    first = cache.build_teacher_cache(teacher, (x, y), directory=tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    os.unlink(tmp_path / manifest["outputs"]["logits"])
    messages = []
    again = cache.build_teacher_cache(teacher, (x, y), directory=tmp_path, log=messages.append)
    assert any("incomplete" in message for message in messages)
    assert not again.reused and again.fingerprint == first.fingerprint
    np.testing.assert_allclose(again.outputs["logits"], teacher.predict(x, verbose=0), atol=1e-5)


def test_fingerprint_follows_weights_layers_output_kind_and_data(tmp_path):
    teacher = _teacher()
    x, y = _random_arrays(30)
    base = cache.cache_fingerprint(teacher, (x, y))
    assert len(base) == 64 and base == cache.cache_fingerprint(teacher, (x.copy(), y.copy()))
    saving.save_model(teacher, tmp_path / "teacher.keras")
    reloaded = saving.load_model(tmp_path / "teacher.keras")
    assert cache.cache_fingerprint(reloaded, (x, y)) == base
    assert cache.cache_fingerprint(teacher, (x, y), distillation_losses=LOSSES) != base
    other_weights = _teacher(seed=5)
    assert cache.cache_fingerprint(other_weights, (x, y)) != base
    changed = x.copy()
    changed[3, 2, 2, 0] += 1e-3
    assert cache.cache_fingerprint(teacher, (changed, y)) != base


def _augmenting_pipelines(x, y):
    flip = keras.layers.RandomFlip("horizontal", seed=0)
    generator = tf.random.Generator.from_seed(0)

    def noisy_examples():
        for image, label in zip(x, y):
            yield image + np.random.normal(size=image.shape).astype("float32"), label

    plain = tf.data.Dataset.from_tensor_slices((x, y))
    return {
        "tf.image random flip": plain.map(lambda a, b: (tf.image.random_flip_left_right(a), b)),
        "keras RandomFlip layer": plain.batch(8).map(lambda a, b: (flip(a, training=True), b)),
        "tf.random.Generator noise": plain.map(lambda a, b: (a + generator.normal(tf.shape(a)), b)),
        "python generator noise": tf.data.Dataset.from_generator(
            noisy_examples,
            output_signature=(
                tf.TensorSpec(INPUT_SHAPE, tf.float32),
                tf.TensorSpec((), tf.int32),
            ),
        ),
    }


@pytest.mark.parametrize(
    "name",
    [
        "tf.image random flip",
        "keras RandomFlip layer",
        "tf.random.Generator noise",
        "python generator noise",
    ],
)
def test_pipeline_with_random_augmentation_is_refused(name):
    x, y = _random_arrays(20)
    pipeline = _augmenting_pipelines(x, y)[name]
    with pytest.raises(ValueError, match="Distill online instead"):
        cache.cache_teacher_outputs(_teacher(), pipeline)
    with pytest.raises(ValueError, match="random"):
        cache.check_cacheable(pipeline)


def test_deterministic_pipeline_is_cached_and_reused_in_any_order(tmp_path):
    teacher = _teacher()
    x, y = _random_arrays(120)
    scaled = tf.data.Dataset.from_tensor_slices((x, y)).map(lambda a, b: (a * 2.0, b))
    cache.check_cacheable(scaled)  # No error: same view every pass.
    shuffled = scaled.shuffle(120, seed=1)
    first = cache.build_teacher_cache(teacher, shuffled, directory=tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["stored_examples"]) == {"inputs_0", "labels"}
    stored_x, stored_y = np.asarray(first.inputs), np.asarray(first.labels)
    order = np.argsort(stored_y, kind="stable")
    assert sorted(map(bytes, stored_x.reshape(120, -1))) == sorted(
        map(bytes, (2.0 * x).reshape(120, -1))
    )
    np.testing.assert_allclose(
        first.outputs["logits"][order], teacher.predict(stored_x[order], verbose=0), atol=1e-5
    )
    # The same examples batched and in another order: the cache is reused.
    messages = []
    again = cache.build_teacher_cache(
        teacher, scaled.shuffle(120, seed=9).batch(25), directory=tmp_path, log=messages.append
    )
    assert again.reused and again.fingerprint == first.fingerprint
    batch_x, batch_y = next(iter(again.dataset(batch_size=10, seed=0)))
    np.testing.assert_allclose(
        batch_x["teacher_outputs"]["logits"], teacher(batch_x["inputs"]), atol=1e-5
    )


def test_probability_teacher_is_cached_as_log_probabilities(splits):
    inputs = keras.Input(INPUT_SHAPE)
    hidden = keras.layers.Dense(12, activation="relu")(keras.layers.Flatten()(inputs))
    teacher = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    with pytest.raises(ValueError, match="ends with a softmax"):
        cache.build_teacher_cache(teacher, splits)
    cached = cache.build_teacher_cache(teacher, splits, teacher_outputs="probabilities")
    probabilities = teacher.predict(splits.x_train, verbose=0)
    np.testing.assert_allclose(
        cached.outputs["logits"], np.log(np.maximum(probabilities, 1e-12)), atol=1e-5
    )


def test_invalid_arguments_are_refused(splits):
    teacher = _teacher()
    x, y = _random_arrays(10)
    with pytest.raises(ValueError, match="Invalid value for argument `data`"):
        cache.build_teacher_cache(teacher, x)
    with pytest.raises(
        ValueError, match="`teacher` must be a keras.Model or a tf_distill.Distiller"
    ):
        cache.build_teacher_cache("teacher.keras", (x, y))
    with pytest.raises(ValueError, match="Invalid value for argument `on_stale`"):
        cache.build_teacher_cache(teacher, (x, y), on_stale="ignore")
    with pytest.raises(ValueError, match="`inference_batch_size` must be an integer > 0"):
        cache.build_teacher_cache(teacher, (x, y), inference_batch_size=0)
    with pytest.raises(ValueError, match="Invalid value for argument `teacher_outputs`"):
        cache.build_teacher_cache(teacher, (x, y), teacher_outputs="softmax")
    with pytest.raises(ValueError, match="same number of examples"):
        cache.build_teacher_cache(teacher, (x, y[:5]))
    with pytest.raises(ValueError, match="empty data set"):
        cache.build_teacher_cache(teacher, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="infinite pipeline"):
        cache.build_teacher_cache(teacher, tf.data.Dataset.from_tensor_slices((x, y)).repeat())
    with pytest.raises(ValueError, match="not with a Distiller"):
        cache.build_teacher_cache(_distiller(teacher), (x, y), distillation_losses="kd")
    with pytest.raises(ValueError, match="No layer named 'hidden'"):
        cache.build_teacher_cache(
            teacher,
            (x, y),
            distillation_losses={
                "name": "fitnets",
                "teacher_layer_name": "hidden",
                "student_layer_name": "features",
            },
        )
    with pytest.raises(ValueError, match="`batch_size` must be an integer > 0"):
        cache.build_teacher_cache(teacher, (x, y)).dataset(batch_size=0)


def _named_teacher(name, hidden_name, seed):
    """A tiny Functional teacher whose hidden layer is called `hidden_name`."""
    inputs = keras.Input(INPUT_SHAPE)
    hidden = keras.layers.Dense(
        6,
        activation="relu",
        name=hidden_name,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
    )(keras.layers.Flatten()(inputs))
    logits = keras.layers.Dense(
        10, name=f"{name}_logits", kernel_initializer=keras.initializers.GlorotUniform(seed=seed)
    )(hidden)
    return keras.Model(inputs, logits, name=name)


def test_file_names_of_colliding_keys_stay_apart(tmp_path):
    # Teacher "a" tapped at "b_c" and teacher "a_b" tapped at "c": the keys
    # "a/b_c" and "a_b/c" once shared the file name "a_b_c-<fingerprint>".
    teachers = {"a": _named_teacher("a", "b_c", 1), "a_b": _named_teacher("a_b", "c", 2)}
    losses = [
        {"name": "kd", "temperature": 2.0},
        {
            "name": "fitnets",
            "teacher": "a",
            "teacher_layer_name": "b_c",
            "student_layer_name": "features",
        },
        {
            "name": "fitnets",
            "teacher": 1,
            "teacher_layer_name": "c",
            "student_layer_name": "features",
        },
    ]
    distiller = _distiller(teachers, losses)
    x, y = _random_arrays(40)
    built = cache.build_teacher_cache(distiller, (x, y), directory=tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["tap_names"] == ["a/b_c", "a_b/c"]
    expected = {key: np.asarray(value) for key, value in distiller.teacher_forward(x).items()}
    assert (
        set(manifest["outputs"])
        == set(expected)
        == {"logits", "a/logits", "a_b/logits", "a/b_c", "a_b/c"}
    )
    files = list(manifest["outputs"].values())
    assert len(set(files)) == len(files) == 5
    assert len({name.lower() for name in files}) == 5  # also on case-insensitive disks
    for key, file_name in manifest["outputs"].items():
        stored = np.load(tmp_path / file_name, allow_pickle=False)
        np.testing.assert_allclose(stored, expected[key], atol=1e-6)
        np.testing.assert_allclose(built.outputs[key], expected[key], atol=1e-6)
    # The two hidden layers hold different values: a shared file would show.
    assert expected["a/b_c"].shape == expected["a_b/c"].shape
    assert np.abs(expected["a/b_c"] - expected["a_b/c"]).max() > 1e-3
    stems = {
        cache.file_stem(kind, name, "0" * 64)
        for kind, name in [
            ("output", "a/b_c"),
            ("output", "a_b/c"),
            ("output", "Dense"),
            ("output", "dense"),
            ("output", "labels"),
            ("example", "labels"),
        ]
    }
    assert len({stem.lower() for stem in stems}) == 6


def test_cached_outputs_lacking_a_key_raise_a_clear_error(splits):
    teacher = _teacher()
    logits_only = cache.cache_teacher_outputs(teacher, splits, distillation_losses="kd")
    distiller = _distiller(teacher)  # Its FitNets loss reads "features".
    with pytest.raises(
        ValueError,
        match=r"The cached teacher outputs lack \['features'\], which the distillation "
        r"losses read. Received keys: \['logits'\]",
    ):
        distiller.fit(logits_only, epochs=1, verbose=0, shuffle=False)


class _SubclassedStudent(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(10, kernel_initializer="zeros")

    def call(self, inputs):
        return self.dense(self.flatten(inputs))


@pytest.mark.parametrize("strategy", [None, "mirrored"])
def test_unbuilt_student_is_built_on_a_cached_first_batch(splits, strategy):
    teacher = _teacher()
    train = cache.cache_teacher_outputs(teacher, splits, batch_size=128, seed=0)
    scope = tf.distribute.MirroredStrategy(["/cpu:0"]) if strategy else tf.distribute.get_strategy()
    with scope.scope():
        distiller = Distiller(teacher, _SubclassedStudent(name="student"), "kd")
        distiller.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    assert not distiller.built and not distiller.student.built
    # Under a strategy Keras builds the model by calling it on the first
    # (cached) batch; without one the first training step builds the student.
    history = distiller.fit(train, epochs=3, verbose=0, shuffle=False).history
    assert distiller.student.built and len(distiller.trainable_variables) == 2
    assert history["loss"][2] < history["loss"][0] - 0.05
    kernel = distiller.student.dense.kernel.numpy()
    assert np.abs(kernel).max() > 1e-3  # it moved from zeros: gradients reached it
    batch_x, _ = next(iter(train))
    np.testing.assert_allclose(distiller(batch_x), distiller.student(batch_x["inputs"]), rtol=1e-6)


def _jitter(x):
    return x + np.random.default_rng().normal(size=x.shape).astype(x.dtype)


def _numpy_jitter_pipeline():
    x, y = _random_arrays(64)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=0)

    def augment(image, label):
        image = tf.numpy_function(_jitter, [image], tf.float32, stateful=False)
        return tf.ensure_shape(image, INPUT_SHAPE), label

    return dataset.map(augment).batch(16)


def test_a_pipeline_calling_python_is_refused_unless_declared_deterministic():
    # Shuffled, so the two-pass comparison alone would not catch the jitter.
    dataset = _numpy_jitter_pipeline()
    teacher = _teacher()
    for refuse in (
        lambda: cache.check_cacheable(dataset),
        lambda: cache.build_teacher_cache(teacher, dataset),
        lambda: cache.cache_teacher_outputs(teacher, dataset),
    ):
        with pytest.raises(ValueError, match=r"calls Python .*PyFunc.*`deterministic=True`"):
            refuse()
    cache.check_cacheable(dataset, deterministic=True)
    built = cache.build_teacher_cache(teacher, dataset, deterministic=True)
    assert built.num_examples == 64
    assert set(built.outputs) == {"logits"}
    train = cache.cache_teacher_outputs(teacher, dataset, deterministic=True, batch_size=32)
    assert sum(int(tf.shape(y)[0]) for _, y in train) == 64


def test_a_py_function_pipeline_is_refused_too():
    x, y = _random_arrays(32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).map(
        lambda image, label: (tf.py_function(lambda v: v, [image], tf.float32), label)
    )
    with pytest.raises(ValueError, match="EagerPyFunc"):
        cache.check_cacheable(dataset)
    cache.check_cacheable(dataset, deterministic=True)


@pytest.mark.parametrize(
    "drop_remainder, batches, last", [(False, 8, 1000 - 7 * 128), (True, 7, 128)]
)
def test_a_batched_pipeline_keeps_its_batch_size(drop_remainder, batches, last):
    """As Keras's `fit`, caching never re-batches a batched pipeline unless
    `batch_size` is given: 1000 examples at 128 stay 8 batches (7 dropping
    the remainder), not 32 batches of 32."""
    x, y = _random_arrays(1000)
    pipeline = tf.data.Dataset.from_tensor_slices((x, y)).batch(128, drop_remainder=drop_remainder)
    cached = cache.cache_teacher_outputs(_teacher(), pipeline, shuffle=False)
    sizes = [int(batch_y.shape[0]) for _, batch_y in cached]
    assert len(sizes) == batches
    assert sizes[:-1] == [128] * (batches - 1) and sizes[-1] == last
    for (batch_x, batch_y), (x_in, y_in) in zip(cached, pipeline):
        np.testing.assert_array_equal(batch_y, y_in)
        np.testing.assert_array_equal(batch_x["inputs"], x_in)


def test_an_explicit_batch_size_rebatches_and_says_so():
    x, y = _random_arrays(1000)
    pipeline = tf.data.Dataset.from_tensor_slices((x, y)).batch(128)
    messages = []
    cached = cache.cache_teacher_outputs(
        _teacher(), pipeline, batch_size=100, shuffle=False, log=messages.append
    )
    assert [int(batch_y.shape[0]) for _, batch_y in cached] == [100] * 10
    assert any("batches of 100" in m and "had batches of 128" in m for m in messages), messages
    # The same batch size as the pipeline's: nothing to say.
    messages.clear()
    cache.cache_teacher_outputs(_teacher(), pipeline, batch_size=128, log=messages.append)
    assert not any("Re-batching" in m for m in messages)
    # Arrays have no batch size of their own: the default stays 32.
    arrays = cache.cache_teacher_outputs(_teacher(), (x[:100], y[:100]), shuffle=False)
    assert [int(batch_y.shape[0]) for _, batch_y in arrays] == [32, 32, 32, 4]


@pytest.mark.parametrize("directory", [None, "disk"])
def test_building_shows_a_progress_bar_only_when_verbose(tmp_path, capsys, directory):
    teacher = _teacher()
    x, y = _random_arrays(50)
    folder = None if directory is None else tmp_path / directory
    cache.build_teacher_cache(teacher, (x, y), directory=folder, inference_batch_size=16)
    assert capsys.readouterr().out == ""  # quiet by default, as before
    cache.build_teacher_cache(teacher, (x, y), directory=None if folder is None else tmp_path / "b",
                              inference_batch_size=16, verbose=1)
    shown = capsys.readouterr().out
    assert "16/50" in shown and "50/50" in shown  # one step per chunk, to the target
