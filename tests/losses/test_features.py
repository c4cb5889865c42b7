"""Tests of the feature losses: feature matching, FitNetsDistillation, attention transfer."""

import math

import numpy as np
import numpy_reference as ref
import pytest

from tf_distill import losses
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.losses import AttentionDistillation
from tf_distill.losses import FeatureDistillation
from tf_distill.losses import FitNetsDistillation
from tf_distill.losses import attention_transfer
from tf_distill.losses import feature_cosine
from tf_distill.losses import feature_l1
from tf_distill.losses import feature_mse
from tf_distill.losses import fitnets_hint


def symbolic(shape, batch_size=None):
    """A symbolic tensor, as the Distiller sees when it builds (Keras 3 or tf_keras)."""
    return keras.Input(shape=shape, batch_size=batch_size)


def random_features(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def student_gradient(function, teacher, student):
    student = tf.Variable(student)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(function(tf.stop_gradient(teacher), student))
    return tape.gradient(value, student).numpy()


def assert_round_trips(loss, teacher, student):
    expected = loss(teacher, student).numpy()
    restored = losses.deserialize(losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    np.testing.assert_allclose(restored(teacher, student), expected, rtol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    np.testing.assert_allclose(restored(teacher, student), expected, rtol=1e-6)


# --- FeatureDistillation (unchanged behaviour) -------------------------------


def test_feature_functions_hand_checked():
    teacher = tf.constant([[1.0, 2.0], [0.0, 3.0]])
    student = tf.constant([[1.0, 0.0], [0.0, -3.0]])
    np.testing.assert_allclose(feature_mse(teacher, student), [2.0, 18.0])
    np.testing.assert_allclose(feature_l1(teacher, student), [1.0, 3.0])
    np.testing.assert_allclose(
        feature_cosine(teacher, student), [1.0 - 1.0 / math.sqrt(5.0), 2.0], atol=1e-6
    )


@pytest.mark.parametrize("name,reduce", [("mse", np.square), ("mae", np.abs)])
def test_feature_distillation_matches_numpy(name, reduce):
    teacher = random_features([3, 2, 2, 4], 0)
    student = random_features([3, 2, 2, 4], 1)
    expected = reduce(teacher - student).reshape(3, -1).mean(axis=1)
    loss = FeatureDistillation(name, "t", "s")
    np.testing.assert_allclose(loss(teacher, student), expected, rtol=1e-5)
    assert not loss.needs_adapter


def test_feature_distillation_keras_loss_object_gives_per_example_values():
    teacher = random_features([3, 2, 4], 25)
    student = random_features([3, 2, 4], 26)
    loss = FeatureDistillation(keras.losses.MeanAbsoluteError())
    values = loss(teacher, student)
    assert values.shape == (3,)
    np.testing.assert_allclose(
        values, np.abs(teacher - student).reshape(3, -1).mean(axis=1), rtol=1e-5
    )
    assert_round_trips(loss, teacher, student)


def test_feature_distillation_round_trip_and_errors():
    teacher = random_features([3, 4], 2)
    student = random_features([3, 4], 3)
    assert_round_trips(FeatureDistillation("cosine", "a", "b"), teacher, student)
    with pytest.raises(ValueError, match=r"Received: loss='huber_thing'"):
        FeatureDistillation("huber_thing")
    with pytest.raises(ValueError, match="at least one non-`None` value"):
        FeatureDistillation(None)
    with pytest.raises(ValueError, match=r"teacher \(None, 4\) from layer 'a'"):
        FeatureDistillation("mse", "a", "b").validate_outputs(symbolic((4,)), symbolic((5,)))


# --- FitNets ------------------------------------------------------------------


def test_fitnets_hand_checked():
    teacher = tf.constant([[1.0, 2.0, 3.0, 4.0]])
    student = tf.constant([[1.0, 0.0, 3.0, 0.0]])
    # (0 + 4 + 0 + 16) / 4 = 5.
    np.testing.assert_allclose(fitnets_hint(teacher, student), [5.0])
    np.testing.assert_allclose(FitNetsDistillation()(teacher, student), [5.0])


def test_fitnets_matches_numpy():
    teacher = random_features([4, 3, 3, 5], 4)
    student = random_features([4, 3, 3, 5], 5)
    np.testing.assert_allclose(
        fitnets_hint(teacher, student), ref.fitnets(teacher, student), rtol=1e-5
    )
    np.testing.assert_allclose(fitnets_hint(teacher, teacher), np.zeros(4))


def test_fitnets_needs_adapter_and_round_trips():
    loss = FitNetsDistillation(teacher_layer_name="hint", student_layer_name="guided")
    assert loss.needs_adapter is True
    assert loss.teacher_layer_name == "hint"
    assert loss.student_layer_name == "guided"
    assert loss.get_config() == {
        "teacher_layer_name": "hint",
        "student_layer_name": "guided",
    }
    assert_round_trips(loss, random_features([2, 6], 6), random_features([2, 6], 7))
    # Before the adapter the widths differ, and that is fine.
    loss.validate_outputs(symbolic((8,)), symbolic((3,)))


def test_fitnets_rejects_unadapted_shapes():
    with pytest.raises(
        ValueError,
        match=r"after the adapter.*Received: teacher \(2, 8\) and student \(2, 3\)",
    ):
        FitNetsDistillation()(tf.zeros([2, 8]), tf.zeros([2, 3]))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fitnets_compiled_equals_eager(jit_compile):
    teacher = random_features([3, 6], 8)
    student = random_features([3, 6], 9)
    compiled = tf.function(fitnets_hint, jit_compile=jit_compile)(teacher, student)
    np.testing.assert_allclose(compiled, fitnets_hint(teacher, student), rtol=1e-6)


def test_fitnets_student_gradient():
    teacher = random_features([3, 6], 10)
    student = random_features([3, 6], 11)
    gradient = student_gradient(fitnets_hint, teacher, student)
    # d/ds mean_b mean_d (t − s)² = −2 (t − s) / (b · d).
    np.testing.assert_allclose(gradient, -2.0 * (teacher - student) / 18.0, atol=1e-6)


# --- Attention transfer -------------------------------------------------------


def test_attention_transfer_hand_checked():
    # Teacher attention (p = 2) over 2 positions: [1 + 0, 0 + 0] → [1, 0].
    # Student: [1, 1] → [1/√2, 1/√2]. Distance = sqrt((1/√2 − 1)² + ½).
    teacher = tf.constant([[[[1.0, 0.0]], [[0.0, 0.0]]]])  # [1, 2, 1, 2]
    student = tf.constant([[[[1.0]], [[-1.0]]]])  # [1, 2, 1, 1]
    expected = math.sqrt((1 / math.sqrt(2) - 1) ** 2 + 0.5)
    np.testing.assert_allclose(attention_transfer(teacher, student), [expected], atol=1e-6)


@pytest.mark.parametrize("power", [1.0, 2.0, 3.5])
def test_attention_transfer_matches_numpy(power):
    teacher = random_features([3, 4, 5, 6], 12)
    student = random_features([3, 4, 5, 2], 13)  # fewer channels
    np.testing.assert_allclose(
        attention_transfer(teacher, student, power=power),
        ref.attention(teacher, student, power),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        AttentionDistillation(power=power)(teacher, student),
        ref.attention(teacher, student, power),
        atol=1e-5,
    )


def test_attention_transfer_rank3_features():
    teacher = random_features([2, 7, 3], 14)
    student = random_features([2, 7, 5], 15)
    np.testing.assert_allclose(
        attention_transfer(teacher, student), ref.attention(teacher, student), atol=1e-5
    )


def test_attention_transfer_zero_and_invariances():
    features = random_features([3, 4, 4, 6], 16)
    # Zero for the same map, and for any positive rescaling (normalization).
    np.testing.assert_allclose(attention_transfer(features, features), 0.0, atol=1e-6)
    # Rescaled, the two normalized maps differ by rounding alone: about one
    # float32 ulp at each of the 16 positions, so the distance is noise below
    # 16 · eps, whatever the CPU.
    rounding = 16 * np.finfo(np.float32).eps
    np.testing.assert_allclose(attention_transfer(features, 5.0 * features), 0.0, atol=rounding)
    # Sign flips do not change |A|^p.
    np.testing.assert_allclose(attention_transfer(features, -features), 0.0, atol=1e-6)
    # Invariant to permuting the channels of either side.
    student = random_features([3, 4, 4, 6], 17)
    permutation = np.random.default_rng(18).permutation(6)
    np.testing.assert_allclose(
        attention_transfer(features[..., permutation], student[..., ::-1]),
        attention_transfer(features, student),
        atol=1e-6,
    )
    # But not to moving activity to other positions.
    assert float(attention_transfer(features, features[:, ::-1])[0]) > 1e-2


@pytest.mark.parametrize("jit_compile", [False, True])
def test_attention_transfer_compiled_equals_eager(jit_compile):
    teacher = random_features([2, 3, 3, 4], 19)
    student = random_features([2, 3, 3, 2], 20)
    compiled = tf.function(attention_transfer, jit_compile=jit_compile)(teacher, student)
    np.testing.assert_allclose(compiled, attention_transfer(teacher, student), atol=1e-6)


def test_attention_transfer_student_gradients():
    teacher = random_features([2, 3, 3, 4], 21)
    student = random_features([2, 3, 3, 2], 22)
    gradient = student_gradient(attention_transfer, teacher, student)
    assert np.all(np.isfinite(gradient))
    assert np.abs(gradient).max() > 1e-3
    # At the optimum (student equal to teacher) the gradient is 0, not NaN.
    gradient = student_gradient(attention_transfer, teacher, teacher)
    np.testing.assert_array_equal(gradient, np.zeros_like(teacher))


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_attention_transfer_gradients_finite_at_zero_activations(power):
    # ReLU features are often exactly 0; |a|^p must not give NaN there.
    teacher = random_features([2, 3, 3, 4], 27)
    student = np.maximum(random_features([2, 3, 3, 2], 28), 0.0)
    student[0] = 0.0  # a whole dead map

    def function(t, s):
        return attention_transfer(t, s, power=power)

    gradient = student_gradient(function, teacher, student)
    assert np.all(np.isfinite(gradient))
    assert np.abs(gradient).max() > 1e-3


def test_attention_transfer_round_trip():
    loss = AttentionDistillation(power=3, teacher_layer_name="t4", student_layer_name="s2")
    assert loss.get_config() == {
        "power": 3.0,
        "teacher_layer_name": "t4",
        "student_layer_name": "s2",
    }
    assert not loss.needs_adapter
    assert_round_trips(loss, random_features([2, 3, 3, 4], 23), random_features([2, 3, 3, 2], 24))


def test_attention_transfer_errors():
    with pytest.raises(
        ValueError,
        match=r"same spatial size \(channels may differ\). Received: teacher "
        r"\(2, 4, 4, 3\) and student \(2, 2, 2, 3\)",
    ):
        attention_transfer(tf.zeros([2, 4, 4, 3]), tf.zeros([2, 2, 2, 3]))
    with pytest.raises(
        ValueError, match=r"rank >= 3 .*Received: student features of shape \(2, 5\)"
    ):
        attention_transfer(tf.zeros([2, 4, 5]), tf.zeros([2, 5]))
    with pytest.raises(ValueError, match=r"`power` must be >= 1. Received: power=0"):
        AttentionDistillation(power=0)
    with pytest.raises(ValueError, match=r"`power` must be >= 1. Received: power=0.5"):
        attention_transfer(tf.ones([1, 2, 1]), tf.ones([1, 2, 1]), power=0.5)
    with pytest.raises(ValueError, match=r"`power` must be a number >= 1. Received: power='2'"):
        AttentionDistillation(power="2")
