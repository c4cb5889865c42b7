"""Scores of a causal language model: held-out perplexity and the exposure-bias NLL.

`perplexity` is `exp(Σ mask · CE / Σ mask)` over every real (unpadded) label
token. `teacher_nll_of_samples` is the measure on which on-policy
distillation (GKD, Agarwal et al., ICLR 2024) should win: the student
continues prompts with its own samples, and the teacher scores them; a
student that trained on its own mistakes wanders less far from what the
teacher finds likely.
"""

import math

import numpy as np

from tf_distill.backend import tf
from tf_distill.language.sampling import sample_continuations


def _logits(model, inputs):
    outputs = model(inputs, training=False)
    return outputs["logits"] if isinstance(outputs, dict) else outputs


@tf.function(reduce_retracing=True)
def _token_nll(logits, labels, mask):
    log_probabilities = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    nll = -tf.gather(log_probabilities, tf.cast(labels, tf.int32), batch_dims=2)
    mask = tf.cast(mask, tf.float32)
    return tf.reduce_sum(nll * mask), tf.reduce_sum(mask)


def token_nll(model, dataset):
    """`(Σ mask · NLL, Σ mask)` of a model over a dataset of `(inputs, labels, mask)`."""
    total, count = 0.0, 0.0
    for inputs, labels, mask in dataset:
        batch_total, batch_count = _token_nll(_logits(model, inputs), labels, mask)
        total += float(batch_total)
        count += float(batch_count)
    return total, count


def perplexity(model, dataset):
    """Per-token perplexity `exp(Σ mask · NLL / Σ mask)` of `model` on `dataset`.

    Args:
        model: A causal LM: `{"token_ids", "padding_mask"}` in, logits
            `[batch, time, vocabulary]` out.
        dataset: Batches `(inputs, labels, mask)`, e.g.
            `tf_distill.data.load_text(...).dataset("test", 32)`.

    Raises:
        ValueError: if the dataset holds no real token.
    """
    total, count = token_nll(model, dataset)
    if count == 0:
        raise ValueError("`dataset` holds no real (unpadded) token: no perplexity.")
    return math.exp(total / count)


def teacher_nll_of_samples(teacher, student, token_ids, prompt_length, *, seed=0,
                           temperature=1.0, top_k=None, top_p=None, batch_size=32):
    """The teacher's mean NLL per token of the student's own continuations.

    The student continues the first `prompt_length` tokens of each window
    (sampled compiled and seeded: `tf_distill.language.sampling`), and the
    teacher scores every sampled token given what precedes it.

    Args:
        teacher: The scoring causal LM.
        student: The sampling causal LM.
        token_ids: int `[n, L]` windows; only their prompts are read.
        prompt_length: `P`, tokens kept from each window, `1 <= P < L`.
        seed: The sampler's seed (an int).
        temperature, top_k, top_p: The student's sampling.
        batch_size: Windows per call.

    Returns:
        A float, the mean NLL in nats per sampled token.
    """
    token_ids = np.asarray(token_ids, np.int32)
    length = token_ids.shape[1]
    if not 1 <= prompt_length < length:
        raise ValueError(
            f"`prompt_length` must be in [1, {length}) for windows of {length} tokens. "
            f"Received: prompt_length={prompt_length!r}"
        )
    sample = tf.function(
        lambda ids, batch_seed: sample_continuations(
            student, ids, prompt_length, batch_seed, temperature=temperature, top_k=top_k,
            top_p=top_p),
        reduce_retracing=True,
    )
    total, count = 0.0, 0.0
    labels_mask = np.zeros((1, length), np.float32)
    labels_mask[:, prompt_length - 1 : length - 1] = 1.0  # position t predicts token t + 1
    for index, start in enumerate(range(0, len(token_ids), batch_size)):
        samples = sample(token_ids[start : start + batch_size],
                         tf.constant([seed, index], tf.int64))
        inputs = {"token_ids": samples, "padding_mask": tf.ones_like(samples, tf.bool)}
        labels = tf.concat([samples[:, 1:], tf.zeros_like(samples[:, :1])], axis=1)
        mask = tf.broadcast_to(labels_mask, tf.shape(samples))
        batch_total, batch_count = _token_nll(_logits(teacher, inputs), labels, mask)
        total += float(batch_total)
        count += float(batch_count)
    return total / count
