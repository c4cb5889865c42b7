"""Compiled sampling of continuations from a causal LM.

One `tf.while_loop` over positions: no Python loop per token, so the loop
runs inside a compiled train step (on-policy distillation) as well as
eagerly. Each step runs the model on the whole `[batch, time]` sequence
(causal attention makes later positions irrelevant to earlier ones), which
works for any `keras_hub.models.CausalLM` without its private cache; it
costs O(time²) and suits the short sequences of distillation batches.
Randomness is stateless (`tf.random.stateless_categorical` with a seed
folded in per position), so a seed fixes the samples.
"""

from tf_distill.backend import tf
from tf_distill.language.models import PADDING_MASK
from tf_distill.language.models import TOKEN_IDS


def _check_sampling(temperature, top_k, top_p):
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be a positive integer or None. Received: top_k={top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"`top_p` must be in (0, 1] or None. Received: top_p={top_p!r}")


def filter_logits(logits, temperature=1.0, top_k=None, top_p=None):
    """Next-token logits `[batch, vocabulary]` scaled and truncated for sampling.

    Divides by `temperature`, then keeps the `top_k` largest logits and the
    smallest set of tokens whose probability reaches `top_p` (nucleus
    sampling, Holtzman et al. 2020); the others become `-inf`. The most
    likely token is always kept.
    """
    _check_sampling(temperature, top_k, top_p)
    logits = tf.cast(logits, tf.float32) / temperature
    minus_infinity = tf.fill(tf.shape(logits), float("-inf"))
    if top_k is not None:
        k = tf.minimum(top_k, tf.shape(logits)[-1])
        kth = tf.math.top_k(logits, k=k).values[..., -1:]
        logits = tf.where(logits < kth, minus_infinity, logits)
    if top_p is not None and top_p < 1.0:
        sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
        probabilities = tf.nn.softmax(sorted_logits, axis=-1)
        # Mass strictly before each token: a token is kept while it is < top_p.
        before = tf.cumsum(probabilities, axis=-1, exclusive=True)
        kept = tf.reduce_sum(tf.cast(before < top_p, tf.int32), axis=-1, keepdims=True)
        threshold = tf.gather(sorted_logits, kept - 1, batch_dims=1)
        logits = tf.where(logits < threshold, minus_infinity, logits)
    return logits


def sample_continuations(
    model,
    token_ids,
    prompt_length,
    seed,
    temperature=1.0,
    top_k=None,
    top_p=None,
    greedy=False,
    padding_mask=None,
):
    """Replaces the tokens after the prompt by the model's own continuation.

    Args:
        model: A causal LM taking `{"token_ids", "padding_mask"}` and
            returning logits `[batch, time, vocabulary]`.
        token_ids: int `[batch, time]`; the first `prompt_length` tokens are
            the prompt, the rest is overwritten.
        prompt_length: `P` >= 1, a Python int or a scalar tensor.
        seed: int `[2]` seed of the stateless sampler; the same seed gives
            the same tokens.
        temperature, top_k, top_p: see `filter_logits`.
        greedy: take the most likely token instead of sampling.
        padding_mask: `[batch, time]` mask of the prompt's real tokens;
            all of the prompt when `None`. Continuation positions are real.

    Returns:
        int `[batch, time]` token ids: the prompt, then the continuation.
    """
    _check_sampling(temperature, top_k, top_p)
    token_ids = tf.convert_to_tensor(token_ids)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    length = tf.shape(token_ids)[1]
    positions = tf.range(length)[tf.newaxis, :]
    prompt_length = tf.cast(prompt_length, tf.int32)
    if padding_mask is None:
        padding_mask = tf.ones_like(token_ids, dtype=tf.bool)
    padding_mask = tf.logical_or(tf.cast(padding_mask, tf.bool), positions >= prompt_length)

    def step(index, ids):
        logits = model({TOKEN_IDS: ids, PADDING_MASK: padding_mask}, training=False)
        next_logits = tf.gather(logits, index - 1, axis=1)
        if greedy:
            tokens = tf.argmax(next_logits, axis=-1, output_type=tf.int32)
        else:
            filtered = filter_logits(next_logits, temperature, top_k, top_p)
            position_seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(index, tf.int64))
            tokens = tf.random.stateless_categorical(
                filtered, 1, seed=position_seed, dtype=tf.int32
            )[:, 0]
        tokens = tf.cast(tokens, ids.dtype)[:, tf.newaxis]
        return index + 1, tf.where(positions == index, tokens, ids)

    _, token_ids = tf.while_loop(
        lambda index, ids: index < length,
        step,
        (prompt_length, token_ids),
        shape_invariants=(tf.TensorShape([]), token_ids.shape),
    )
    return token_ids


def continuation_mask(shape, prompt_length):
    """float32 `[batch, time]`: 1 where a position predicts a sampled token.

    Position `t` predicts token `t + 1`, so the sampled tokens `P … time−1`
    are predicted at positions `P−1 … time−2`.
    """
    positions = tf.range(shape[1])[tf.newaxis, :]
    inside = tf.logical_and(positions >= prompt_length - 1, positions <= shape[1] - 2)
    return tf.broadcast_to(tf.cast(inside, tf.float32), shape)
