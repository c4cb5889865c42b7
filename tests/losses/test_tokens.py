"""Tests of the token-level divergences (GKD's JSD(β), DistiLLM's skew KLs)."""

import math

import numpy as np
import numpy_reference as ref
import pytest

import tf_distill
from tf_distill import losses
from tf_distill.backend import tf
from tf_distill.losses import TOKEN_DIVERGENCES
from tf_distill.losses import TokenDistillation
from tf_distill.losses import generalized_jsd
from tf_distill.losses import skew_kl
from tf_distill.losses import skew_reverse_kl
from tf_distill.losses import token_divergence


def random_logits(shape, seed, scale=3.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


# --- The papers' formulas in float64 NumPy -----------------------------------


def np_divergence(name, teacher, student, temperature=1.0, beta=0.5, alpha=0.1, mask=None):
    """Per-example values from the definitions, probabilities formed directly."""
    p = ref.softmax(teacher, temperature)
    q = ref.softmax(student, temperature)
    if name == "forward_kl":
        values = ref.kl(p, q)
    elif name == "reverse_kl":
        values = ref.kl(q, p)
    elif name == "generalized_jsd":
        if beta == 0.0:
            values = ref.kl(p, q)
        elif beta == 1.0:
            values = ref.kl(q, p)
        else:
            m = beta * p + (1 - beta) * q
            values = beta * ref.kl(p, m) + (1 - beta) * ref.kl(q, m)
    elif name == "skew_kl":
        values = ref.kl(p, alpha * p + (1 - alpha) * q)
    elif name == "skew_reverse_kl":
        values = ref.kl(q, (1 - alpha) * p + alpha * q)
    else:
        raise ValueError(name)
    return ref.masked_mean(temperature**2 * values, mask)


MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], np.float32)


# --- Values -------------------------------------------------------------------


def test_skew_kl_hand_checked_value():
    # p = [1/4, 3/4], q = [1/2, 1/2], α = 0.5: m = [3/8, 5/8].
    teacher = tf.constant([[0.0, math.log(3.0)]])
    student = tf.constant([[0.0, 0.0]])
    expected = 0.25 * math.log(0.25 / 0.375) + 0.75 * math.log(0.75 / 0.625)
    np.testing.assert_allclose(skew_kl(teacher, student, alpha=0.5), [expected], atol=1e-6)
    # Reverse: KL(q ‖ ½p + ½q), the same mixture.
    expected_reverse = 0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.625)
    np.testing.assert_allclose(
        skew_reverse_kl(teacher, student, alpha=0.5), [expected_reverse], atol=1e-6
    )


@pytest.mark.parametrize(
    "name,beta,alpha",
    [
        ("forward_kl", 0.5, 0.1),
        ("reverse_kl", 0.5, 0.1),
        ("generalized_jsd", 0.1, 0.1),
        ("generalized_jsd", 0.5, 0.1),
        ("generalized_jsd", 0.9, 0.1),
        ("skew_kl", 0.5, 0.1),
        ("skew_kl", 0.5, 0.7),
        ("skew_reverse_kl", 0.5, 0.1),
        ("skew_reverse_kl", 0.5, 0.7),
    ],
)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_matches_numpy_with_mask(name, beta, alpha, temperature):
    teacher = random_logits([3, 5, 11], 1)
    student = random_logits([3, 5, 11], 2)
    values = token_divergence(
        teacher, student, name, temperature=temperature, beta=beta, alpha=alpha, mask=MASK
    )
    expected = np_divergence(name, teacher, student, temperature, beta, alpha, MASK)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    # The all-padding row gives exactly 0, the others a positive divergence.
    assert float(values[2]) == 0.0
    assert np.all(values.numpy()[:2] > 0)
    # Padding does not count, whatever it holds.
    noisy = student.copy()
    noisy[0, 3:] = 1e3
    noisy[2] = -1e3
    np.testing.assert_allclose(
        token_divergence(
            teacher, noisy, name, temperature=temperature, beta=beta, alpha=alpha, mask=MASK
        ),
        values,
        rtol=1e-6,
    )


