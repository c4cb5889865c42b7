"""Deep mutual learning: the loss against NumPy, every student trained, errors."""

import numpy as np
import pytest
from conftest import build_mlp
from numpy_reference import kd
from numpy_reference import softmax
from recording import RecordCalls

import tf_distill
from tf_distill import MutualDistiller
from tf_distill.backend import keras
from tf_distill.backend import tf


def np_crossentropy(labels, logits):
    probabilities = softmax(logits)
    return -np.log(probabilities[np.arange(len(labels)), labels])


def np_mutual(logits, labels, temperature, weight):
    """Zhang et al. 2018: CE(y, s_i) + w/(K−1) · Σ_{j≠i} T²·KL(p_j ‖ p_i), per student."""
    count = len(logits)
    per_student = []
    for i in range(count):
        mutual = sum(kd(logits[j], logits[i], temperature) for j in range(count) if j != i)
        values = weight * mutual / (count - 1)
        if labels is not None:
            labeled = labels >= 0
            values = values + labeled * np_crossentropy(np.maximum(labels, 0), logits[i])
        per_student.append(values)
    return per_student


def students_of(count, hidden=8):
    return [build_mlp(f"student_{i}", hidden=hidden) for i in range(count)]


def compiled(students, **kwargs):
    mutual = MutualDistiller(students, **kwargs)
    mutual.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return mutual


@pytest.mark.parametrize(
    "count, temperature, weight", [(2, 1.0, 1.0), (3, 1.0, 1.0), (3, 2.0, 0.5)]
)
def test_loss_matches_numpy(tiny_data, count, temperature, weight):
    x, y = tiny_data
    students = students_of(count)
    mutual = compiled(students, temperature=temperature, mutual_loss_weight=weight)
    logits = [np.asarray(model(x), np.float64) for model in students]
    expected = np_mutual(logits, y, temperature, weight)

    terms = mutual.compute_loss_terms(x, y)
    for i in range(count):
        np.testing.assert_allclose(terms[f"student_{i}_loss"], expected[i].mean(), rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], sum(expected).mean(), rtol=1e-5)


def test_evaluate_reports_each_student(tiny_data):
    x, y = tiny_data
    students = students_of(3)
    mutual = compiled(students)
    logits = [np.asarray(model(x), np.float64) for model in students]
    expected = np_mutual(logits, y, 1.0, 1.0)
    results = mutual.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    np.testing.assert_allclose(results["loss"], sum(expected).mean(), rtol=1e-5)
    np.testing.assert_allclose(results["student_1_loss"], expected[1].mean(), rtol=1e-5)
    accuracy = np.mean(np.argmax(logits[1], axis=-1) == y)
    np.testing.assert_allclose(results["student_1_accuracy"], accuracy, rtol=1e-6)


def test_unlabeled_examples_count_in_the_mutual_term_only(tiny_data):
    x, y = tiny_data
    y = y.copy()
    y[::3] = -1
    students = students_of(2)
    mutual = compiled(students)
    logits = [np.asarray(model(x), np.float64) for model in students]
    expected = np_mutual(logits, y, 1.0, 1.0)
    terms = mutual.compute_loss_terms(x, y)
    np.testing.assert_allclose(terms["student_0_loss"], expected[0].mean(), rtol=1e-5)
    results = mutual.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    labeled = y >= 0
    accuracy = np.mean(np.argmax(logits[0], axis=-1)[labeled] == y[labeled])
    np.testing.assert_allclose(results["student_0_accuracy"], accuracy, rtol=1e-6)

    # No labels at all: the mutual term alone.
    unlabeled = np_mutual(logits, None, 1.0, 1.0)
    terms = mutual.compute_loss_terms(x)
    np.testing.assert_allclose(terms["student_1_loss"], unlabeled[1].mean(), rtol=1e-5)
    history = mutual.fit(x, epochs=1, batch_size=32, verbose=0).history
    assert "student_0_accuracy" not in history and history["student_0_loss"][0] > 0


def test_peers_are_constants():
    x = np.random.default_rng(1).normal(size=(4, 8)).astype("float32")
    students = students_of(3)
    mutual = MutualDistiller(students)
    with tf.GradientTape(persistent=True) as tape:
        logits = [model(x) for model in students]
        values = mutual.mutual_values(logits)
    own = tape.gradient(values[0], students[0].trainable_variables)
    peers = tape.gradient(values[0], students[1].trainable_variables + students[2].trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in own)
    assert any(np.abs(g).max() > 0 for g in own)
    assert all(g is None for g in peers)


