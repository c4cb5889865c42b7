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
    # The banks and normalizers are state, not trained.
    assert not crd.memory.trainable_weights and len(crd.memory.non_trainable_weights) == 4


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
        "num_examples": 100, "teacher": "t1",
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
    ],
)
def test_invalid_arguments_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        losses.CRDistillation(**arguments)


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
