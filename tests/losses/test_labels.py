"""Tests of the student's label loss (tf_distill.losses.labels)."""

import re

import numpy as np
import pytest

from tf_distill import losses
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.losses import labels


def np_crossentropy(probabilities, logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -(probabilities * log_softmax).sum(axis=-1)


def test_crossentropy_hand_checked():
    # log-softmax of [0, 0] is [-log 2, -log 2].
    value = losses.crossentropy_from_logits(np.array([1]), np.zeros((1, 2), "float32"))
    np.testing.assert_allclose(value, [np.log(2.0)], rtol=1e-6)


@pytest.mark.parametrize("form", ["sparse", "sparse_trailing", "one_hot", "soft"])
def test_crossentropy_matches_numpy_eager_and_compiled(form):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4, 5)).astype("float32")
    y = rng.integers(0, 5, size=(6, 4))
    targets = np.eye(5)[y]
    given = {"sparse": y, "sparse_trailing": y[..., None], "one_hot": targets}.get(form)
    if form == "soft":
        targets = rng.dirichlet(np.ones(5), size=(6, 4))
        given = targets.astype("float32")
    expected = np_crossentropy(targets, logits.astype(np.float64))
    eager = labels.crossentropy_from_logits(given, logits)
    compiled = tf.function(labels.crossentropy_from_logits)(tf.constant(given), logits)
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(compiled, eager, rtol=1e-6, atol=1e-7)


