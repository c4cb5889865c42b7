"""Tests of the relational losses: RKD distance and angle, SP, PKT."""

import math

import numpy as np
import numpy_reference as ref
import pytest

from tf_distill import losses
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.losses import ProbabilisticTransferDistillation
from tf_distill.losses import RelationalAngleDistillation
from tf_distill.losses import RelationalDistanceDistillation
from tf_distill.losses import SimilarityPreservingDistillation
from tf_distill.losses import pkt
from tf_distill.losses import rkd_angle
from tf_distill.losses import rkd_distance
from tf_distill.losses import similarity_preserving

FUNCTIONS = {
    "rkd_distance": (rkd_distance, RelationalDistanceDistillation, ref.rkd_distance),
    "rkd_angle": (rkd_angle, RelationalAngleDistillation, ref.rkd_angle),
    "similarity_preserving": (
        similarity_preserving,
        SimilarityPreservingDistillation,
        ref.similarity_preserving,
    ),
    "pkt": (pkt, ProbabilisticTransferDistillation, ref.pkt),
}
NAMES = sorted(FUNCTIONS)
# Reordering a sum (permuted channels or examples, XLA, another CPU's kernels)
# moves a float32 result by a few ulps per stage. PKT chains a normalization,
# a cosine kernel, a second normalization and logs: ±2 ulps on its inputs move
# it by up to 4e-7 (at a value of 0.65), where the others move by at most
# 1.2e-7. Each is compared with a tolerance that fits its maths.
REORDERING_ATOL = {"pkt": 1e-5}


def reordering_atol(name):
    return REORDERING_ATOL.get(name, 1e-6)


def symbolic(shape, batch_size=None):
    """A symbolic tensor, as the Distiller sees when it builds (Keras 3 or tf_keras)."""
    return keras.Input(shape=shape, batch_size=batch_size)


def random_features(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# --- Hand-checked values ----------------------------------------------------


def test_rkd_distance_hand_checked():
    # Teacher: a 3-4-5 right triangle, mean distance 4, so ψ = [3, 4, 5] / 4.
    # Student: an equilateral triangle, ψ = 1 for every pair.
    teacher = tf.constant([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    student = tf.constant([[0.0, 0.0], [2.0, 0.0], [1.0, math.sqrt(3.0)]])
    huber_01 = 0.5 * 0.25**2  # |1 − 3/4| = |1 − 5/4| = 1/4; |1 − 4/4| = 0
    # Row 0 holds pairs (0,1): 3/4 and (0,2): 4/4; row 1: (1,0) 3/4, (1,2) 5/4;
    # row 2: (2,0) 4/4, (2,1) 5/4. The diagonal counts as 0 in the mean of 3.
    expected = [huber_01 / 3, 2 * huber_01 / 3, huber_01 / 3]
    np.testing.assert_allclose(rkd_distance(teacher, student), expected, atol=1e-7)


def test_rkd_distance_uses_linear_part_of_huber():
    # One far-off example: its normalized distances reach about b / 2 = 3
    # while the student's evenly spaced ones stay near 1, so some differences
    # exceed 1 and fall in the linear part of the Huber loss.
    teacher = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [1000.0]], np.float32)
    student = np.arange(6, dtype=np.float32)[:, None]

    def normalized(points):
        d = np.abs(points - points.T)
        return d / (d.sum() / 30)

    assert np.abs(normalized(teacher) - normalized(student)).max() > 1.5
    np.testing.assert_allclose(
        rkd_distance(teacher, student), ref.rkd_distance(teacher, student), atol=1e-5
    )


def test_rkd_angle_hand_checked():
    # Teacher: right angle at vertex 0 (cos 0); student: 60° (cos ½) there.
    teacher = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    student = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3.0) / 2]])
    # At vertex 0 the triplets (0,1,2) and (0,2,1) differ by ½ (Huber ⅛);
    # (0,1,1) and (0,2,2) are cos 0° = 1 on both sides; the rest are 0.
    # Teacher angles at 1 and 2: 45°; student: 60°.
    at_other = 2 * 0.5 * (math.cos(math.pi / 4) - 0.5) ** 2
    expected = [2 * 0.125 / 9, at_other / 9, at_other / 9]
    np.testing.assert_allclose(rkd_angle(teacher, student), expected, atol=1e-6)


def test_similarity_preserving_hand_checked():
    # Teacher: orthogonal examples, G̃_t = I. Student: parallel examples,
    # G = [[1, 2], [2, 4]] → rows [1, 2]/√5 and [2, 4]/√20 = [1, 2]/√5.
    teacher = tf.constant([[1.0, 0.0], [0.0, 3.0]])
    student = tf.constant([[1.0], [2.0]])
    g = np.array([1.0, 2.0]) / math.sqrt(5.0)
    difference = np.array([[1.0, 0.0], [0.0, 1.0]]) - np.stack([g, g])
    expected = (difference**2).sum(axis=1) / 2
    np.testing.assert_allclose(similarity_preserving(teacher, student), expected, atol=1e-6)
    # The batch mean is the paper's ‖G̃_t − G̃_s‖_F² / b².
    np.testing.assert_allclose(
        float(tf.reduce_mean(similarity_preserving(teacher, student))),
        (difference**2).sum() / 4,
        atol=1e-6,
    )


