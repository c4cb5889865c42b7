"""`tf_distill.language.perplexity` and `teacher_nll_of_samples` against NumPy."""

import math

import numpy as np
import pytest

from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.language import perplexity
from tf_distill.language import teacher_nll_of_samples

VOCABULARY = 11
LENGTH = 6


def token_model(seed, zero=False):
    """`{"token_ids", "padding_mask"}` → logits `[batch, time, V]`: a bigram model."""
    keras.utils.set_random_seed(seed)
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="bool", name="padding_mask")
    initializer = "zeros" if zero else "glorot_uniform"
    hidden = keras.layers.Embedding(VOCABULARY, 4)(token_ids)
    logits = keras.layers.Dense(VOCABULARY, kernel_initializer=initializer)(hidden)
    return keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, logits)


def windows(count, seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, VOCABULARY, (count, LENGTH)).astype("int32")
    labels = rng.integers(1, VOCABULARY, (count, LENGTH)).astype("int32")
    mask = np.ones((count, LENGTH), "float32")
    mask[-1, 3:] = 0.0  # a padded last window
    mask[-2, :] = 0.0  # a window that is all padding contributes nothing
    return token_ids, labels, mask


def test_perplexity_matches_numpy():
    model = token_model(0)
    token_ids, labels, mask = windows(5)
    dataset = tf.data.Dataset.from_tensor_slices((
        {"token_ids": token_ids, "padding_mask": mask > 0}, labels, mask)).batch(2)
    logits = np.asarray(model({"token_ids": token_ids, "padding_mask": mask > 0}), np.float64)
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probabilities, labels[..., None], -1)[..., 0]
    expected = math.exp((nll * mask).sum() / mask.sum())
    assert perplexity(model, dataset) == pytest.approx(expected, rel=1e-5)


def test_perplexity_of_no_token_is_refused():
    token_ids, labels, mask = windows(2)
    dataset = tf.data.Dataset.from_tensor_slices((
        {"token_ids": token_ids, "padding_mask": mask > 0}, labels, 0 * mask)).batch(2)
    with pytest.raises(ValueError, match="no real"):
        perplexity(token_model(0), dataset)


def test_teacher_nll_of_samples():
    student, teacher = token_model(1), token_model(2)
    token_ids, _, _ = windows(5)
    first = teacher_nll_of_samples(teacher, student, token_ids, 2, seed=3, batch_size=2)
    again = teacher_nll_of_samples(teacher, student, token_ids, 2, seed=3, batch_size=2)
    assert first == again and math.isfinite(first)  # seeded samples
    # A uniform teacher gives every sample log(V) nats, whatever was sampled.
    uniform = token_model(0, zero=True)
    value = teacher_nll_of_samples(uniform, student, token_ids, 2, seed=3, top_k=3)
    assert value == pytest.approx(math.log(VOCABULARY), rel=1e-6)
    with pytest.raises(ValueError, match=r"`prompt_length` must be in \[1, 6\)"):
        teacher_nll_of_samples(teacher, student, token_ids, LENGTH)
