"""Tests of the LM head applied in chunks (`tf_distill.losses.lm_head`)."""

import functools
import math

import numpy as np
import numpy_reference as ref
import pytest

from tf_distill import losses
from tf_distill.backend import tf
from tf_distill.losses import TOKEN_DIVERGENCES
from tf_distill.losses import ChunkedHeadDistillation
from tf_distill.losses import HeadOutputs
from tf_distill.losses import LinearHead
from tf_distill.losses import chunked_head_crossentropy
from tf_distill.losses import chunked_head_divergence
from tf_distill.losses import token_divergence

BATCH, TIME, TEACHER_HIDDEN, STUDENT_HIDDEN, VOCABULARY = 3, 7, 6, 4, 11
MASK = np.array([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]], np.float32)


def random(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


@pytest.fixture
def tensors():
    """Hidden states and heads: a tied (transposed) teacher, a biased, soft-capped student."""
    return {
        "teacher_hidden": random([BATCH, TIME, TEACHER_HIDDEN], 0),
        "teacher_embeddings": random([VOCABULARY, TEACHER_HIDDEN], 1),
        "student_hidden": random([BATCH, TIME, STUDENT_HIDDEN], 2),
        "student_kernel": random([STUDENT_HIDDEN, VOCABULARY], 3),
        "student_bias": random([VOCABULARY], 4),
    }


def outputs(values, soft_cap=None):
    teacher = HeadOutputs(
        values["teacher_hidden"], LinearHead(values["teacher_embeddings"], transposed=True)
    )
    student = HeadOutputs(
        values["student_hidden"],
        LinearHead(values["student_kernel"], values["student_bias"], soft_cap=soft_cap),
    )
    return teacher, student


def np_logits(values, soft_cap=None):
    teacher = (
        np.asarray(values["teacher_hidden"], np.float64)
        @ np.asarray(values["teacher_embeddings"], np.float64).T
    )
    student = (
        np.asarray(values["student_hidden"], np.float64) @ values["student_kernel"]
        + values["student_bias"]
    )
    if soft_cap is not None:
        student = soft_cap * np.tanh(student / soft_cap)
    return teacher, student


def np_divergence(name, teacher, student, temperature, beta, alpha, mask):
    """The papers' formulas on full logits, float64 (as tests/losses/test_tokens.py)."""
    p, q = ref.softmax(teacher, temperature), ref.softmax(student, temperature)
    if name == "forward_kl":
        values = ref.kl(p, q)
    elif name == "reverse_kl":
        values = ref.kl(q, p)
    elif name == "generalized_jsd":
        m = beta * p + (1 - beta) * q
        values = beta * ref.kl(p, m) + (1 - beta) * ref.kl(q, m)
    elif name == "skew_kl":
        values = ref.kl(p, alpha * p + (1 - alpha) * q)
    else:
        values = ref.kl(q, (1 - alpha) * p + alpha * q)
    return ref.masked_mean(temperature**2 * values, mask)


def test_forward_kl_hand_checked_value():
    # Teacher logits [0, log 3] (p = [1/4, 3/4]), student logits [0, 0] (q = [1/2, 1/2]).
    teacher = HeadOutputs(tf.ones([1, 1, 1]), LinearHead(tf.constant([[0.0, math.log(3.0)]])))
    student = HeadOutputs(tf.ones([1, 1, 1]), LinearHead(tf.zeros([1, 2])))
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    value = chunked_head_divergence(teacher, student, chunk_size=1)
    np.testing.assert_allclose(value.numpy(), [expected], rtol=1e-6)


@pytest.mark.parametrize("divergence", TOKEN_DIVERGENCES)
@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_equals_the_papers_formula_on_full_logits(tensors, divergence, chunk_size):
    teacher, student = outputs(tensors, soft_cap=5.0)
    value = chunked_head_divergence(
        teacher,
        student,
        divergence,
        temperature=2.0,
        beta=0.3,
        alpha=0.2,
        mask=MASK,
        chunk_size=chunk_size,
    )
    teacher_logits, student_logits = np_logits(tensors, soft_cap=5.0)
    expected = np_divergence(divergence, teacher_logits, student_logits, 2.0, 0.3, 0.2, MASK)
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert value.numpy()[2] == 0.0  # all padding


def test_crossentropy_equals_numpy_reference(tensors):
    labels = np.random.default_rng(5).integers(0, VOCABULARY, [BATCH, TIME]).astype(np.int32)
    _, student = outputs(tensors)
    value = chunked_head_crossentropy(labels, student, mask=MASK, chunk_size=4)
    _, logits = np_logits(tensors)
    probabilities = ref.softmax(logits)
    picked = np.take_along_axis(probabilities, labels[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(value.numpy(), ref.masked_mean(-np.log(picked), MASK), rtol=1e-5)
    # Without a mask: every position counts; [batch, time, 1] labels too.
    value = chunked_head_crossentropy(labels[..., None], student, chunk_size=5)
    np.testing.assert_allclose(value.numpy(), ref.masked_mean(-np.log(picked)), rtol=1e-5)


def _dense_and_chunked(tensors, divergence, compiled):
    """Values and student gradients of the dense loss (full logits) and the chunked one."""
    student_hidden = tf.Variable(tensors["student_hidden"])
    kernel = tf.Variable(tensors["student_kernel"])
    bias = tf.Variable(tensors["student_bias"])
    teacher_hidden = tf.constant(tensors["teacher_hidden"])
    embeddings = tf.constant(tensors["teacher_embeddings"])
    teacher = HeadOutputs(teacher_hidden, LinearHead(embeddings, transposed=True))

    def dense():
        teacher_logits = tf.einsum("bth,vh->btv", teacher_hidden, embeddings)
        student_logits = tf.einsum("bth,hv->btv", student_hidden, kernel) + bias
        return token_divergence(teacher_logits, student_logits, divergence, 2.0, mask=MASK)

    def chunked():
        student = HeadOutputs(student_hidden, LinearHead(kernel, bias))
        return chunked_head_divergence(teacher, student, divergence, 2.0, mask=MASK, chunk_size=2)

    def value_and_gradients(function):
        with tf.GradientTape() as tape:
            # Weighted, so that each example's gradient counts differently.
            value = function()
            loss = tf.reduce_sum(value * [1.0, 2.0, 3.0])
        return value, tape.gradient(loss, [student_hidden, kernel, bias])

    chunked_step = functools.partial(value_and_gradients, chunked)
    return [
        value_and_gradients(dense),
        tf.function(chunked_step)() if compiled else chunked_step(),
    ]


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "generalized_jsd"])
def test_value_and_gradient_equal_the_dense_loss(tensors, divergence):
    (dense, dense_gradients), (chunked, chunked_gradients) = _dense_and_chunked(
        tensors, divergence, compiled=False
    )
    np.testing.assert_allclose(chunked.numpy(), dense.numpy(), atol=1e-5)
    for got, expected in zip(chunked_gradients, dense_gradients):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)
        assert np.isfinite(got.numpy()).all()