@pytest.mark.parametrize("name", TOKEN_DIVERGENCES)
def test_rank2_logits(name):
    teacher = random_logits([4, 7], 3)
    student = random_logits([4, 7], 4)
    np.testing.assert_allclose(
        token_divergence(teacher, student, name, temperature=2.0, beta=0.3, alpha=0.2),
        np_divergence(name, teacher, student, 2.0, beta=0.3, alpha=0.2),
        rtol=1e-5,
    )


@pytest.mark.parametrize("name", TOKEN_DIVERGENCES)
def test_zero_when_student_equals_teacher(name):
    logits = random_logits([2, 3, 9], 5)
    np.testing.assert_allclose(token_divergence(logits, logits, name), 0.0, atol=1e-6)


# --- Limits ---------------------------------------------------------------------


def test_generalized_jsd_limits_are_the_kls():
    teacher = random_logits([2, 4, 8], 6)
    student = random_logits([2, 4, 8], 7)
    forward = np_divergence("forward_kl", teacher, student, 2.0, mask=MASK[:2, :4])
    reverse = np_divergence("reverse_kl", teacher, student, 2.0, mask=MASK[:2, :4])
    np.testing.assert_allclose(
        generalized_jsd(teacher, student, 2.0, beta=0.0, mask=MASK[:2, :4]), forward, rtol=1e-5
    )
    np.testing.assert_allclose(
        generalized_jsd(teacher, student, 2.0, beta=1.0, mask=MASK[:2, :4]), reverse, rtol=1e-5
    )
    # Near the ends JSD(β) behaves as β·KL(p ‖ q) and (1 − β)·KL(q ‖ p): the
    # endpoints continue the interpolation, up to its scale.
    small = 1e-3
    np.testing.assert_allclose(
        generalized_jsd(teacher, student, 2.0, beta=small, mask=MASK[:2, :4]) / small,
        forward,
        rtol=2e-2,
    )
    np.testing.assert_allclose(
        generalized_jsd(teacher, student, 2.0, beta=1.0 - small, mask=MASK[:2, :4]) / small,
        reverse,
        rtol=2e-2,
    )


def test_skew_limits():
    teacher = random_logits([2, 4, 8], 8)
    student = random_logits([2, 4, 8], 9)
    # α = 0 is the unskewed divergence, α = 1 compares a distribution with itself.
    np.testing.assert_allclose(
        skew_kl(teacher, student, alpha=0.0),
        np_divergence("forward_kl", teacher, student),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        skew_reverse_kl(teacher, student, alpha=0.0),
        np_divergence("reverse_kl", teacher, student),
        rtol=1e-5,
    )
    np.testing.assert_allclose(skew_kl(teacher, student, alpha=1.0), 0.0, atol=1e-6)
    np.testing.assert_allclose(skew_reverse_kl(teacher, student, alpha=1.0), 0.0, atol=1e-6)
    # The skew bounds the divergence by log(1/α) (DistiLLM, Ko et al. 2024).
    far = 20.0 * random_logits([2, 4, 8], 10)
    for function in (skew_kl, skew_reverse_kl):
        values = function(teacher * 20.0, far, alpha=0.1).numpy()
        assert np.all(values <= math.log(10.0) + 1e-5)


# --- Stability ------------------------------------------------------------------


