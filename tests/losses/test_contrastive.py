"""CRD: the NCE loss against RepDistiller's formula, the loss class, its errors."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import numpy_reference as ref
import pytest

import tf_distill
from tf_distill import losses
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.backend import tf


def random_case(rng, batch=5, negatives=7, dim=6, num_examples=30):
    teacher = ref.normalize(rng.normal(size=(batch, dim)))
    student = ref.normalize(rng.normal(size=(batch, dim)))
    teacher_bank = rng.uniform(-0.7, 0.7, size=(num_examples, dim))
    student_bank = ref.normalize(rng.normal(size=(num_examples, dim)))
    indices = rng.choice(num_examples, batch, replace=False)
    contrast_idx = np.concatenate(
        [indices[:, None], rng.integers(0, num_examples, (batch, negatives))], axis=1
    )
    return teacher, student, teacher_bank, student_bank, indices, contrast_idx


def test_nce_contrast_loss_hand_checked():
    # K = 1 negative, N = 2, Z = 1: noise K/N = 0.5.
    value = losses.nce_contrast_loss(tf.constant([[2.0, 1.0]]), 1.0, 2)
    expected = -(np.log(2.0 / (2.5 + ref.NCE_EPSILON)) + np.log(0.5 / (1.5 + ref.NCE_EPSILON)))
    np.testing.assert_allclose(value.numpy(), [expected], rtol=1e-6)
    assert abs(expected - 1.3218) < 1e-4


@pytest.mark.parametrize("seed", [0, 1])
def test_crd_loss_matches_repdistiller(seed):
    rng = np.random.default_rng(seed)
    teacher, student, teacher_bank, student_bank, _, contrast_idx = random_case(rng)
    reference, z_teacher, z_student = ref.crd(
        teacher, student, teacher_bank, student_bank, contrast_idx, 0.07, 30
    )
    arguments = [
        tf.constant(a, tf.float32)
        for a in (teacher, student, teacher_bank[contrast_idx], student_bank[contrast_idx])
    ]
    eager = losses.crd_loss(*arguments, z_teacher, z_student, 30, temperature=0.07)
    np.testing.assert_allclose(eager.numpy(), reference, rtol=2e-5)
    compiled = tf.function(losses.crd_loss)(*arguments, z_teacher, z_student, 30, 0.07)
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), rtol=1e-6)


def test_momentum_update_renormalizes():
    rng = np.random.default_rng(2)
    rows, embeddings = rng.normal(size=(4, 3)), ref.normalize(rng.normal(size=(4, 3)))
    updated = losses.momentum_update(tf.constant(rows), tf.constant(embeddings), 0.3).numpy()
    np.testing.assert_allclose(updated, ref.normalize(0.3 * rows + 0.7 * embeddings), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(updated, axis=-1), 1.0, rtol=1e-6)


def _crd(num_examples=30, **kwargs):
    kwargs = {"feature_dim": 6, "num_negatives": 7, "momentum": 0.3, **kwargs}
    crd = losses.CRDistillation(num_examples=num_examples, **kwargs)
    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    crd.validate_model_compatibility(teacher, student)  # builds heads and banks
    return crd


def test_the_loss_reads_and_updates_the_banks_as_repdistiller():
    rng = np.random.default_rng(3)
    crd = _crd()
    memory = crd.memory
    teacher_outputs = tf.constant(rng.normal(size=(5, 4)), tf.float32)
    student_outputs = tf.constant(rng.normal(size=(5, 3)), tf.float32)
    indices = tf.constant([4, 0, 29, 11, 7], tf.int64)
    teacher = crd.teacher_head(teacher_outputs).numpy().astype("float64")
    student = crd.student_head(student_outputs).numpy().astype("float64")
    banks = {role: getattr(memory, f"{role}_bank").numpy().astype("float64")
             for role in ("teacher", "student")}
    assert float(memory.teacher_normalizer.numpy()) == -1.0  # unset

    # The same draw of negatives as the call's (its first random op).
    tf.random.set_seed(7)
    negatives = memory.sample_negatives(5).numpy()
    tf.random.set_seed(7)
    values = crd(teacher_outputs, student_outputs, example_indices=indices, training=True)
    contrast_idx = np.concatenate([indices.numpy()[:, None], negatives], axis=1)
    reference, z_teacher, z_student = ref.crd(
        teacher, student, banks["teacher"], banks["student"], contrast_idx, 0.07, 30
    )
    np.testing.assert_allclose(values.numpy(), reference, rtol=2e-5)
    # Z is set from this first batch.
    np.testing.assert_allclose(memory.teacher_normalizer.numpy(), z_teacher, rtol=1e-5)
    np.testing.assert_allclose(memory.student_normalizer.numpy(), z_student, rtol=1e-5)
    # The rows at the batch's indices moved by momentum and were
    # renormalized; every other row is as it was.
    for role, embeddings in (("teacher", teacher), ("student", student)):
        bank = getattr(memory, f"{role}_bank").numpy()
        expected = banks[role].copy()
        expected[indices.numpy()] = ref.normalize(
            0.3 * banks[role][indices.numpy()] + 0.7 * embeddings
        )
        np.testing.assert_allclose(bank, expected, rtol=1e-5, atol=1e-6)
        others = np.setdiff1d(np.arange(30), indices.numpy())
        np.testing.assert_array_equal(bank[others], banks[role][others].astype("float32"))

    # Evaluation: neither the banks nor Z change, with or without indices.
    state = [v.numpy().copy() for v in memory.weights]
    crd(teacher_outputs, student_outputs, example_indices=indices, training=False)
    crd(teacher_outputs, student_outputs, training=False)
    for before, variable in zip(state, memory.weights):
        np.testing.assert_array_equal(variable.numpy(), before)


def test_gradients_reach_the_student_and_heads_not_the_teacher():
    rng = np.random.default_rng(4)
    crd = _crd()
    teacher_outputs = tf.constant(rng.normal(size=(5, 4)), tf.float32)
    student_outputs = tf.constant(rng.normal(size=(5, 3)), tf.float32)
    heads = crd.teacher_head.trainable_weights + crd.student_head.trainable_weights
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([teacher_outputs, student_outputs])
        loss = tf.reduce_mean(crd(teacher_outputs, student_outputs,
                                  example_indices=tf.range(5), training=True))
    student_gradient = tape.gradient(loss, student_outputs)
    assert np.all(np.isfinite(student_gradient.numpy()))
    assert np.any(student_gradient.numpy() != 0.0)
    assert tape.gradient(loss, teacher_outputs) is None
    for gradient in tape.gradient(loss, heads):
        assert gradient is not None and np.all(np.isfinite(gradient.numpy()))
    # The banks, normalizers and the rows' classes are state, not trained.
    assert not crd.memory.trainable_weights and len(crd.memory.non_trainable_weights) == 5
    assert len(_crd(negatives="uniform").memory.non_trainable_weights) == 4


def _models():
    def mlp(name, width):
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(width, activation="relu", name="features")(inputs)
        return keras.Model(inputs, keras.layers.Dense(3)(hidden), name=name)

    return mlp("teacher", 12), mlp("student", 5)


def _data(num_examples=20):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_examples, 6)).astype("float32")
    y = rng.integers(0, 3, num_examples)
    return x, y


def test_fit_trains_the_heads_outside_the_student_and_fills_the_banks(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _data()
    teacher, student = _models()
    crd = losses.CRDistillation("features", "features", feature_dim=4, num_negatives=6,
                                num_examples=len(x))
    distiller = tf_distill.Distiller(teacher, student, ["kd", crd],
                                     distillation_loss_weights=[1.0, 0.8])
    distiller.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    data = tf_distill.with_example_indices(tf.data.Dataset.from_tensor_slices((x, y))).batch(8)
    heads = [w.numpy().copy() for w in crd.teacher_head.weights + crd.student_head.weights]
    bank = crd.memory.student_bank.numpy().copy()
    history = distiller.fit(data, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["distillation_loss"]))
    # The heads were trained with the student's optimizer ...
    trainable = {id(v) for v in distiller.trainable_variables}
    for before, weight in zip(heads, crd.teacher_head.weights + crd.student_head.weights):
        assert id(weight) in trainable
        assert not np.array_equal(before, weight.numpy())
    # ... but are not part of the student, which keeps its own weights only.
    assert len(student.weights) == 4
    student_ids = {id(v) for v in student.weights}
    assert not any(id(v) in student_ids for layer in crd.layers for v in layer.weights)
    # Every example's row moved and is a unit vector.
    moved = crd.memory.student_bank.numpy()
    assert np.all(np.any(moved != bank, axis=1))
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 1.0, rtol=1e-5)
    # Validation data needs no indices.
    assert np.isfinite(distiller.evaluate(x, y, verbose=0)[0])
    # Saved with the Distiller (to resume): heads, banks and Z come back.
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    restored = saving.load_model(path).distillation_losses[1]
    for layer, loaded in zip(crd.layers, restored.layers):
        for weight, value in zip(layer.weights, loaded.weights):
            np.testing.assert_array_equal(value.numpy(), weight.numpy())


def test_cached_teacher_outputs_carry_the_example_indices():
    keras.utils.set_random_seed(1)
    x, y = _data()
    teacher, student = _models()
    crd = losses.CRDistillation("features", "features", feature_dim=4, num_negatives=6,
                                num_examples=len(x))
    distiller = tf_distill.Distiller(teacher, student, crd)
    distiller.compile("sgd", "sparse_categorical_crossentropy")
    cached = tf_distill.cache_teacher_outputs(distiller, (x, y), batch_size=8, seed=0)
    seen = []
    for inputs, labels in cached:
        indices = inputs["example_indices"].numpy()
        np.testing.assert_array_equal(inputs["inputs"].numpy(), x[indices])
        np.testing.assert_array_equal(labels.numpy(), y[indices])
        seen.extend(indices)
    assert sorted(seen) == list(range(len(x)))
    bank = crd.memory.teacher_bank.numpy().copy()
    distiller.fit(cached, epochs=1, verbose=0)
    assert np.all(np.any(crd.memory.teacher_bank.numpy() != bank, axis=1))
    # Losses without a memory bank get no indices, unless asked.
    kd_only = tf_distill.cache_teacher_outputs(teacher, (x, y), batch_size=8)
    assert "example_indices" not in next(iter(kd_only))[0]
    asked = tf_distill.cache_teacher_outputs(teacher, (x, y), batch_size=8, example_indices=True)
    assert "example_indices" in next(iter(asked))[0]


def test_config_round_trip_and_registry():
    crd = losses.get("crd", teacher_layer_name="f", num_examples=100, feature_dim=16,
                     num_negatives=50, teacher="t1")
    assert type(crd) is losses.CRDistillation
    config = json.loads(json.dumps(losses.serialize(crd)))
    assert config == {
        "name": "crd", "teacher_layer_name": "f", "student_layer_name": None,
        "feature_dim": 16, "num_negatives": 50, "nce_temperature": 0.07, "momentum": 0.5,
        "num_examples": 100, "negatives": "other_classes", "teacher": "t1",
    }
    assert losses.get(config).get_config() == crd.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(crd))
    assert restored.get_config() == crd.get_config()
    assert losses.describe_loss("crd")["paper"] == "Tian et al., ICLR 2020"
    assert len(crd.layers) == 3 and len(losses.get("crd").layers) == 2


def test_training_without_example_indices_names_the_fix():
    x, y = _data()
    teacher, student = _models()
    crd = losses.CRDistillation("features", "features", feature_dim=4, num_negatives=6,
                                num_examples=len(x))
    distiller = tf_distill.Distiller(teacher, student, crd)
    distiller.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"tf_distill\.with_example_indices\(dataset\).*"
                                         r"Received: example_indices=None"):
        distiller.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "indices,message", [([3, 10], r"must be < num_examples=10"), ([-1, 2], r"must be >= 0")]
)
def test_an_index_out_of_range_is_refused(indices, message):
    crd = _crd(num_examples=10)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        crd(tf.zeros([2, 4]), tf.ones([2, 3]), example_indices=tf.constant(indices),
            training=True)


def test_outputs_without_a_batch_axis_are_refused():
    crd = losses.CRDistillation(num_examples=10, num_negatives=3)
    with pytest.raises(ValueError, match=r"needs `\[batch, ...\]` features.*Received: teacher"):
        crd.validate_outputs(tf.zeros([4]), tf.zeros([4]))


def test_num_examples_is_required_in_a_distiller():
    teacher, student = _models()
    with pytest.raises(ValueError, match=r"needs `num_examples`.*Received: num_examples=None"):
        tf_distill.Distiller(teacher, student, "crd")


@pytest.mark.parametrize(
    "arguments,message",
    [
        ({"num_negatives": 100, "num_examples": 100},
         r"`num_negatives` must be < `num_examples`.*num_negatives=100, num_examples=100"),
        ({"feature_dim": 0}, r"`feature_dim` must be an integer > 0. Received: feature_dim=0"),
        ({"num_examples": 2.5}, r"`num_examples` must be an integer > 0"),
        ({"nce_temperature": 0.0}, r"`nce_temperature` must be > 0"),
        ({"momentum": 1.5}, r"`momentum` must be in \[0, 1\]"),
        ({"negatives": "exact"},
         r"Invalid value for argument `negatives`. Expected one of "
         r"\['other_classes', 'uniform'\]. Received: negatives='exact'"),
    ],
)
def test_invalid_arguments_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        losses.CRDistillation(**arguments)


# --- Negatives from other classes (RepDistiller's contrast_idx, mode "exact") --


def _classes(num_examples=60, num_classes=4, seed=0):
    return np.random.default_rng(seed).integers(0, num_classes, num_examples)


def test_negatives_come_from_other_classes_only_and_cover_the_pool_uniformly():
    labels = _classes()
    crd = _crd(num_examples=60, num_negatives=40)
    crd.set_example_labels(labels)
    pools = ref.crd_negative_pools(labels, 4)
    anchors = np.array([0, 1, 2, 3] * 50)
    tf.random.set_seed(11)
    drawn = crd.memory.sample_negatives(len(anchors), tf.constant(anchors)).numpy()
    assert drawn.shape == (200, 40)
    # No negative shares its anchor's class.
    assert not np.any(labels[drawn] == anchors[:, None])
    # Every draw lies in RepDistiller's pool, and the pool is covered about
    # uniformly: 50 anchors × 40 draws per class, 2,000 draws over each pool.
    for target in range(4):
        rows = drawn[anchors == target].ravel()
        assert set(rows) <= set(pools[target])
        counts = np.bincount(rows, minlength=60)[pools[target]]
        expected = rows.size / len(pools[target])
        assert np.all(counts > 0)
        assert np.abs(counts - expected).max() < 6 * np.sqrt(expected)


def test_without_labels_or_uniform_the_draw_is_over_all_rows():
    labels = _classes()
    anchors = np.array([0, 1, 2, 3] * 50)
    crd = _crd(num_examples=60, num_negatives=40)
    crd.set_example_labels(labels)
    tf.random.set_seed(12)
    without_labels = crd.memory.sample_negatives(len(anchors)).numpy()
    # About a quarter of the negatives share the anchor's class.
    shared = np.mean(labels[without_labels] == anchors[:, None])
    assert 0.15 < shared < 0.35
    # `negatives="uniform"` ignores labels: the draw of tf_distill 0.1.0.
    uniform = _crd(num_examples=60, num_negatives=40, negatives="uniform")
    tf.random.set_seed(12)
    with_labels = uniform.memory.sample_negatives(len(anchors), tf.constant(anchors)).numpy()
    np.testing.assert_array_equal(with_labels, without_labels)
    with pytest.raises(ValueError, match=r"only with `negatives='other_classes'`. "
                                         r"Received: negatives='uniform'"):
        uniform.set_example_labels(labels)


def test_a_class_every_row_shares_draws_from_all_rows():
    crd = _crd(num_examples=10, num_negatives=5)
    crd.set_example_labels(np.zeros(10, np.int64))
    drawn = crd.memory.sample_negatives(3, tf.constant([0, 0, 1])).numpy()
    assert drawn.min() >= 0 and drawn.max() < 10


def test_set_example_labels_checks_its_length_and_takes_one_hot_rows():
    crd = _crd(num_examples=10, num_negatives=5)
    with pytest.raises(ValueError, match=r"one class per example \(10\). "
                                         r"Received: labels of length 9"):
        crd.set_example_labels(np.zeros(9, np.int64))
    labels = _classes(10, 3)
    crd.set_example_labels(np.eye(3, dtype="float32")[labels])
    np.testing.assert_array_equal(crd.memory.example_labels.numpy(), labels)


def test_the_loss_learns_the_classes_in_training_and_draws_from_other_classes():
    """Without labels set up front, a training call records its batch's
    classes before the draw; its negatives never hold an embedding of the
    anchor's class, and the loss is RepDistiller's on that draw."""
    rng = np.random.default_rng(5)
    labels = _classes(30, 3, seed=5)
    crd = _crd()
    memory = crd.memory
    np.testing.assert_array_equal(memory.example_labels.numpy(), -np.ones(30))
    indices = np.array([4, 0, 29, 11, 7, 3, 17, 22])
    teacher_outputs = tf.constant(rng.normal(size=(8, 4)), tf.float32)
    student_outputs = tf.constant(rng.normal(size=(8, 3)), tf.float32)
    teacher = crd.teacher_head(teacher_outputs).numpy().astype("float64")
    student = crd.student_head(student_outputs).numpy().astype("float64")
    banks = {role: getattr(memory, f"{role}_bank").numpy().astype("float64")
             for role in ("teacher", "student")}
    known = np.full(30, -1)
    known[indices] = labels[indices]
    shadow = _crd(num_negatives=7)
    shadow.set_example_labels(np.where(known >= 0, known, -1))
    # `set_example_labels` takes -1 (unknown) as a class of its own: the
    # same table the call builds.
    tf.random.set_seed(9)
    negatives = shadow.memory.sample_negatives(8, tf.constant(labels[indices])).numpy()
    tf.random.set_seed(9)
    values = crd(teacher_outputs, student_outputs, labels=tf.constant(labels[indices]),
                 example_indices=tf.constant(indices), training=True)
    np.testing.assert_array_equal(memory.example_labels.numpy(), known)
    # No drawn row is known to share its anchor's class (unknown rows hold
    # their random initial vectors).
    assert not np.any(known[negatives] == labels[indices][:, None])
    contrast_idx = np.concatenate([indices[:, None], negatives], axis=1)
    reference, _, _ = ref.crd(
        teacher, student, banks["teacher"], banks["student"], contrast_idx, 0.07, 30
    )
    np.testing.assert_allclose(values.numpy(), reference, rtol=2e-5)
    # Evaluation reads the classes but records none.
    before = memory.example_labels.numpy().copy()
    crd(teacher_outputs, student_outputs, labels=tf.constant([0] * 8), training=False)
    np.testing.assert_array_equal(memory.example_labels.numpy(), before)


def test_fit_with_labels_keeps_every_negative_out_of_the_anchors_class():
    keras.utils.set_random_seed(2)
    x, y = _data(24)
    teacher, student = _models()
    crd = losses.CRDistillation("features", "features", feature_dim=4, num_negatives=6,
                                num_examples=len(x))
    seen = []
    original = crd.memory.sample_negatives

    def recording(batch_size, classes=None):
        drawn = original(batch_size, classes)
        seen.append((drawn, classes))
        return drawn

    crd.memory.sample_negatives = recording
    distiller = tf_distill.Distiller(teacher, student, crd)
    distiller.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy",
                      run_eagerly=True)
    data = tf_distill.with_example_indices(tf.data.Dataset.from_tensor_slices((x, y)))
    distiller.fit(data.shuffle(24, seed=0).batch(8), epochs=2, verbose=0)
    np.testing.assert_array_equal(crd.memory.example_labels.numpy(), y)
    # From the second epoch every class is known: no negative shares its
    # anchor's class.
    second_epoch = seen[3:]
    assert len(second_epoch) == 3
    for drawn, classes in second_epoch:
        assert not np.any(y[drawn.numpy()] == classes.numpy()[:, None])


def test_a_crd_distiller_saved_before_the_classes_were_kept_loads(tmp_path):
    """A Distiller saved by tf_distill 0.1.0 (its config has no `negatives`,
    its memory four variables) loads, its banks intact, its classes unknown."""
    import zipfile

    keras.utils.set_random_seed(3)
    x, y = _data()
    teacher, student = _models()
    crd = losses.CRDistillation("features", "features", feature_dim=4, num_negatives=6,
                                num_examples=len(x), negatives="uniform")
    distiller = tf_distill.Distiller(teacher, student, crd)
    distiller.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    data = tf_distill.with_example_indices(tf.data.Dataset.from_tensor_slices((x, y)))
    distiller.fit(data.batch(8), epochs=1, verbose=0)
    saved = str(tmp_path / "new.keras")
    distiller.save(saved)
    old = str(tmp_path / "old.keras")
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "config.json":
                text = content.decode("utf-8")
                assert text.count(', "negatives": "uniform"') == 1
                content = text.replace(', "negatives": "uniform"', "").encode("utf-8")
            target.writestr(item, content)
    restored = saving.load_model(old).distillation_losses[0]
    assert restored.negatives == "other_classes"
    np.testing.assert_array_equal(restored.memory.student_bank.numpy(),
                                  crd.memory.student_bank.numpy())
    np.testing.assert_array_equal(restored.memory.teacher_normalizer.numpy(),
                                  crd.memory.teacher_normalizer.numpy())
    np.testing.assert_array_equal(restored.memory.example_labels.numpy(), -np.ones(len(x)))


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json

    import numpy as np
    import tensorflow as tf

    # Two logical CPUs, before anything initializes the devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

    import tf_distill
    from tf_distill.backend import keras

    def mlp(name, width):
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(width, activation="relu", name="features")(inputs)
        return keras.Model(inputs, keras.layers.Dense(3)(hidden), name=name)

    rng = np.random.default_rng(0)
    # 19 examples in batches of 8: the last batch, 3, splits 2 + 1.
    x = rng.normal(size=(19, 6)).astype("float32")
    y = rng.integers(0, 3, 19)
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        teacher, student = mlp("teacher", 12), mlp("student", 5)
        crd = tf_distill.losses.CRDistillation(
            "features", "features", feature_dim=4, num_negatives=6, momentum=0.25,
            num_examples=19,
        )
        distiller = tf_distill.Distiller(teacher, student, crd)
        # A zero learning rate keeps the embeddings fixed: each bank row
        # must then be exactly one momentum step from its initial value.
        distiller.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    memory = crd.memory
    initial = {role: getattr(memory, role + "_bank").numpy() for role in ("teacher", "student")}
    data = tf_distill.with_example_indices(tf.data.Dataset.from_tensor_slices((x, y)))
    history = distiller.fit(data.batch(8), epochs=1, verbose=0).history
    embeddings = {}
    for role, model, head in (("teacher", teacher, crd.teacher_head),
                              ("student", student, crd.student_head)):
        features = keras.Model(model.inputs, model.get_layer("features").output)(x)
        embeddings[role] = head(features).numpy()
    local = lambda variable: [
        v.numpy().tolist() for v in strategy.experimental_local_results(variable.value)
    ]
    print("RESULT" + json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "loss": history["distillation_loss"],
        "initial": {k: v.tolist() for k, v in initial.items()},
        "embeddings": {k: v.tolist() for k, v in embeddings.items()},
        "banks": {r: local(getattr(memory, r + "_bank")) for r in ("teacher", "student")},
        "normalizers": {r: local(getattr(memory, r + "_normalizer"))
                        for r in ("teacher", "student")},
        "labels": y.tolist(),
        "example_labels": local(memory.example_labels),
    }))
    """
)


@pytest.mark.slow
def test_mirrored_replicas_update_every_row_of_every_copy(tmp_path):
    script = tmp_path / "mirrored_crd.py"
    script.write_text(MIRRORED_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                       PYTHONPATH=root)
    completed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                               timeout=600, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(text for text in completed.stdout.splitlines() if text.startswith("RESULT"))
    result = json.loads(line[len("RESULT"):])
    assert result["replicas"] == 2
    assert np.all(np.isfinite(result["loss"]))
    for role in ("teacher", "student"):
        expected = ref.normalize(0.25 * np.array(result["initial"][role])
                             + 0.75 * np.array(result["embeddings"][role]))
        copies = result["banks"][role]
        assert len(copies) == 2
        for copy in copies:
            np.testing.assert_allclose(copy, expected, rtol=1e-5, atol=1e-6)
        first, second = result["normalizers"][role]
        assert first == second and first > 0.0
    # Every replica recorded every example's class.
    assert result["example_labels"] == [result["labels"]] * 2
