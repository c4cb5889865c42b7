"""Tests of the soft-label losses (Hinton's KD, reverse KL, JSD)."""

import math
import re

import numpy as np
import numpy_reference as ref
import pytest

import tf_distill
from tf_distill import losses
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.losses import LogitsDistillation
from tf_distill.losses import jensen_shannon
from tf_distill.losses import reverse_kl
from tf_distill.losses import soft_label_kl
from tf_distill.losses import standardize_logits


def random_logits(shape, seed, scale=3.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


@keras.saving.register_keras_serializable(package="tests")
def total_variation(teacher_probs, student_probs):
    """A user divergence on probabilities: ½ Σ |p − q| per example."""
    return 0.5 * tf.reduce_sum(tf.abs(teacher_probs - student_probs), axis=-1)


# --- Hand-checked values ----------------------------------------------------


def test_soft_label_kl_hand_checked_value():
    # p_t = [1/4, 3/4], p_s = [1/2, 1/2] at T = 1.
    teacher = tf.constant([[0.0, math.log(3.0)]])
    student = tf.constant([[0.0, 0.0]])
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    np.testing.assert_allclose(soft_label_kl(teacher, student), [expected], atol=1e-6)
    # Reverse: KL(p_s ‖ p_t).
    expected_reverse = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    np.testing.assert_allclose(reverse_kl(teacher, student), [expected_reverse], atol=1e-6)
    # JSD: m = [3/8, 5/8].
    expected_jsd = 0.5 * (0.25 * math.log(0.25 / 0.375) + 0.75 * math.log(0.75 / 0.625)) + 0.5 * (
        0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.625)
    )
    np.testing.assert_allclose(jensen_shannon(teacher, student), [expected_jsd], atol=1e-6)


def test_temperature_squared_scaling_hand_checked():
    # At T = 2 the logits [0, 2 ln 3] give p_t = [1/4, 3/4] again, and the
    # loss is 4 times the KL.
    teacher = tf.constant([[0.0, 2.0 * math.log(3.0)]])
    student = tf.constant([[0.0, 0.0]])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    np.testing.assert_allclose(
        soft_label_kl(teacher, student, temperature=2.0), [4.0 * kl], atol=1e-6
    )


@pytest.mark.parametrize("temperature", [0.5, 2.0, 5.0])
def test_temperature_squared_scaling(temperature):
    teacher = random_logits([4, 6], 0)
    student = random_logits([4, 6], 1)
    scaled = soft_label_kl(teacher / temperature, student / temperature)
    np.testing.assert_allclose(
        soft_label_kl(teacher, student, temperature=temperature),
        temperature**2 * scaled.numpy(),
        rtol=1e-5,
    )