def test_pkt_hand_checked():
    # Teacher: e0 ⟂ e1, e2 = −e0. Kernels from 0: to 1 → ½, to 2 → 0.
    teacher = tf.constant([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # Student: all three at 0°, 90°, 90°+45°.
    student = tf.constant([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
    k = lambda c: (c + 1) / 2  # noqa: E731
    c45 = math.cos(math.pi / 4)
    # Row 0: p = [½, 0] / ½ = [1, 0]; q ∝ [½, k(−c45)].
    q0 = k(0) / (k(0) + k(-c45))
    # Row 1: p ∝ [½, ½] → [½, ½]; q ∝ [½, k(c45)].
    q1 = np.array([k(0), k(c45)]) / (k(0) + k(c45))
    # Row 2: p ∝ [0, ½] → [0, 1]; q ∝ [k(−c45), k(c45)].
    q2 = k(c45) / (k(-c45) + k(c45))
    expected = [
        math.log(1 / q0),
        0.5 * math.log(0.5 / q1[0]) + 0.5 * math.log(0.5 / q1[1]),
        math.log(1 / q2),
    ]
    np.testing.assert_allclose(pkt(teacher, student), expected, atol=1e-5)


# --- NumPy references ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "teacher_shape,student_shape,seed",
    [((6, 8), (6, 8), 0), ((5, 2, 3, 4), (5, 7), 1), ((7, 16), (7, 3), 2)],
)
def test_matches_numpy(name, teacher_shape, student_shape, seed):
    function, cls, reference = FUNCTIONS[name]
    teacher = random_features(teacher_shape, seed)
    student = random_features(student_shape, seed + 100)
    expected = reference(teacher, student)
    np.testing.assert_allclose(function(teacher, student), expected, atol=1e-5)
    np.testing.assert_allclose(cls()(teacher, student), expected, atol=1e-5)


def test_relational_losses_see_structure_not_values():
    # A student that is a far-off, scaled, wider copy of the teacher still
    # gets a positive loss when the structure differs, and the reference
    # agrees on a correlated pair.
    teacher = random_features([6, 5], 3)
    student = np.concatenate([teacher, random_features([6, 3], 4)], axis=1)
    for name in NAMES:
        function, _, reference = FUNCTIONS[name]
        values = function(teacher, student).numpy()
        np.testing.assert_allclose(values, reference(teacher, student), atol=1e-5)
        assert values.mean() > 0


# --- Zero and invariances -----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_zero_when_student_equals_teacher(name):
    function = FUNCTIONS[name][0]
    features = random_features([5, 6], 5)
    np.testing.assert_allclose(function(features, features), np.zeros(5), atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_invariant_to_scale(name):
    # RKD distance and angle normalize distances; SP normalizes Gram rows;
    # PKT uses cosines.
    function = FUNCTIONS[name][0]
    teacher = random_features([5, 6], 6)
    student = random_features([5, 4], 7)
    base = function(teacher, student).numpy()
    np.testing.assert_allclose(function(teacher * 3.0, student), base, atol=1e-5)
    np.testing.assert_allclose(function(teacher, student * 0.2), base, atol=1e-5)


@pytest.mark.parametrize("name", ["rkd_distance", "rkd_angle"])
def test_rkd_invariant_to_translation(name):
    function = FUNCTIONS[name][0]
    teacher = random_features([5, 6], 8)
    student = random_features([5, 4], 9)
    base = function(teacher, student).numpy()
    shift = random_features([1, 4], 10) * 5.0
    np.testing.assert_allclose(function(teacher, student + shift), base, atol=1e-5)
    np.testing.assert_allclose(function(teacher - 2.0, student), base, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_invariant_to_permuting_feature_channels(name):
    function = FUNCTIONS[name][0]
    teacher = random_features([5, 6], 11)
    student = random_features([5, 4], 12)
    base = function(teacher, student).numpy()
    permutation = np.random.default_rng(13).permutation(6)
    np.testing.assert_allclose(
        function(teacher[:, permutation], student[:, ::-1]), base, atol=reordering_atol(name)
    )


@pytest.mark.parametrize("name", NAMES)
def test_permuting_the_batch_permutes_the_rows(name):
    function = FUNCTIONS[name][0]
    teacher = random_features([5, 6], 14)
    student = random_features([5, 4], 15)
    order = np.array([3, 0, 4, 1, 2])
    np.testing.assert_allclose(
        function(teacher[order], student[order]),
        function(teacher, student).numpy()[order],
        atol=reordering_atol(name),
    )


def test_rkd_angle_sees_angles_not_distances():
    # Stretching one axis changes angles; a uniform scale does not.
    teacher = random_features([5, 3], 16)
    stretched = teacher * np.array([[1.0, 1.0, 4.0]], np.float32)
    assert float(tf.reduce_mean(rkd_angle(teacher, stretched))) > 1e-3


def test_single_example_batch_gives_zero():
    # Relations need two examples; one gives 0, not NaN.
    teacher = random_features([1, 4], 17)
    student = random_features([1, 3], 18)
    for name in NAMES:
        values = FUNCTIONS[name][0](teacher, student).numpy()
        np.testing.assert_array_equal(values, [0.0])


def test_duplicate_examples_stay_finite():
    teacher = np.repeat(random_features([1, 4], 19), 3, axis=0)
    student = random_features([3, 4], 20)
    for name in NAMES:
        function = FUNCTIONS[name][0]
        student_variable = tf.Variable(student)
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(function(teacher, student_variable))
        gradient = tape.gradient(value, student_variable).numpy()
        assert np.isfinite(value.numpy())
        assert np.all(np.isfinite(gradient))


# --- Compiled == eager; gradients --------------------------------------------


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_compiled_equals_eager(name, jit_compile):
    function = FUNCTIONS[name][0]
    teacher = random_features([4, 2, 3], 21)
    student = random_features([4, 5], 22)
    compiled = tf.function(function, jit_compile=jit_compile)(teacher, student)
    np.testing.assert_allclose(compiled, function(teacher, student), atol=reordering_atol(name))


def test_unknown_batch_size_in_graph():
    spec = tf.TensorSpec([None, 4], tf.float32)
    teacher = random_features([5, 4], 23)
    student = random_features([5, 4], 24)
    for name in NAMES:
        function = FUNCTIONS[name][0]
        traced = tf.function(function, input_signature=[spec, spec])
        np.testing.assert_allclose(
            traced(teacher, student), function(teacher, student), atol=reordering_atol(name)
        )


@pytest.mark.parametrize("name", NAMES)
def test_student_gradients_finite_and_nonzero(name):
    function = FUNCTIONS[name][0]
    teacher = random_features([5, 6], 25)
    student = tf.Variable(random_features([5, 4], 26))
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(function(tf.stop_gradient(teacher), student))
    gradient = tape.gradient(value, student).numpy()
    assert np.all(np.isfinite(gradient))
    assert np.abs(gradient).max() > 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_gradient_is_zero_at_the_optimum(name):
    function = FUNCTIONS[name][0]
    features = random_features([4, 3], 27)
    student = tf.Variable(features)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(function(features, student))
    gradient = tape.gradient(value, student).numpy()
    np.testing.assert_allclose(gradient, 0.0, atol=1e-5)


# --- Classes: serialization and errors ---------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_serialization_round_trip(name):
    _, cls, _ = FUNCTIONS[name]
    loss = cls(teacher_layer_name="embedding", student_layer_name="features")
    assert loss.get_config() == {
        "teacher_layer_name": "embedding",
        "student_layer_name": "features",
    }
    assert not loss.needs_adapter
    teacher = random_features([4, 5], 28)
    student = random_features([4, 3], 29)
    expected = loss(teacher, student).numpy()

    config = losses.serialize(loss)
    assert config == {
        "name": name,
        "teacher_layer_name": "embedding",
        "student_layer_name": "features",
    }
    restored = losses.deserialize(config)
    assert type(restored) is cls
    assert restored.get_config() == loss.get_config()
    np.testing.assert_allclose(restored(teacher, student), expected, rtol=1e-6)

    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is cls
    assert restored.get_config() == loss.get_config()
    np.testing.assert_allclose(restored(teacher, student), expected, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_validate_outputs(name):
    loss = FUNCTIONS[name][1]()
    # Widths may differ.
    loss.validate_outputs(symbolic((5,), batch_size=8), symbolic((2, 2), batch_size=8))
    loss.validate_outputs(tf.zeros([3, 5]), tf.zeros([3, 7]))
    with pytest.raises(
        ValueError,
        match=r"needs the same batch for teacher and student. Received: "
        r"teacher \(8, 5\) and student \(4, 5\)",
    ):
        loss.validate_outputs(symbolic((5,), batch_size=8), symbolic((5,), batch_size=4))


@pytest.mark.parametrize("name", NAMES)
def test_scalar_features_are_rejected(name):
    with pytest.raises(ValueError, match="need features with a batch axis"):
        FUNCTIONS[name][0](tf.constant(1.0), tf.constant(2.0))


@pytest.mark.parametrize("name", NAMES)
def test_constructor_rejects_unknown_arguments(name):
    with pytest.raises(TypeError, match="temperature"):
        FUNCTIONS[name][1](temperature=2.0)
    with pytest.raises(ValueError, match=rf"Invalid arguments for distillation loss '{name}'"):
        losses.get({"name": name, "temperature": 2.0})