def test_compiled_equals_eager(tensors):
    eager = _dense_and_chunked(tensors, "forward_kl", compiled=False)[1]
    compiled = _dense_and_chunked(tensors, "forward_kl", compiled=True)[1]
    np.testing.assert_allclose(compiled[0].numpy(), eager[0].numpy(), atol=1e-6)
    for got, expected in zip(compiled[1], eager[1]):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6)


def test_no_gradient_reaches_the_teacher(tensors):
    teacher_hidden = tf.Variable(tensors["teacher_hidden"])
    embeddings = tf.Variable(tensors["teacher_embeddings"])
    _, student = outputs(tensors)
    with tf.GradientTape() as tape:
        teacher = HeadOutputs(teacher_hidden, LinearHead(embeddings, transposed=True))
        value = chunked_head_divergence(teacher, student, chunk_size=3)
    assert tape.gradient(value, [teacher_hidden, embeddings]) == [None, None]


def test_serialization_round_trip():
    loss = ChunkedHeadDistillation("skew_reverse_kl", temperature=2.0, alpha=0.2, chunk_size=64)
    for copy in (
        losses.deserialize(losses.serialize(loss)),
        losses.get({"name": "chunked_head_kd", **loss.get_config()}),
    ):
        assert isinstance(copy, ChunkedHeadDistillation)
        assert copy.get_config() == loss.get_config()
    assert losses.get("chunked_head_kd").chunk_size == 256


@pytest.mark.parametrize("chunk_size", [0, -4, 2.5, True, None, "64"])
def test_a_bad_chunk_size_is_refused_naming_it(tensors, chunk_size):
    message = f"`chunk_size` must be an integer > 0. Received: chunk_size={chunk_size!r}"
    with pytest.raises(ValueError) as error:
        ChunkedHeadDistillation(chunk_size=chunk_size)
    assert str(error.value) == message
    teacher, student = outputs(tensors)
    with pytest.raises(ValueError) as error:
        chunked_head_divergence(teacher, student, chunk_size=chunk_size)
    assert str(error.value) == message


def test_other_errors(tensors):
    teacher, student = outputs(tensors)
    with pytest.raises(ValueError, match=r"`teacher_outputs` must be `HeadOutputs.*ndarray"):
        chunked_head_divergence(tensors["teacher_hidden"], student)
    flat = HeadOutputs(tensors["student_hidden"][:, 0], student.head)
    with pytest.raises(ValueError, match=r"\[batch, time, hidden\].*\(3, 4\)"):
        chunked_head_divergence(teacher, flat)
    narrow = HeadOutputs(student.hidden_states, LinearHead(tensors["student_kernel"][:, :5]))
    with pytest.raises(
        ValueError, match="one vocabulary.*teacher vocabulary of 11 and student vocabulary of 5"
    ):
        ChunkedHeadDistillation().validate_outputs(teacher, narrow)
    with pytest.raises(ValueError, match="Invalid value for argument `divergence`"):
        ChunkedHeadDistillation("kl")
    one_hot = np.eye(VOCABULARY, dtype=np.float32)[np.zeros([BATCH, TIME], int)]
    with pytest.raises(ValueError, match=r"argument `labels`.*token ids.*\(3, 7, 11\)"):
        chunked_head_crossentropy(one_hot, student)


def test_a_batch_of_padding_only_gives_zero_and_zero_gradients(tensors):
    teacher, student = outputs(tensors)
    hidden = tf.Variable(tensors["student_hidden"])

    def step():
        with tf.GradientTape() as tape:
            value = chunked_head_divergence(
                teacher,
                HeadOutputs(hidden, student.head),
                mask=np.zeros([BATCH, TIME]),
                chunk_size=2,
            )
        return value, tape.gradient(value, hidden)

    for value, gradient in (step(), tf.function(step)()):
        np.testing.assert_array_equal(value.numpy(), np.zeros(BATCH))
        np.testing.assert_array_equal(gradient.numpy(), np.zeros_like(tensors["student_hidden"]))
