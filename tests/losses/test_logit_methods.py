"""Tests of DKD and DIST."""

import math

import numpy as np
import numpy_reference as ref
import pytest

from tf_distill import losses
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.losses import CorrelationDistillation
from tf_distill.losses import DecoupledDistillation
from tf_distill.losses import decoupled_kd
from tf_distill.losses import dist
from tf_distill.losses import soft_label_kl


def random_logits(shape, seed, scale=3.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def random_labels(batch, classes, seed):
    return np.random.default_rng(seed).integers(0, classes, size=batch)


# --- DKD: hand-checked values ---------------------------------------------------


def test_dkd_hand_checked():
    # Three classes, target 0, T = 1. Teacher p = [1/2, 1/4, 1/4]; student
    # p = [1/4, 1/4, 1/2].
    teacher = tf.constant([[math.log(2.0), 0.0, 0.0]])
    student = tf.constant([[0.0, 0.0, math.log(2.0)]])
    tckd = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    # Non-target: teacher [1/2, 1/2], student [1/3, 2/3].
    nckd = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    np.testing.assert_allclose(
        decoupled_kd(teacher, student, [0], alpha=1.0, beta=0.0, temperature=1.0),
        [tckd],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        decoupled_kd(teacher, student, [0], alpha=0.0, beta=1.0, temperature=1.0),
        [nckd],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        decoupled_kd(teacher, student, [0], alpha=2.0, beta=3.0, temperature=1.0),
        [2 * tckd + 3 * nckd],
        atol=1e-6,
    )


def test_dkd_reformulates_kd():
    # Zhao et al. 2022: KD = TCKD + (1 − p_g^T) · NCKD, for every example.
    temperature = 2.5
    teacher = random_logits([6, 5], 0)
    student = random_logits([6, 5], 1)
    labels = random_labels(6, 5, 2)
    tckd = decoupled_kd(teacher, student, labels, 1.0, 0.0, temperature)
    nckd = decoupled_kd(teacher, student, labels, 0.0, 1.0, temperature)
    p_target = ref.softmax(teacher, temperature)[np.arange(6), labels]
    np.testing.assert_allclose(
        tckd + (1 - p_target) * nckd,
        soft_label_kl(teacher, student, temperature),
        rtol=1e-5,
    )


# --- DKD: NumPy reference, labels, numerics ----------------------------------


@pytest.mark.parametrize(
    "alpha,beta,temperature", [(1.0, 8.0, 4.0), (1.0, 0.5, 1.0), (0.3, 2.0, 2.0)]
)
def test_dkd_matches_numpy(alpha, beta, temperature):
    teacher = random_logits([6, 7], 3)
    student = random_logits([6, 7], 4)
    labels = random_labels(6, 7, 5)
    expected = ref.dkd(teacher, student, labels, alpha, beta, temperature)
    np.testing.assert_allclose(
        decoupled_kd(teacher, student, labels, alpha, beta, temperature),
        expected,
        rtol=1e-5,
        atol=1e-5,
    )
    loss = DecoupledDistillation(alpha=alpha, beta=beta, temperature=temperature)
    np.testing.assert_allclose(
        loss(teacher, student, labels=labels), expected, rtol=1e-5, atol=1e-5
    )


def test_dkd_label_formats_agree():
    teacher = random_logits([4, 5], 6)
    student = random_logits([4, 5], 7)
    labels = random_labels(4, 5, 8)
    expected = ref.dkd(teacher, student, labels, 1.0, 8.0, 4.0)
    formats = [
        labels,
        labels.astype(np.int32),
        labels.reshape(4, 1),
        labels.astype(np.float32),
        np.eye(5, dtype=np.float32)[labels],
        0.9 * np.eye(5, dtype=np.float32)[labels] + 0.02,  # label smoothing
    ]
    for given in formats:
        np.testing.assert_allclose(
            decoupled_kd(teacher, student, given), expected, rtol=1e-5, atol=1e-5
        )


def test_dkd_without_labels_uses_teacher_argmax():
    teacher = random_logits([5, 6], 9)
    student = random_logits([5, 6], 10)
    expected = ref.dkd(teacher, student, teacher.argmax(axis=-1), 1.0, 8.0, 4.0)
    np.testing.assert_allclose(decoupled_kd(teacher, student), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(DecoupledDistillation()(teacher, student), expected, rtol=1e-5, atol=1e-5)


def test_dkd_zero_when_student_equals_teacher():
    logits = random_logits([4, 5], 11)
    labels = random_labels(4, 5, 12)
    np.testing.assert_allclose(decoupled_kd(logits, logits, labels), 0.0, atol=1e-6)
    assert np.all(decoupled_kd(logits, random_logits([4, 5], 13), labels).numpy() > 0)


def test_dkd_extreme_logits_stay_finite():
    teacher = tf.constant([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4]])
    student = tf.constant([[-1e4, 1e4, 0.0], [1e4, -1e4, 1e4]])
    labels = [0, 1]
    student_variable = tf.Variable(student)
    with tf.GradientTape() as tape:
        values = decoupled_kd(teacher, student_variable, labels, temperature=1.0)
        total = tf.reduce_sum(values)
    gradient = tape.gradient(total, student_variable)
    assert np.all(np.isfinite(values.numpy()))
    assert np.all(np.isfinite(gradient.numpy()))
    # Example 0 at T = 1: b_t = [1, 0], log b_s[0] = −2e4, so TCKD = 2e4;
    # non-target teacher [0, 1] vs student log [0, −1e4]: NCKD = 1e4.
    np.testing.assert_allclose(values[0], 2e4 + 8.0 * 1e4, rtol=1e-5)


def test_dkd_float16_computes_in_float32():
    teacher = tf.constant(random_logits([3, 4], 14), tf.float16)
    student = tf.constant(random_logits([3, 4], 15), tf.float16)
    values = decoupled_kd(teacher, student, [0, 1, 2])
    assert values.dtype == tf.float32
    np.testing.assert_allclose(
        values,
        ref.dkd(teacher.numpy(), student.numpy(), [0, 1, 2], 1.0, 8.0, 4.0),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("jit_compile", [False, True])
def test_dkd_compiled_equals_eager(jit_compile):
    teacher = random_logits([4, 5], 16)
    student = random_logits([4, 5], 17)
    labels = random_labels(4, 5, 18)
    loss = DecoupledDistillation(alpha=0.5, beta=2.0, temperature=3.0)
    compiled = tf.function(lambda t, s, y: loss(t, s, labels=y), jit_compile=jit_compile)(
        teacher, student, labels
    )
    np.testing.assert_allclose(
        compiled, loss(teacher, student, labels=labels), rtol=1e-5, atol=1e-6
    )


def test_dkd_student_gradients():
    teacher = random_logits([4, 5], 19)
    student = tf.Variable(random_logits([4, 5], 20))
    labels = random_labels(4, 5, 21)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(decoupled_kd(tf.stop_gradient(teacher), student, labels))
    gradient = tape.gradient(value, student).numpy()
    assert np.all(np.isfinite(gradient))
    assert np.abs(gradient).max() > 1e-3
    # Shifting a row of logits changes no probability.
    np.testing.assert_allclose(gradient.sum(axis=-1), 0.0, atol=1e-5)


def test_dkd_class_serialization_round_trip():
    loss = DecoupledDistillation(alpha=2, beta=0.5, temperature=1)
    assert loss.needs_labels is True
    assert not loss.needs_adapter
    assert loss.get_config() == {"alpha": 2.0, "beta": 0.5, "temperature": 1.0}
    teacher = random_logits([3, 4], 22)
    student = random_logits([3, 4], 23)
    labels = random_labels(3, 4, 24)
    expected = loss(teacher, student, labels=labels).numpy()
    config = losses.serialize(loss)
    assert config == {"name": "dkd", "alpha": 2.0, "beta": 0.5, "temperature": 1.0}
    for restored in (
        losses.deserialize(config),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss)),
    ):
        assert type(restored) is DecoupledDistillation
        assert restored.get_config() == loss.get_config()
        np.testing.assert_allclose(restored(teacher, student, labels=labels), expected, rtol=1e-6)


