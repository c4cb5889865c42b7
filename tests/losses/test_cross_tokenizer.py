"""Universal Logit Distillation against the paper's formula (NumPy)."""

import numpy as np
import numpy_reference as reference
import pytest
import tensorflow as tf

from tf_distill import losses


def test_uld_matches_numpy_on_random_logits_of_two_vocabularies():
    rng = np.random.default_rng(0)
    teacher = rng.normal(scale=3, size=(3, 5, 11)).astype(np.float32)
    student = rng.normal(scale=3, size=(3, 5, 7)).astype(np.float32)
    mask = (rng.random((3, 5)) > 0.3).astype(np.float32)
    for temperature in (1.0, 2.5):
        expected = reference.uld(teacher, student, temperature, mask)
        got = losses.universal_logit_distillation(teacher, student, temperature, mask=mask)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
        # The student's vocabulary may be the larger one.
        expected = reference.uld(student, teacher, temperature, mask)
        got = losses.universal_logit_distillation(student, teacher, temperature, mask=mask)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_uld_hand_values():
    # A one-hot teacher against a uniform student over 4 tokens:
    # |1 - 1/4| + 3 · |0 - 1/4| = 1.5.
    teacher = np.array([[100.0, 0.0, 0.0, 0.0]], np.float32)
    student = np.zeros((1, 4), np.float32)
    np.testing.assert_allclose(
        losses.universal_logit_distillation(teacher, student).numpy(), [1.5], atol=1e-6)
    # Sorting makes the loss blind to which token is which: a permuted
    # vocabulary, or one padded with tokens of probability 0, costs nothing.
    logits = np.array([[1.0, 3.0, -2.0]], np.float32)
    padded = np.array([[3.0, -2.0, 1.0, -1e9, -1e9]], np.float32)
    assert losses.universal_logit_distillation(logits, padded).numpy()[0] < 1e-6


def test_uld_compiled_equals_eager_and_has_gradients():
    rng = np.random.default_rng(1)
    teacher = tf.constant(rng.normal(size=(2, 4, 9)), tf.float32)
    student = tf.Variable(rng.normal(size=(2, 4, 6)), dtype=tf.float32)
    mask = tf.constant([[1, 1, 0, 0], [1, 1, 1, 1]], tf.float32)
    loss = losses.get("uld")
    compiled = tf.function(lambda: loss(teacher, student, mask=mask))
    np.testing.assert_allclose(compiled().numpy(), loss(teacher, student, mask=mask).numpy(),
                               rtol=1e-6)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(loss(teacher, student, mask=mask))
    gradient = tape.gradient(value, student).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).sum() > 0
    # Masked positions get no gradient.
    assert np.all(gradient[0, 2:] == 0)


def test_uld_config_and_errors():
    loss = losses.UniversalLogitDistillation(temperature=2.0)
    again = losses.get(losses.serialize(loss))
    assert isinstance(again, losses.UniversalLogitDistillation) and again.temperature == 2.0
    assert again.cross_tokenizer
    with pytest.raises(ValueError, match="temperature=0"):
        losses.UniversalLogitDistillation(temperature=0)
    with pytest.raises(ValueError, match="same positions"):
        loss.validate_outputs(tf.zeros([2, 5, 7]), tf.zeros([2, 4, 7]))
    loss.validate_outputs(tf.zeros([2, 5, 7]), tf.zeros([2, 5, 300]))