# --- NumPy references ---------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_soft_label_kl_matches_numpy(temperature):
    teacher = random_logits([5, 7], 2)
    student = random_logits([5, 7], 3)
    np.testing.assert_allclose(
        soft_label_kl(teacher, student, temperature=temperature),
        ref.kd(teacher, student, temperature),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_reverse_kl_matches_numpy(temperature):
    teacher = random_logits([5, 7], 4)
    student = random_logits([5, 7], 5)
    np.testing.assert_allclose(
        reverse_kl(teacher, student, temperature=temperature),
        ref.reverse_kd(teacher, student, temperature),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("temperature,beta", [(1.0, 0.5), (2.0, 0.1), (4.0, 0.9)])
def test_jensen_shannon_matches_numpy(temperature, beta):
    teacher = random_logits([5, 7], 6)
    student = random_logits([5, 7], 7)
    np.testing.assert_allclose(
        jensen_shannon(teacher, student, temperature=temperature, beta=beta),
        ref.jsd(teacher, student, temperature, beta),
        rtol=1e-5,
        atol=1e-5,
    )


def test_standardize_logits_matches_numpy():
    # The authors' form: torch.std, the sample standard deviation (ddof = 1).
    logits = random_logits([3, 4, 9], 8)
    standardized = standardize_logits(logits).numpy()
    np.testing.assert_allclose(standardized, ref.standardize(logits, ddof=1), atol=1e-5)
    np.testing.assert_allclose(standardized.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(standardized.std(axis=-1, ddof=1), 1.0, atol=1e-4)


def test_standardize_logits_population_form_matches_numpy():
    logits = random_logits([3, 4, 9], 8)
    standardized = standardize_logits(logits, ddof=0).numpy()
    np.testing.assert_allclose(standardized, ref.standardize(logits, ddof=0), atol=1e-5)
    np.testing.assert_allclose(standardized.std(axis=-1), 1.0, atol=1e-4)


def test_standardize_logits_two_classes_by_hand():
    # Two classes: ±sqrt(1/2) with the authors' sample std, ±1 with the
    # population one.
    logits = np.array([[3.0, 1.0], [-2.0, 5.0]], np.float32)
    half = math.sqrt(0.5)
    np.testing.assert_allclose(
        standardize_logits(logits), [[half, -half], [-half, half]], atol=1e-6
    )
    np.testing.assert_allclose(
        standardize_logits(logits, ddof=0), [[1.0, -1.0], [-1.0, 1.0]], atol=1e-6
    )
    np.testing.assert_allclose(standardize_logits(logits), ref.standardize(logits), atol=1e-6)


def test_standardize_logits_one_class_is_zero():
    np.testing.assert_array_equal(standardize_logits(np.array([[4.0]], np.float32)), [[0.0]])
    np.testing.assert_array_equal(
        standardize_logits(np.array([[4.0]], np.float32), ddof=0), [[0.0]]
    )


@pytest.mark.parametrize("ddof", [2, -1, True, 0.5])
def test_standardize_logits_rejects_ddof(ddof):
    with pytest.raises(ValueError, match=rf"`ddof` must be 0 or 1. Received: ddof={ddof!r}"):
        standardize_logits(np.zeros([1, 3], np.float32), ddof=ddof)


@pytest.mark.parametrize("num_classes", [2, 10])
@pytest.mark.parametrize("function", ["kd", "loss_class"])
def test_standardized_kd_follows_the_authors_and_keeps_the_population_form(
    num_classes, function
):
    teacher = random_logits([6, num_classes], 41)
    student = random_logits([6, num_classes], 42)
    for form, ddof in ((True, 1), ("sample", 1), ("population", 0)):
        if function == "kd":
            values = soft_label_kl(teacher, student, temperature=2.0, standardize=form)
        else:
            values = LogitsDistillation(temperature=2.0, standardize=form)(teacher, student)
        np.testing.assert_allclose(
            values, ref.kd(teacher, student, 2.0, standardized=True, ddof=ddof), atol=1e-5
        )
    authors = soft_label_kl(teacher, student, temperature=2.0, standardize=True)
    population = soft_label_kl(teacher, student, temperature=2.0, standardize="population")
    assert np.abs(np.asarray(authors) - np.asarray(population)).max() > 1e-3


def test_standardized_kd_matches_numpy_and_ignores_logit_range():
    teacher = random_logits([4, 6], 9)
    student = random_logits([4, 6], 10)
    values = soft_label_kl(teacher, student, temperature=2.0, standardize=True)
    np.testing.assert_allclose(
        values, ref.kd(teacher, student, 2.0, standardized=True, ddof=1), atol=1e-5
    )
    # A student with the teacher's logits shifted and rescaled per row matches
    # it exactly once standardized.
    affine = teacher * np.array([[3.0], [0.5], [1.0], [7.0]], np.float32) - 2.0
    np.testing.assert_allclose(
        soft_label_kl(teacher, affine, temperature=2.0, standardize=True),
        np.zeros(4),
        atol=1e-5,
    )
    assert float(soft_label_kl(teacher, affine, temperature=2.0)[0]) > 0.1


@pytest.mark.parametrize("function", [soft_label_kl, reverse_kl, jensen_shannon])
def test_zero_when_student_equals_teacher(function):
    logits = random_logits([3, 5], 11)
    np.testing.assert_allclose(function(logits, logits, temperature=3.0), 0.0, atol=1e-6)
    # And positive otherwise.
    other = random_logits([3, 5], 12)
    assert np.all(function(logits, other, temperature=3.0).numpy() > 0)


# --- Numerics -----------------------------------------------------------------


def test_extreme_logits_stay_finite():
    teacher = tf.constant([[1e4, -1e4], [-1e4, 1e4]])
    student = tf.constant([[-1e4, 1e4], [-1e4, 1e4]])
    # Example 0: p_t = [1, 0], log p_s = [-2e4, 0], so KL = 2e4. Example 1
    # agrees exactly.
    np.testing.assert_allclose(soft_label_kl(teacher, student), [2e4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(reverse_kl(teacher, student), [2e4, 0.0], rtol=1e-6)
    # Disjoint supports: JSD is log 2.
    np.testing.assert_allclose(jensen_shannon(teacher, student), [math.log(2.0), 0.0], atol=1e-6)
    for function in (soft_label_kl, reverse_kl, jensen_shannon):
        with tf.GradientTape() as tape:
            tape.watch(student)
            value = tf.reduce_sum(function(teacher, student, temperature=2.0))
        gradient = tape.gradient(value, student)
        assert np.all(np.isfinite(value.numpy()))
        assert np.all(np.isfinite(gradient.numpy()))


def test_float16_inputs_compute_in_float32():
    teacher16 = tf.constant(random_logits([3, 5], 13) * 100, tf.float16)
    student16 = tf.constant(random_logits([3, 5], 14) * 100, tf.float16)
    values = soft_label_kl(teacher16, student16, temperature=2.0)
    assert values.dtype == tf.float32
    # The same numbers given as float32 give the same result: nothing was
    # computed in half precision.
    expected = soft_label_kl(
        tf.cast(teacher16, tf.float32), tf.cast(student16, tf.float32), temperature=2.0
    )
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    np.testing.assert_allclose(
        values,
        ref.kd(teacher16.numpy().astype(np.float64), student16.numpy(), 2.0),
        rtol=1e-4,
    )
    # Large float16 logits: their difference, 1.2e5, overflows float16.
    big = tf.constant([[60000.0, -60000.0]], tf.float16)
    value = LogitsDistillation(temperature=1.0)(big, -big)
    assert value.dtype == tf.float32
    np.testing.assert_allclose(value, [120000.0], rtol=1e-5)


@pytest.mark.parametrize("function", [soft_label_kl, reverse_kl, jensen_shannon])
def test_rank3_logits_with_padding_mask(function):
    teacher = random_logits([2, 4, 6], 15)
    student = random_logits([2, 4, 6], 16)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], np.float32)
    values = function(teacher, student, temperature=2.0, mask=mask)
    per_position = {
        soft_label_kl: lambda t, s: ref.kd(t, s, 2.0),
        reverse_kl: lambda t, s: ref.reverse_kd(t, s, 2.0),
        jensen_shannon: lambda t, s: ref.jsd(t, s, 2.0),
    }[function]
    expected = [
        np.mean(per_position(teacher[0, :2], student[0, :2])),
        np.mean(per_position(teacher[1, :3], student[1, :3])),
    ]
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    # Padding does not count, whatever it holds.
    noisy = student.copy()
    noisy[0, 2:] = 1e3
    noisy[1, 3] = -1e3
    np.testing.assert_allclose(
        function(teacher, noisy, temperature=2.0, mask=mask), values, rtol=1e-6
    )
    # Without a mask, padding counts.
    assert not np.allclose(function(teacher, noisy, temperature=2.0), values)


def test_boolean_mask_and_fully_masked_example():
    teacher = random_logits([2, 3, 4], 17)
    student = random_logits([2, 3, 4], 18)
    mask = tf.constant([[True, False, True], [False, False, False]])
    values = soft_label_kl(teacher, student, mask=mask).numpy()
    expected = ref.kd(teacher[0, [0, 2]], student[0, [0, 2]], 1.0).mean()
    np.testing.assert_allclose(values, [expected, 0.0], rtol=1e-5)


# --- Compiled == eager; gradients --------------------------------------------


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("function", [soft_label_kl, reverse_kl, jensen_shannon])
def test_compiled_equals_eager(function, jit_compile):
    teacher = random_logits([3, 2, 5], 19)
    student = random_logits([3, 2, 5], 20)
    mask = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
    eager = function(teacher, student, temperature=3.0, mask=mask)
    compiled = tf.function(
        lambda t, s, m: function(t, s, temperature=3.0, mask=m),
        jit_compile=jit_compile,
    )(teacher, student, mask)
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("function", [soft_label_kl, reverse_kl, jensen_shannon])
def test_student_gradients_finite_and_nonzero(function):
    teacher = tf.constant(random_logits([3, 5], 21))
    student = tf.Variable(random_logits([3, 5], 22))
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(function(tf.stop_gradient(teacher), student, 2.0))
    gradient = tape.gradient(value, student).numpy()
    assert np.all(np.isfinite(gradient))
    assert np.abs(gradient).max() > 1e-4
    # Logits shifted per row give the same softmax: the gradient has no
    # component along the all-ones direction.
    np.testing.assert_allclose(gradient.sum(axis=-1), 0.0, atol=1e-6)


def test_gradient_matches_hinton_closed_form():
    # d/ds T²·KL(p_t ‖ p_s) = T · (p_s − p_t) (Hinton et al. 2015, Sec. 2.1).
    temperature = 3.0
    teacher = random_logits([2, 4], 23)
    student = tf.Variable(random_logits([2, 4], 24))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(soft_label_kl(teacher, student, temperature))
    gradient = tape.gradient(value, student)
    expected = temperature * (
        ref.softmax(student.numpy(), temperature) - ref.softmax(teacher, temperature)
    )
    np.testing.assert_allclose(gradient, expected, atol=1e-5)


# --- LogitsDistillation -----------------------------------------------------


@pytest.mark.parametrize(
    "loss,reference",
    [
        ("kl_divergence", lambda t, s: ref.kd(t, s, 2.0)),
        ("kl", lambda t, s: ref.kd(t, s, 2.0)),
        ("categorical_crossentropy", lambda t, s: ref.kd(t, s, 2.0)),
        ("reverse_kl", lambda t, s: ref.reverse_kd(t, s, 2.0)),
        ("jensen_shannon", lambda t, s: ref.jsd(t, s, 2.0, 0.3)),
        ("JSD", lambda t, s: ref.jsd(t, s, 2.0, 0.3)),
    ],
)
def test_logits_distillation_named_losses(loss, reference):
    teacher = random_logits([4, 6], 25)
    student = random_logits([4, 6], 26)
    distillation = LogitsDistillation(temperature=2.0, loss=loss, beta=0.3)
    np.testing.assert_allclose(
        distillation(teacher, student), reference(teacher, student), rtol=1e-5
    )


@pytest.mark.parametrize("loss", [keras.losses.KLDivergence(), keras.losses.kl_divergence])
def test_logits_distillation_keras_kl_is_softened_and_scaled(loss):
    # keras.io's example passes probabilities to KLDivergence and forgets T²;
    # here the object means the same as "kl_divergence".
    teacher = random_logits([4, 6], 27)
    student = random_logits([4, 6], 28)
    distillation = LogitsDistillation(temperature=4.0, loss=loss)
    assert distillation.divergence == "kl_divergence"
    np.testing.assert_allclose(
        distillation(teacher, student), ref.kd(teacher, student, 4.0), rtol=1e-5
    )


def test_logits_distillation_callable_sees_probabilities_times_t_squared():
    teacher = random_logits([4, 6], 29)
    student = random_logits([4, 6], 30)
    distillation = LogitsDistillation(temperature=2.0, loss=total_variation)
    p_t = ref.softmax(teacher, 2.0)
    p_s = ref.softmax(student, 2.0)
    expected = 4.0 * 0.5 * np.abs(p_t - p_s).sum(axis=-1)
    np.testing.assert_allclose(distillation(teacher, student), expected, rtol=1e-5)


def test_logits_distillation_keras_loss_object_gives_per_example_values():
    teacher = random_logits([4, 6], 31)
    student = random_logits([4, 6], 32)
    distillation = LogitsDistillation(temperature=2.0, loss=keras.losses.MeanSquaredError())
    p_t = ref.softmax(teacher, 2.0)
    p_s = ref.softmax(student, 2.0)
    expected = 4.0 * ((p_t - p_s) ** 2).mean(axis=-1)
    values = distillation(teacher, student)
    assert values.shape == (4,)
    np.testing.assert_allclose(values, expected, rtol=1e-5)


def test_logits_distillation_mask_for_sequences():
    teacher = random_logits([2, 3, 5], 33)
    student = random_logits([2, 3, 5], 34)
    mask = np.array([[1, 0, 0], [1, 1, 1]], np.float32)
    distillation = LogitsDistillation(temperature=1.5)
    np.testing.assert_allclose(
        distillation(teacher, student, mask=mask),
        ref.kd(teacher, student, 1.5, mask=mask),
        rtol=1e-5,
    )
    # compute_loss (the keras.distillation API) is the batch mean.
    np.testing.assert_allclose(
        distillation.compute_loss(teacher, student),
        ref.kd(teacher, student, 1.5).mean(),
        rtol=1e-5,
    )


def test_logits_distillation_docstring_example():
    teacher = tf.constant([[2.0, 1.0, 0.1]])
    assert float(LogitsDistillation(temperature=4.0)(teacher, teacher)[0]) == 0.0


@pytest.mark.parametrize(
    "loss",
    [
        LogitsDistillation(),
        LogitsDistillation(temperature=2.0, loss="jensen_shannon", beta=0.2),
        LogitsDistillation(temperature=5.0, loss="reverse_kl", standardize=True),
        LogitsDistillation(temperature=2.0, standardize="population"),
        LogitsDistillation(temperature=2.0, loss=keras.losses.KLDivergence()),
        LogitsDistillation(temperature=2.0, loss=keras.losses.MeanSquaredError()),
        LogitsDistillation(temperature=2.0, loss=total_variation),
    ],
    ids=["default", "jsd", "reverse", "population", "keras_kl", "keras_mse", "callable"],
)
def test_logits_distillation_serialization_round_trip(loss):
    teacher = random_logits([3, 6], 35)
    student = random_logits([3, 6], 36)
    expected = loss(teacher, student).numpy()

    config = losses.serialize(loss)
    assert config["name"] == "kd"
    restored = losses.deserialize(config)
    assert isinstance(restored, LogitsDistillation)
    assert restored.get_config() == loss.get_config()
    np.testing.assert_allclose(restored(teacher, student), expected, rtol=1e-6)

    keras_config = keras.saving.serialize_keras_object(loss)
    restored = keras.saving.deserialize_keras_object(keras_config)
    assert isinstance(restored, LogitsDistillation)
    np.testing.assert_allclose(restored(teacher, student), expected, rtol=1e-6)


def test_logits_distillation_config_values():
    loss = LogitsDistillation(temperature=4, loss="JS", beta=0.25, standardize=1)
    assert loss.get_config() == {
        "temperature": 4.0,
        "loss": "JS",
        "beta": 0.25,
        "standardize": True,
    }
    assert loss.divergence == "jensen_shannon"
    assert tf_distill.LogitsDistillation is LogitsDistillation


# --- Errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "temperature,message",
    [
        (0, r"`temperature` must be > 0. Received: temperature=0"),
        (-1.5, r"`temperature` must be > 0. Received: temperature=-1.5"),
        ("4", r"`temperature` must be a number > 0. Received: temperature='4'"),
        (True, r"`temperature` must be a number > 0. Received: temperature=True"),
    ],
)
def test_logits_distillation_rejects_bad_temperature(temperature, message):
    with pytest.raises(ValueError, match=message):
        LogitsDistillation(temperature=temperature)


def test_logits_distillation_rejects_bad_loss():
    with pytest.raises(ValueError, match=r"Expected one of \[.*'kl_divergence'.*\]"):
        LogitsDistillation(loss="hinge_thing")
    with pytest.raises(ValueError, match=r"Received: loss='hinge_thing'"):
        LogitsDistillation(loss="hinge_thing")
    with pytest.raises(ValueError, match=r"Expected a name, .*Received: loss=5"):
        LogitsDistillation(loss=5)


@pytest.mark.parametrize("standardize", ["zscore", 2, None, 1.0])
def test_logits_distillation_rejects_bad_standardize(standardize):
    message = (
        r"Invalid value for argument `standardize`. Expected one of "
        r"\[False, True, 'sample', 'population'\]. "
        rf"Received: standardize={re.escape(repr(standardize))}"
    )
    with pytest.raises(ValueError, match=message):
        LogitsDistillation(standardize=standardize)


def test_standardize_config_forms_and_an_old_config():
    # A config saved before the sample form: `standardize: true` loads, and
    # now means the authors' form; "population" gives the old numbers.
    teacher = random_logits([4, 10], 51)
    student = random_logits([4, 10], 52)
    old = losses.get({"name": "kd", "temperature": 2.0, "standardize": True})
    np.testing.assert_allclose(
        old(teacher, student), ref.kd(teacher, student, 2.0, standardized=True, ddof=1),
        atol=1e-5,
    )
    assert LogitsDistillation(standardize="sample").get_config()["standardize"] is True
    assert LogitsDistillation(standardize="Population").get_config()["standardize"] == "population"
    population = losses.get({"name": "kd", "temperature": 2.0, "standardize": "population"})
    np.testing.assert_allclose(
        population(teacher, student),
        ref.kd(teacher, student, 2.0, standardized=True, ddof=0),
        atol=1e-5,
    )


@pytest.mark.parametrize("beta", [0.0, 1.0, 1.5])
def test_bad_beta_for_jensen_shannon(beta):
    message = rf"`beta` must be in \(0, 1\). Received: beta={beta}"
    with pytest.raises(ValueError, match=message):
        LogitsDistillation(loss="jensen_shannon", beta=beta)
    with pytest.raises(ValueError, match=message):
        jensen_shannon(tf.zeros([1, 2]), tf.zeros([1, 2]), beta=beta)


def test_beta_must_be_a_number():
    with pytest.raises(
        ValueError, match=r"`beta` must be a number in \(0, 1\). Received: beta='x'"
    ):
        LogitsDistillation(beta="x")


def test_validate_outputs_rejects_different_shapes():
    loss = LogitsDistillation()
    loss.validate_outputs(tf.zeros([2, 5]), tf.zeros([2, 5]))
    with pytest.raises(
        ValueError,
        match=r"same shape. Received: teacher logits of shape \(2, 5\) and "
        r"student logits of shape \(2, 6\)",
    ):
        loss.validate_outputs(tf.zeros([2, 5]), tf.zeros([2, 6]))


def test_scalar_values_are_rejected():
    with pytest.raises(ValueError, match="must keep the batch axis"):
        losses.reduce_per_example(tf.constant(1.0))