def test_fit_trains_every_student_and_reports_each(tiny_data):
    x, y = tiny_data
    students = [RecordedStudent(f"s{i}") for i in range(2)]
    before = [[w.copy() for w in model.get_weights()] for model in students]
    mutual = MutualDistiller(students)
    mutual.compile(
        optimizer="sgd",
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
        run_eagerly=True,
    )
    history = mutual.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    assert set(history) == {
        "loss", "student_0_loss", "student_1_loss", "student_0_acc", "student_1_acc"
    }
    for model, weights in zip(students, before):
        changed = [not np.array_equal(a, b) for a, b in zip(weights, model.get_weights())]
        assert all(changed)
    # One forward pass per student per step (2 steps), in training mode.
    for model in students:
        assert model.get_layer(f"{model.name}_calls").training_flags == [True, True]
    np.testing.assert_allclose(
        history["loss"][0], history["student_0_loss"][0] + history["student_1_loss"][0], rtol=1e-5
    )


def RecordedStudent(name):  # noqa: N802 (a model factory, named like one)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    hidden = RecordCalls(name=f"{name}_calls")(hidden)
    return keras.Model(inputs, keras.layers.Dense(5)(hidden), name=name)


def dropout_student(name, seed):
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu", name=f"{name}_hidden")(inputs)
    hidden = keras.layers.Dropout(0.5, seed=seed)(hidden)
    return keras.Model(inputs, keras.layers.Dense(5)(hidden), name=name)


@pytest.mark.parametrize("seeds", [(1, 2), None])
def test_identical_students_diverge_only_with_different_noise(tiny_data, seeds):
    """Same initial weights: without noise the peers stay identical (their
    mutual term is 0 and their gradients equal); different dropout seeds
    make them diverge."""
    x, y = tiny_data
    if seeds is None:
        students = students_of(2)
    else:
        students = [dropout_student(f"s{i}", seed) for i, seed in enumerate(seeds)]
    students[1].set_weights(students[0].get_weights())
    mutual = compiled(students)
    mutual.fit(x, y, batch_size=16, epochs=1, verbose=0)
    first, second = (np.asarray(model(x), np.float64) for model in students)
    if seeds is None:
        np.testing.assert_allclose(first, second, atol=1e-6)
    else:
        assert np.abs(first - second).max() > 1e-3
        assert mutual.compute_loss_terms(x, y)["student_0_loss"] > np_crossentropy(y, first).mean()


def test_predict_students_and_saving(tiny_data, tmp_path):
    x, y = tiny_data
    students = students_of(3)
    mutual = compiled(students, predict_student=2, temperature=2.0, divergence="reverse_kl")
    assert mutual.students == students and mutual.student is students[2]
    np.testing.assert_allclose(mutual.predict(x, verbose=0), students[2](x), rtol=1e-6)

    path = tmp_path / "mutual.keras"
    mutual.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, MutualDistiller)
    assert loaded.get_config()["divergence"] == "reverse_kl"
    assert loaded.get_config()["temperature"] == 2.0
    for original, restored in zip(students, loaded.students):
        np.testing.assert_allclose(restored(x), original(x), rtol=1e-6)
    expected = mutual.compute_loss_terms(x, y)
    results = loaded.compute_loss_terms(x, y)
    np.testing.assert_allclose(results["loss"], expected["loss"], rtol=1e-5)
    assert loaded.get_compile_config()["loss"] == "sparse_categorical_crossentropy"
    # The deployable model is one student alone.
    mutual.student.save(tmp_path / "student.keras")
    alone = keras.models.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(alone(x), students[2](x), rtol=1e-6)


def test_errors(make_mlp):
    first, second = students_of(2)
    with pytest.raises(ValueError, match="at least 2 models"):
        MutualDistiller([first])
    with pytest.raises(ValueError, match="`students` must be a list"):
        MutualDistiller(first)
    with pytest.raises(ValueError, match=r"`students\[1\]` must be a keras.Model"):
        MutualDistiller([first, "second"])
    with pytest.raises(ValueError, match="same model was given twice"):
        MutualDistiller([first, first])
    with pytest.raises(ValueError, match=r"students\[1\] outputs \(None, 3\)"):
        MutualDistiller([first, make_mlp("wide", num_classes=3)])
    with pytest.raises(ValueError, match="ends with a softmax"):
        MutualDistiller([first, make_mlp("soft", final_activation="softmax")])
    with pytest.raises(ValueError, match="`predict_student` must be an index"):
        MutualDistiller([first, second], predict_student=2)
    with pytest.raises(ValueError, match="`mutual_loss_weight` must be a number >= 0"):
        MutualDistiller([first, second], mutual_loss_weight=-1.0)
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        MutualDistiller([first, second], temperature=0.0)
    with pytest.raises(ValueError, match="Invalid value for argument `divergence`"):
        MutualDistiller([first, second], divergence="hellinger")
    with pytest.raises(ValueError, match="Received: divergence=<function"):
        MutualDistiller([first, second], divergence=keras.losses.kl_divergence)
    mutual = MutualDistiller([first, second])
    with pytest.raises(RuntimeError, match="Call `compile`"):
        mutual.compute_loss_terms(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="'loss' cannot be `None`"):
        mutual.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="`metrics` must be a list"):
        mutual.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics="accuracy")


def test_exported_lazily():
    assert "MutualDistiller" in tf_distill.__all__
    assert tf_distill.MutualDistiller is MutualDistiller