# --- DKD: errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"alpha": -1.0}, r"`alpha` must be >= 0. Received: alpha=-1.0"),
        ({"beta": -0.5}, r"`beta` must be >= 0. Received: beta=-0.5"),
        ({"beta": "8"}, r"`beta` must be a number >= 0. Received: beta='8'"),
        ({"temperature": 0}, r"`temperature` must be > 0. Received: temperature=0"),
    ],
)
def test_dkd_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecoupledDistillation(**kwargs)
    with pytest.raises(ValueError, match=message):
        decoupled_kd(tf.zeros([1, 3]), tf.zeros([1, 3]), [0], **kwargs)


def test_dkd_rejects_bad_shapes():
    with pytest.raises(
        ValueError,
        match=r"DKD needs logits of shape `\[batch, classes\]`. Received: "
        r"teacher logits of shape \(2, 3, 4\)",
    ):
        decoupled_kd(tf.zeros([2, 3, 4]), tf.zeros([2, 3, 4]), [0, 1])
    with pytest.raises(
        ValueError, match=r"same shape. Received: teacher \(2, 4\) and student \(2, 5\)"
    ):
        decoupled_kd(tf.zeros([2, 4]), tf.zeros([2, 5]), [0, 1])
    with pytest.raises(ValueError, match=r"at least two classes. Received: .*\(2, 1\)"):
        decoupled_kd(tf.zeros([2, 1]), tf.zeros([2, 1]), [0, 0])
    with pytest.raises(
        ValueError,
        match=r"`labels` must be class indices .*Received: labels of "
        r"shape \(2, 4, 1\)",
    ):
        decoupled_kd(tf.zeros([2, 4]), tf.zeros([2, 4]), tf.zeros([2, 4, 1]))