def test_resolve_student_loss():
    for name in ("sparse_categorical_crossentropy", "categorical_crossentropy", "auto"):
        assert labels.resolve_student_loss(name) is losses.crossentropy_from_logits
    assert labels.resolve_student_loss(None) is None
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert labels.resolve_student_loss(loss) == loss.call
    with pytest.warns(UserWarning, match="from_logits=False"):
        labels.resolve_student_loss(keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(ValueError, match=r"Invalid value for argument `loss`.*Received: loss=3"):
        labels.resolve_student_loss(3)


def test_label_mask_and_example_weights():
    logits = tf.zeros((2, 3, 4))
    mask = np.array([[1, 1, 0], [1, 0, 0]], "float32")
    np.testing.assert_array_equal(labels.label_mask(logits, mask), mask)
    np.testing.assert_array_equal(labels.label_mask(logits, mask[..., None]), mask)
    assert labels.label_mask(tf.zeros((2, 4)), np.ones(2)) is None
    assert labels.example_weights(mask, mask) is None
    np.testing.assert_allclose(labels.example_weights(np.array([[1.0, 3.0]]), None), [2.0])


@pytest.mark.parametrize(
    "name, one_hot",
    [("sparse_categorical_crossentropy", False), ("categorical_crossentropy", True)],
)
def test_crossentropy_names_mean_from_logits_in_a_distiller(name, one_hot):
    """Unlike Keras (where the names mean probabilities), a Distiller reads a
    crossentropy name as `crossentropy_from_logits`: its student outputs
    logits."""
    from tf_distill import Distiller

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.integers(0, 3, size=16)
    targets = np.eye(3, dtype="float32")[y] if one_hot else y
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    logits = np.asarray(student(x), np.float64)

    named = Distiller(teacher, student, "kd")
    named.compile(optimizer="sgd", loss=name)
    by_function = Distiller(teacher, student, "kd")
    by_function.compile(optimizer="sgd", loss=losses.crossentropy_from_logits)
    value = float(named.compute_loss_terms(x, targets)["student_loss"])
    reference = float(by_function.compute_loss_terms(x, targets)["student_loss"])
    np.testing.assert_allclose(value, reference, rtol=1e-6)
    np.testing.assert_allclose(value, np_crossentropy(np.eye(3)[y], logits).mean(), rtol=1e-5)
    # What Keras's own name computes on the same logits (as probabilities).
    as_probabilities = float(np.mean(keras.losses.get(name)(targets, logits)))
    assert abs(as_probabilities - value) > 0.1


def test_a_label_of_minus_one_marks_an_unlabeled_example():
    from tf_distill import Distiller
    from tf_distill import LogitsDistillation


    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)).astype("float32")

    def model(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((5,))
        return keras.Model(inputs, keras.layers.Dense(3)(inputs))

    teacher, student = model(1), model(2)
    distiller = Distiller(teacher=teacher, student=student,
                          distillation_losses=LogitsDistillation(temperature=2.0),
                          student_loss_weight=0.5)
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    y = np.array([2, -1, 0, -1, 1, 1])
    terms = distiller.compute_loss_terms(x, y)
    logits = student(x).numpy().astype("float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    labeled = y >= 0
    expected = -log_probs[np.flatnonzero(labeled), y[labeled]].sum() / len(y)
    np.testing.assert_allclose(float(terms["student_loss"]), expected, rtol=1e-5)
    # A batch with no label at all has a label loss of 0, and the
    # distillation term is unchanged by the labels.
    unlabeled = distiller.compute_loss_terms(x, np.full(6, -1))
    assert float(unlabeled["student_loss"]) == 0.0
    np.testing.assert_allclose(
        float(unlabeled["distillation_loss"]), float(terms["distillation_loss"]), rtol=1e-6
    )


def test_labels_that_read_a_missing_label_get_the_teachers_prediction():
    from tf_distill.losses.labels import fill_unlabeled

    teacher = tf.constant([[0.1, 3.0, 0.2], [2.0, 0.0, 0.1], [0.0, 0.1, 5.0]])
    filled, labeled = fill_unlabeled(tf.constant([-1, 2, -1]), teacher, teacher)
    assert filled.numpy().tolist() == [1, 2, 2]
    assert labeled.numpy().tolist() == [0.0, 1.0, 0.0]
    one_hot = tf.one_hot([0, 1, 2], 3)
    same, none = fill_unlabeled(one_hot, teacher, teacher)
    assert none is None and same is one_hot


@pytest.mark.parametrize(
    "labels_shape, expected",
    [((4,), "sparse"), ((4, 1), "sparse"), ((4, 10), "one_hot"), ((None, 10), "one_hot")],
)
def test_label_format(labels_shape, expected):
    logits = tf.zeros((4, 10))
    assert labels.label_format(tf.TensorSpec(labels_shape), logits) == expected


@pytest.mark.parametrize("labels_shape", [(4, 2), (4, 10, 1), (3,)])
def test_label_format_refuses_labels_of_neither_form(labels_shape):
    match = re.escape(
        "Invalid value for argument `y` (the labels) for logits of shape (4, 10). Expected "
        "class indices of shape (4,) or (4, 1), or one-hot labels of shape (4, 10). "
        f"Received: y with shape {labels_shape}"
    )
    with pytest.raises(ValueError, match=match):
        labels.label_format(np.zeros(labels_shape), tf.zeros((4, 10)))
    with pytest.raises(ValueError, match="Invalid value for argument `y`"):
        labels.crossentropy_from_logits(np.zeros(labels_shape), tf.zeros((4, 10)))


@pytest.mark.parametrize("form", ["sparse", "sparse_trailing", "one_hot"])
def test_accuracy_follows_the_labels_format(form):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 5)).astype("float32")
    y = rng.integers(0, 5, size=12)
    given = {"sparse": y, "sparse_trailing": y[:, None], "one_hot": np.eye(5)[y]}[form]
    expected = (np.argmax(logits, axis=-1) == y).astype("float32")
    np.testing.assert_array_equal(labels.accuracy_from_logits(given, logits), expected)
    compiled = tf.function(labels.accuracy_from_logits)(tf.constant(given), logits)
    np.testing.assert_array_equal(compiled, expected)
    # One metric, labels of either format in turn (Keras's "accuracy" picks
    # one format at the first batch).
    (metric,) = labels.resolve_metrics(["accuracy"])
    assert metric.name == "accuracy"
    metric.update_state(np.eye(5)[y], logits)
    metric.update_state(given, logits)
    np.testing.assert_allclose(metric.result(), expected.mean(), rtol=1e-6)