@pytest.mark.parametrize("name", TOKEN_DIVERGENCES)
def test_large_vocabulary_and_extreme_logits_stay_finite(name):
    vocabulary = 50_257
    rng = np.random.default_rng(11)
    teacher = (rng.choice([-1e4, 1e4], size=[2, 3, vocabulary])).astype(np.float32)
    student = (rng.choice([-1e4, 1e4], size=[2, 3, vocabulary])).astype(np.float32)
    mask = np.array([[1, 1, 0], [0, 0, 0]], np.float32)
    teacher = tf.constant(teacher)
    student = tf.Variable(student)
    with tf.GradientTape() as tape:
        values = token_divergence(teacher, student, name, beta=0.5, alpha=0.1, mask=mask)
        total = tf.reduce_sum(values)
    gradient = tape.gradient(total, student).numpy()
    assert np.all(np.isfinite(values.numpy()))
    assert np.all(np.isfinite(gradient))
    # The all-padding row: 0, and no gradient reaches it (nor the padding).
    assert float(values[1]) == 0.0
    assert np.all(gradient[1] == 0.0)
    assert np.all(gradient[0, 2] == 0.0)
    # Disagreeing peaked distributions give a large, finite divergence.
    assert float(values[0]) > 0


def test_extreme_logits_values():
    teacher = tf.constant([[[1e4, -1e4], [1e4, -1e4]]])
    student = tf.constant([[[-1e4, 1e4], [1e4, -1e4]]])
    # Position 0 disagrees: p = [1, 0], q = [0, 1] (to float precision).
    # skew KL: KL(p ‖ 0.1 p + 0.9 q) = log 10; JSD(½) of disjoint supports: log 2.
    np.testing.assert_allclose(skew_kl(teacher, student, alpha=0.1), [math.log(10.0) / 2], rtol=1e-5)
    np.testing.assert_allclose(
        skew_reverse_kl(teacher, student, alpha=0.1), [math.log(10.0) / 2], rtol=1e-5
    )
    np.testing.assert_allclose(
        generalized_jsd(teacher, student, beta=0.5), [math.log(2.0) / 2], rtol=1e-5
    )


# --- Compiled == eager, chunking, gradients --------------------------------------


@pytest.mark.parametrize("name", TOKEN_DIVERGENCES)
def test_compiled_equals_eager(name):
    teacher = random_logits([3, 5, 6], 12)
    student = random_logits([3, 5, 6], 13)
    eager = token_divergence(teacher, student, name, temperature=2.0, beta=0.3, mask=MASK)
    compiled = tf.function(
        lambda t, s, m: token_divergence(t, s, name, temperature=2.0, beta=0.3, mask=m),
        jit_compile=True,
    )(teacher, student, MASK)
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["generalized_jsd", "skew_reverse_kl"])
def test_chunked_equals_whole_in_value_and_gradient(name):
    teacher = tf.constant(random_logits([3, 5, 7], 14))
    student = tf.Variable(random_logits([3, 5, 7], 15))

    def value_and_gradient(chunk_size):
        with tf.GradientTape() as tape:
            values = token_divergence(
                teacher, student, name, mask=MASK, chunk_size=chunk_size
            )
            total = tf.reduce_sum(values)
        return values.numpy(), tape.gradient(total, student).numpy()

    whole_values, whole_gradient = value_and_gradient(None)
    chunked_values, chunked_gradient = value_and_gradient(2)
    np.testing.assert_allclose(chunked_values, whole_values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(chunked_gradient, whole_gradient, rtol=1e-5, atol=1e-7)
    assert chunked_values[2] == 0.0
    assert np.all(np.isfinite(chunked_gradient))
    # Compiled too.
    compiled = tf.function(
        lambda t, s: token_divergence(t, s, name, mask=MASK, chunk_size=2)
    )(teacher, student)
    np.testing.assert_allclose(compiled, whole_values, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", TOKEN_DIVERGENCES)
def test_student_gradient_finite_teacher_none(name):
    teacher = tf.Variable(random_logits([2, 3, 5], 16))
    student = tf.Variable(random_logits([2, 3, 5], 17))
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(
            TokenDistillation(name, temperature=2.0)(tf.stop_gradient(teacher), student)
        )
    teacher_gradient, student_gradient = tape.gradient(value, [teacher, student])
    assert teacher_gradient is None
    assert np.all(np.isfinite(student_gradient.numpy()))
    assert np.abs(student_gradient.numpy()).max() > 1e-4


# --- TokenDistillation ---------------------------------------------------------


@pytest.mark.parametrize("name", TOKEN_DIVERGENCES)
def test_token_distillation_matches_numpy(name):
    teacher = random_logits([3, 5, 6], 18)
    student = random_logits([3, 5, 6], 19)
    loss = TokenDistillation(name, temperature=1.5, beta=0.2, alpha=0.3)
    np.testing.assert_allclose(
        loss(teacher, student, mask=MASK),
        np_divergence(name, teacher, student, 1.5, 0.2, 0.3, MASK),
        rtol=1e-5,
        atol=1e-6,
    )


def test_token_distillation_serialization_round_trip():
    loss = TokenDistillation("skew_kl", temperature=2.0, alpha=0.25, chunk_size=8)
    config = losses.serialize(loss)
    assert config == {
        "name": "token_kd",
        "divergence": "skew_kl",
        "temperature": 2.0,
        "beta": 0.5,
        "alpha": 0.25,
        "chunk_size": 8,
    }
    again = losses.get(config)
    assert isinstance(again, TokenDistillation)
    assert again.get_config() == loss.get_config()
    assert tf_distill.TokenDistillation is TokenDistillation
    teacher = random_logits([2, 3, 4], 20)
    student = random_logits([2, 3, 4], 21)
    np.testing.assert_allclose(again(teacher, student), loss(teacher, student), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"divergence": "skew"}, "Invalid value for argument `divergence`. Expected one of"),
        ({"temperature": 0.0}, "`temperature` must be > 0. Received: temperature=0.0"),
        ({"beta": 1.5}, "`beta` must be in [0, 1]. Received: beta=1.5"),
        ({"alpha": -0.1}, "`alpha` must be in [0, 1]. Received: alpha=-0.1"),
        ({"chunk_size": 0}, "`chunk_size` must be an integer > 0 or None. Received: chunk_size=0"),
    ],
)
def test_token_distillation_errors(kwargs, message):
    with pytest.raises(ValueError) as error:
        TokenDistillation(**kwargs)
    assert message in str(error.value)