# --- DIST -------------------------------------------------------------------------


def _ulps_away(value, ulps):
    value = np.float32(value)
    direction = np.float32(np.inf if ulps > 0 else -np.inf)
    for _ in range(abs(ulps)):
        value = np.nextafter(value, direction)
    return value


@pytest.mark.parametrize("ulps", [0, 1, -1, 3, -3])
def test_dist_hand_checked(ulps):
    # T = 1 and logits chosen as log-probabilities. Two examples, three
    # classes; the student reverses the teacher's order in example 0.
    y_t = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    y_s = np.array([[0.2, 0.3, 0.5], [0.2, 0.2, 0.6]])
    # Example 0, centred: a = [1/6, −1/30, −2/15], b = [−2/15, −1/30, 1/6];
    # a·b = −39/900 and ‖a‖² = ‖b‖² = 42/900, so ρ = −39/42. Example 1 agrees.
    inter = np.array([1 + 39 / 42, 0.0])
    # Column 0: [0.5, 0.2] vs [0.2, 0.2]. The student's is constant, so ρ is
    # 0 by definition; columns 1 and 2 move together across the two
    # examples, ρ = 1.
    intra = (1 + 0 + 0) / 3
    # After a float32 softmax, column 0 is constant only up to rounding, which
    # differs between CPUs (AVX2, AVX-512, NEON). Moving one of its logits by
    # a few ulps stands in for another CPU: the defined value must not move.
    student_logits = np.log(y_s).astype(np.float32)
    student_logits[1, 0] = _ulps_away(student_logits[1, 0], ulps)
    values = dist(
        np.log(y_t).astype(np.float32),
        student_logits,
        beta=1.0,
        gamma=1.0,
        temperature=1.0,
    )
    np.testing.assert_allclose(values, inter + intra, atol=1e-5)


