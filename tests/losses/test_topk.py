"""Tests of KD from a sparse top-k teacher target (`tf_distill.losses.topk`)."""

import math

import numpy as np
import numpy_reference as ref
import pytest

from tf_distill import losses
from tf_distill.backend import tf
from tf_distill.losses import TopKDistillation
from tf_distill.losses import pack_topk
from tf_distill.losses import soft_label_kl
from tf_distill.losses import topk_kl
from tf_distill.losses import topk_targets
from tf_distill.losses import unpack_topk


def random_logits(shape, seed, scale=3.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def np_topk_kl(teacher, student, k, temperature=1.0, mask=None):
    """The bucketed KL in float64, from full distributions: kept ids + one rest bucket."""
    p = ref.softmax(teacher, temperature)
    q = ref.softmax(student, temperature)
    flat_p = p.reshape(-1, p.shape[-1])
    flat_q = q.reshape(-1, q.shape[-1])
    values = []
    for row_p, row_q in zip(flat_p, flat_q):
        kept = np.argsort(-row_p, kind="stable")[:k]
        rest = np.ones(len(row_p), bool)
        rest[kept] = False
        buckets_p = np.append(row_p[kept], row_p[rest].sum())
        buckets_q = np.append(row_q[kept], row_q[rest].sum())
        values.append(ref.kl(buckets_p, buckets_q))
    values = np.array(values).reshape(p.shape[:-1])
    return ref.masked_mean(temperature**2 * values, mask)


MASK = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32)


def test_hand_checked_value():
    # p = [0.5, 0.3, 0.2], q = [0.2, 0.2, 0.6], k = 1: buckets [0.5, 0.5] vs [0.2, 0.8].
    teacher = tf.math.log(tf.constant([[0.5, 0.3, 0.2]]))
    student = tf.math.log(tf.constant([[0.2, 0.2, 0.6]]))
    log_probs, indices, rest = topk_targets(teacher, 1)
    expected = 0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8)
    np.testing.assert_allclose(topk_kl(log_probs, indices, rest, student), [expected], atol=1e-6)
    assert indices.numpy().tolist() == [[0]]
    np.testing.assert_allclose(rest, [math.log(0.5)], atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_matches_numpy_with_mask(k, temperature):
    teacher = random_logits([3, 4, 13], 1)
    student = random_logits([3, 4, 13], 2)
    targets = topk_targets(teacher, k, temperature)
    values = topk_kl(*targets, student, temperature, mask=MASK)
    np.testing.assert_allclose(
        values, np_topk_kl(teacher, student, k, temperature, MASK), rtol=1e-5, atol=1e-6
    )
    assert float(values[2]) == 0.0
    # Coarsening never increases the KL (the log-sum inequality).
    dense = soft_label_kl(teacher, student, temperature, mask=MASK).numpy()
    assert np.all(values.numpy() <= dense + 1e-6)


def test_equals_dense_kl_as_k_reaches_the_vocabulary():
    vocabulary = 17
    teacher = random_logits([2, 3, vocabulary], 3)
    student = random_logits([2, 3, vocabulary], 4)
    dense = soft_label_kl(teacher, student, 2.0, mask=MASK[:2, :3]).numpy()
    gaps = []
    for k in (1, 4, 8, 12, 16, vocabulary):
        values = topk_kl(*topk_targets(teacher, k, 2.0), student, 2.0, mask=MASK[:2, :3])
        gaps.append(float(np.max(dense - values.numpy())))
    # The gap shrinks to 0 as k grows, and k = V is the dense forward KL.
    assert all(later <= earlier + 1e-6 for earlier, later in zip(gaps, gaps[1:]))
    assert gaps[0] > 1e-3
    np.testing.assert_allclose(gaps[-1], 0.0, atol=1e-5)


def test_gradients_finite_for_extreme_logits_and_full_k():
    vocabulary = 6
    teacher = tf.constant([[[1e4, -1e4, 0.0, 5.0, -3.0, 2.0]] * 2])
    student = tf.Variable([[[-1e4, 1e4, 0.0, 1.0, 2.0, 3.0]] * 2])
    mask = tf.constant([[1.0, 0.0]])
    for k in (2, vocabulary):
        targets = topk_targets(teacher, k)
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(topk_kl(*targets, student, mask=mask))
        gradient = tape.gradient(value, student).numpy()
        assert np.isfinite(float(value)) and float(value) > 1e3
        assert np.all(np.isfinite(gradient))
        assert np.all(gradient[0, 1] == 0.0)


def test_float16_targets_are_close_to_float32():
    teacher = random_logits([2, 4, 40], 5)
    student = random_logits([2, 4, 40], 6)
    log_probs, indices, rest = topk_targets(teacher, 8)
    exact = topk_kl(log_probs, indices, rest, student)
    rounded = topk_kl(tf.cast(log_probs, tf.float16), indices, rest, student)
    np.testing.assert_allclose(rounded, exact, rtol=1e-2)


@pytest.mark.parametrize("vocabulary", [17, 15])
def test_pack_round_trip_is_never_as_wide_as_the_logits(vocabulary):
    teacher = random_logits([2, 3, vocabulary], 7)
    targets = topk_targets(teacher, 7)
    packed = pack_topk(*targets, vocabulary)
    assert packed.shape[-1] != vocabulary
    for original, unpacked in zip(targets, unpack_topk(packed)):
        np.testing.assert_array_equal(unpacked, original)


def test_topk_distillation_reads_packed_targets():
    teacher = random_logits([3, 4, 20], 8)
    student = random_logits([3, 4, 20], 9)
    packed = pack_topk(*topk_targets(teacher, 5, 2.0), 20)
    loss = TopKDistillation(temperature=2.0)
    loss.validate_outputs(packed, student)
    np.testing.assert_allclose(
        loss(packed, student, mask=MASK), np_topk_kl(teacher, student, 5, 2.0, MASK), rtol=1e-5
    )
    again = losses.get(losses.serialize(loss))
    assert losses.serialize(loss) == {"name": "topk_kd", "temperature": 2.0}
    np.testing.assert_allclose(again(packed, student), loss(packed, student), rtol=1e-6)
    compiled = tf.function(lambda t, s: loss(t, s, mask=MASK), jit_compile=True)
    np.testing.assert_allclose(compiled(packed, student), loss(packed, student, mask=MASK),
                               rtol=1e-5, atol=1e-6)


def test_topk_distillation_refuses_full_logits_and_bad_shapes():
    loss = TopKDistillation()
    with pytest.raises(ValueError, match=r"packed targets .* not the teacher's logits.*\(2, 3, 9\)"):
        loss.validate_outputs(tf.zeros([2, 3, 9]), tf.zeros([2, 3, 9]))
    with pytest.raises(ValueError, match=r"same positions.*\(2, 4, 5\).*\(2, 3, 9\)"):
        loss.validate_outputs(tf.zeros([2, 4, 5]), tf.zeros([2, 3, 9]))
    with pytest.raises(ValueError, match=r"`temperature` must be > 0. Received: temperature=0"):
        TopKDistillation(temperature=0)