def test_token_distillation_refuses_other_vocabularies():
    loss = TokenDistillation()
    with pytest.raises(ValueError, match=r"same shape \(one vocabulary\).*\(2, 3, 5\).*\(2, 3, 6\)"):
        loss.validate_outputs(tf.zeros([2, 3, 5]), tf.zeros([2, 3, 6]))


def test_token_distillation_trains_a_distiller_with_padding():
    from tf_distill.backend import keras

    vocabulary, length = 12, 6

    def language_model(seed, scale):
        keras.utils.set_random_seed(seed)
        initializer = keras.initializers.RandomNormal(stddev=scale)
        return keras.Sequential(
            [
                keras.Input([length], dtype="int32"),
                keras.layers.Embedding(vocabulary, 8, embeddings_initializer=initializer),
                keras.layers.Dense(vocabulary, kernel_initializer=initializer),
            ]
        )

    teacher, student = language_model(0, 1.0), language_model(1, 0.1)
    tokens = np.random.default_rng(0).integers(0, vocabulary, size=[8, length])
    padding = np.ones([8, length], np.float32)
    padding[:, 4:] = 0.0
    padding[0] = 0.0
    distiller = tf_distill.Distiller(
        teacher, student, TokenDistillation("skew_kl", alpha=0.1), student_loss_weight=0.0
    )
    distiller.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    before = float(np.mean(skew_kl(teacher(tokens), student(tokens), mask=padding)))
    repeats = 30  # 30 steps in one epoch
    distiller.fit(
        np.tile(tokens, [repeats, 1]),
        np.tile(tokens, [repeats, 1]),
        sample_weight=np.tile(padding, [repeats, 1]),
        batch_size=8,
        shuffle=False,
        verbose=0,
    )
    after = float(np.mean(skew_kl(teacher(tokens), student(tokens), mask=padding)))
    assert np.isfinite(after)
    assert after < 0.5 * before