def test_dist_constant_up_to_rounding_is_constant():
    # A column constant in exact arithmetic, spread only by float32 rounding:
    # ρ = 0 for it, the same value as for an exactly constant column.
    teacher = random_logits([4, 5], 38)
    student = random_logits([4, 5], 39)
    # Logit 1 beside others whose exponentials sum to 3e: p = 1/4 in every row.
    student[:, 0] = np.float32(1.0)
    student[:, 1:] -= np.log(np.exp(student[:, 1:]).sum(axis=1, keepdims=True))
    student[:, 1:] += np.float32(1.0 + np.log(3.0))
    exact = dist(teacher, student, beta=0.0, temperature=1.0).numpy()
    np.testing.assert_allclose(exact, ref.dist(teacher, student, 0.0, 1.0, 1.0), atol=1e-5)
    for ulps in (1, -1, 2, -2):
        noisy = student.copy()
        noisy[2, 0] = _ulps_away(noisy[2, 0], ulps)
        noisy[3, 0] = _ulps_away(noisy[3, 0], -ulps)
        np.testing.assert_allclose(
            dist(teacher, noisy, beta=0.0, temperature=1.0), exact, atol=1e-6
        )
    # A constant column adds nothing to the gradient, and nothing undefined.
    variable = tf.Variable(student)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(dist(teacher, variable, temperature=1.0))
    assert np.all(np.isfinite(tape.gradient(value, variable).numpy()))
    # A real spread, far above rounding, is correlated as usual.
    spread = student.copy()
    spread[:, 0] = np.float32([0.0, 0.5, -0.5, 1.0])
    expected = ref.dist(teacher, spread, 0.0, 1.0, 1.0)
    np.testing.assert_allclose(dist(teacher, spread, beta=0.0, temperature=1.0), expected, atol=1e-5)


@pytest.mark.parametrize(
    "beta,gamma,temperature", [(1.0, 1.0, 4.0), (1.0, 2.0, 1.0), (0.5, 0.0, 2.0)]
)
def test_dist_matches_numpy(beta, gamma, temperature):
    teacher = random_logits([6, 7], 25)
    student = random_logits([6, 7], 26)
    expected = ref.dist(teacher, student, beta, gamma, temperature)
    np.testing.assert_allclose(
        dist(teacher, student, beta, gamma, temperature), expected, atol=1e-5
    )
    loss = CorrelationDistillation(beta=beta, gamma=gamma, temperature=temperature)
    np.testing.assert_allclose(loss(teacher, student), expected, atol=1e-5)


def test_dist_batch_mean_is_papers_loss():
    teacher = random_logits([5, 4], 27)
    student = random_logits([5, 4], 28)
    y_t = ref.softmax(teacher, 4.0)
    y_s = ref.softmax(student, 4.0)
    inter = np.mean([1 - ref.pearson(y_s[i], y_t[i]) for i in range(5)])
    intra = np.mean([1 - ref.pearson(y_s[:, c], y_t[:, c]) for c in range(4)])
    np.testing.assert_allclose(
        float(tf.reduce_mean(dist(teacher, student))), 16.0 * (inter + intra), rtol=1e-4
    )
    # The intra-class part is shared by every example.
    only_intra = dist(teacher, student, beta=0.0, gamma=1.0).numpy()
    np.testing.assert_allclose(only_intra, np.full(5, 16.0 * intra), rtol=1e-4)


def test_dist_zero_when_student_equals_teacher_and_invariances():
    logits = random_logits([4, 6], 29)
    np.testing.assert_allclose(dist(logits, logits), 0.0, atol=1e-5)
    # Pearson ignores shifting the logits of a row (same softmax).
    student = random_logits([4, 6], 30)
    shifted = student + np.arange(4, dtype=np.float32)[:, None]
    np.testing.assert_allclose(dist(logits, shifted), dist(logits, student), atol=1e-5)


def test_dist_single_example_batch():
    # One example: every class column is constant, so intra = 1 (times T²).
    logits = random_logits([1, 5], 31)
    np.testing.assert_allclose(
        dist(logits, logits, beta=1.0, gamma=1.0, temperature=2.0), [4.0], atol=1e-5
    )


def test_dist_extreme_logits_stay_finite():
    teacher = tf.constant([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 1e4]])
    student = tf.Variable([[-1e4, 1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 1e4, 0.0]])
    with tf.GradientTape() as tape:
        values = dist(teacher, student, temperature=1.0)
        total = tf.reduce_sum(values)
    gradient = tape.gradient(total, student)
    assert np.all(np.isfinite(values.numpy()))
    assert np.all(np.isfinite(gradient.numpy()))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_dist_compiled_equals_eager(jit_compile):
    teacher = random_logits([4, 5], 32)
    student = random_logits([4, 5], 33)
    compiled = tf.function(dist, jit_compile=jit_compile)(teacher, student)
    np.testing.assert_allclose(compiled, dist(teacher, student), atol=1e-5)


def test_dist_student_gradients():
    teacher = random_logits([4, 5], 34)
    student = tf.Variable(random_logits([4, 5], 35))
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(dist(tf.stop_gradient(teacher), student))
    gradient = tape.gradient(value, student).numpy()
    assert np.all(np.isfinite(gradient))
    assert np.abs(gradient).max() > 1e-3


def test_dist_float16_computes_in_float32():
    teacher = tf.constant(random_logits([3, 4], 36), tf.float16)
    student = tf.constant(random_logits([3, 4], 37), tf.float16)
    values = dist(teacher, student)
    assert values.dtype == tf.float32
    np.testing.assert_allclose(
        values, ref.dist(teacher.numpy(), student.numpy(), 1.0, 1.0, 4.0), atol=1e-5
    )


def test_dist_class_serialization_round_trip():
    loss = CorrelationDistillation(beta=2, gamma=0.5, temperature=1)
    assert loss.get_config() == {"beta": 2.0, "gamma": 0.5, "temperature": 1.0}
    assert not getattr(loss, "needs_labels", False)
    teacher = random_logits([3, 4], 38)
    student = random_logits([3, 4], 39)
    expected = loss(teacher, student).numpy()
    config = losses.serialize(loss)
    assert config == {"name": "dist", "beta": 2.0, "gamma": 0.5, "temperature": 1.0}
    for restored in (
        losses.deserialize(config),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss)),
    ):
        assert type(restored) is CorrelationDistillation
        assert restored.get_config() == loss.get_config()
        np.testing.assert_allclose(restored(teacher, student), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"beta": -1}, r"`beta` must be >= 0. Received: beta=-1"),
        ({"gamma": -0.1}, r"`gamma` must be >= 0. Received: gamma=-0.1"),
        ({"gamma": None}, r"`gamma` must be a number >= 0. Received: gamma=None"),
        ({"temperature": -4.0}, r"`temperature` must be > 0. Received: temperature=-4.0"),
    ],
)
def test_dist_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CorrelationDistillation(**kwargs)
    with pytest.raises(ValueError, match=message):
        dist(tf.zeros([2, 3]), tf.zeros([2, 3]), **kwargs)


def test_dist_rejects_bad_shapes():
    with pytest.raises(
        ValueError,
        match=r"DIST needs logits of shape `\[batch, classes\]`. Received: "
        r"student logits of shape \(2, 3, 4\)",
    ):
        dist(tf.zeros([2, 3]), tf.zeros([2, 3, 4]))
    with pytest.raises(
        ValueError, match=r"same shape. Received: teacher \(2, 3\) and student \(2, 4\)"
    ):
        CorrelationDistillation()(tf.zeros([2, 3]), tf.zeros([2, 4]))
