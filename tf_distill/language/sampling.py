"""Compiled, seeded sampling of continuations from a causal LM.

`generate_continuations` continues each prompt with the model's own tokens
inside one `tf.while_loop`, so it runs inside a compiled train step
(on-policy distillation) as well as eagerly. A KerasHub `CausalLM` decodes
with its key/value cache: its public `generate_step` prefills the prompt
once, then runs `call_with_cache` one token at a time (O(time)), with the
sampler this module gives it for that call, never the model's compiled
default (a `top_k` sampler with k = 5, a biased distribution). A model
without `generate_step` and `call_with_cache` reruns its full `[batch,
time]` forward pass for every token (O(time²); causal attention makes later
positions irrelevant to earlier ones).

Either way a token is drawn by `next_tokens`: logits divided by the
temperature, optionally truncated by `top_k` / `top_p`, then
`tf.random.stateless_categorical` with the seed folded with the token's
position. A seed fixes the samples, and the cached and uncached paths draw
the same tokens from the same logits.

With an `end_token_id`, a row stops at its first end token (the loop stops
when every row has one); later positions hold the end token, are padding,
and count in no loss (as TRL's `GKDTrainer` masks after EOS). The end
token itself counts. This holds when the pad id equals the end id: the mask
comes from where tokens were generated, not from their ids.
"""

import contextlib
from typing import Any
from typing import NamedTuple

from tf_distill.backend import tf
from tf_distill.language.models import PADDING_MASK
from tf_distill.language.models import TOKEN_IDS

CACHE_MODES = (None, True, False)


def check_use_cache(use_cache):
    """Raises a `ValueError` unless `use_cache` is None, True or False."""
    if not any(use_cache is mode for mode in CACHE_MODES):
        raise ValueError(
            f"`use_cache` must be None, True or False. Received: use_cache={use_cache!r}"
        )


def check_sampling(temperature=1.0, top_k=None, top_p=None):
    """Raises a `ValueError` naming the sampler setting out of range."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
        temperature > 0
    ):
        raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be a positive integer or None. Received: top_k={top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"`top_p` must be in (0, 1] or None. Received: top_p={top_p!r}")


def check_end_token_id(end_token_id, vocabulary_size=None):
    """Raises a `ValueError` unless `end_token_id` is None or a token id."""
    if end_token_id is None:
        return
    valid = isinstance(end_token_id, int) and not isinstance(end_token_id, bool)
    if not valid or end_token_id < 0 or (
        vocabulary_size is not None and end_token_id >= vocabulary_size
    ):
        upper = "" if vocabulary_size is None else f" and < {vocabulary_size} (the vocabulary)"
        raise ValueError(
            f"`end_token_id` must be None or an integer >= 0{upper}. "
            f"Received: end_token_id={end_token_id!r}"
        )


def filter_logits(logits, temperature=1.0, top_k=None, top_p=None):
    """Next-token logits `[batch, vocabulary]` scaled and truncated for sampling.

    Divides by `temperature`, then keeps the `top_k` largest logits and the
    smallest set of tokens whose probability reaches `top_p` (nucleus
    sampling, Holtzman et al. 2020); the others become `-inf`. The most
    likely token is always kept.
    """
    check_sampling(temperature, top_k, top_p)
    logits = tf.cast(logits, tf.float32)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is None and (top_p is None or top_p == 1.0):
        return logits
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


def next_tokens(logits, seed, position, temperature=1.0, top_k=None, top_p=None, greedy=False):
    """int32 `[batch]`: the tokens drawn from next-token logits `[batch, vocabulary]`.

    Args:
        logits: The logits predicting the tokens at `position`.
        seed: int `[2]` seed; folded with `position`, so each position
            draws with its own stateless seed.
        position: The position being written (a scalar).
        temperature, top_k, top_p: see `filter_logits`.
        greedy: Take the most likely token instead of sampling.
    """
    if greedy:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    filtered = filter_logits(logits, temperature, top_k, top_p)
    position_seed = tf.random.experimental.stateless_fold_in(
        tf.cast(seed, tf.int64), tf.cast(position, tf.int64)
    )
    return tf.random.stateless_categorical(filtered, 1, seed=position_seed, dtype=tf.int32)[:, 0]


class Continuations(NamedTuple):
    """What `generate_continuations` returns.

    Attributes:
        token_ids: int `[batch, time]`: the prompt, then the continuation
            (the end token repeated after a row's first one).
        padding_mask: bool `[batch, time]`: the prompt's real tokens and the
            generated ones up to each row's first end token.
        loss_mask: float32 `[batch, time]`: 1 where position `t` predicts a
            generated token `t + 1` that counts (up to the first end token,
            included).
    """

    token_ids: Any
    padding_mask: Any
    loss_mask: Any


class StatelessSampler:
    """The sampler `generate_continuations` gives a KerasHub `CausalLM`.

    KerasHub's `CausalLM.generate_step` calls `model.sampler(next=...,
    prompt=..., cache=..., index=..., mask=..., ...)`; this one draws each
    token with `next_tokens` (stateless, seeded by position), keeps the
    prompt where `mask` is true, and stops once every row has written
    `end_token_id`. It also serves models without a cache (`cache=()`).
    `ragged_prompts=False` promises that every row's prompt ends where
    generation starts (no lookup of the prompt per token). After a call,
    `final_index` is the position where the loop stopped.
    """

    def __init__(self, seed, temperature=1.0, top_k=None, top_p=None, greedy=False,
                 end_token_id=None, ragged_prompts=True):
        check_sampling(temperature, top_k, top_p)
        check_end_token_id(end_token_id)
        self.seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.greedy = greedy
        self.end_token_id = end_token_id
        self.ragged_prompts = ragged_prompts
        self.final_index = None

    def __call__(self, next, prompt, cache=None, index=0, mask=None, **kwargs):
        prompt = tf.convert_to_tensor(prompt)
        length = tf.shape(prompt)[1]
        positions = tf.range(length)[tf.newaxis, :]
        index = tf.cast(index, tf.int32)
        mask = tf.cast(mask, tf.bool)
        cache = () if cache is None else cache
        done = tf.zeros([tf.shape(prompt)[0]], tf.bool)

        def keep_going(ids, cache, index, done):
            if self.end_token_id is None:
                return index < length
            return tf.logical_and(index < length, tf.logical_not(tf.reduce_all(done)))

        def step(ids, cache, index, done):
            logits, _, cache = next(ids, cache, index)
            tokens = next_tokens(
                logits, self.seed, index, self.temperature, self.top_k, self.top_p, self.greedy
            )
            tokens = tf.cast(tokens, ids.dtype)
            if self.ragged_prompts:
                # Rows with a longer prompt keep theirs.
                in_prompt = tf.gather(mask, index, axis=1)
                tokens = tf.where(in_prompt, tf.gather(ids, index, axis=1), tokens)
            else:
                in_prompt = tf.zeros_like(done)
            if self.end_token_id is not None:
                ended = tf.logical_and(tf.logical_not(in_prompt), tokens == self.end_token_id)
                done = tf.logical_or(done, ended)
            ids = tf.where(positions == index, tokens[:, tf.newaxis], ids)
            return ids, cache, index + 1, done

        ids, _, index, _ = tf.while_loop(keep_going, step, (prompt, cache, index, done))
        self.final_index = index
        return ids


@contextlib.contextmanager
def _sampler_of(model, sampler):
    # `generate_step` reads the model's `sampler` (set by `compile`); it is
    # ours while this call is traced, and the model's own afterwards.
    missing = object()
    previous = getattr(model, "sampler", missing)
    model.sampler = sampler
    try:
        yield
    finally:
        if previous is missing:
            del model.sampler
        else:
            model.sampler = previous


def has_cache(model):
    """Whether `model` decodes with KerasHub's public cached `generate_step`."""
    return callable(getattr(model, "generate_step", None)) and callable(
        getattr(model, "call_with_cache", None)
    )


def _check_prompt_length(prompt_length, length):
    if isinstance(prompt_length, int) and not isinstance(prompt_length, bool):
        if prompt_length < 1 or (length is not None and prompt_length >= length):
            raise ValueError(
                "`prompt_length` must be >= 1 and shorter than the sequences, leaving tokens "
                f"to generate. Received: prompt_length={prompt_length} for sequences of "
                f"{length} tokens"
            )


def generate_continuations(
    model,
    token_ids,
    prompt_length,
    seed,
    temperature=1.0,
    top_k=None,
    top_p=None,
    greedy=False,
    padding_mask=None,
    end_token_id=None,
    use_cache=None,
):
    """Continues each prompt with the model's own tokens (compiled, seeded).

    The prompt of a row is its first `prompt_length` tokens, or fewer where
    `padding_mask` ends sooner (right padding): generation starts after a
    row's last real prompt token.

    Args:
        model: A causal LM taking `{"token_ids", "padding_mask"}` and
            returning logits `[batch, time, vocabulary]`; a KerasHub
            `CausalLM` decodes with its cache.
        token_ids: int `[batch, time]`; the tokens after the prompt are
            overwritten.
        prompt_length: `P`, `1 <= P < time`, a Python int or a scalar tensor.
        seed: int `[2]` seed of the stateless sampler; the same seed gives
            the same tokens.
        temperature: The sampling temperature (> 0), which divides the
            logits before drawing. Not a distillation loss's temperature.
        top_k, top_p: Optional truncations (see `filter_logits`).
        greedy: Take the most likely token instead of sampling.
        padding_mask: `[batch, time]` mask of the prompt's real tokens; all
            of the prompt when `None`.
        end_token_id: Optional id of the end token: a row stops at its
            first one, and what follows is masked (see `Continuations`).
        use_cache: `None` (default) decodes with the KV cache when the
            model has one (`generate_step` and `call_with_cache`); `True`
            requires it; `False` reruns the full forward pass per token.

    Returns:
        A `Continuations`: token ids, padding mask and loss mask.

    Raises:
        ValueError: for a prompt as long as the sequences, a sampler
            setting out of range, or `use_cache=True` with a model without
            a cache.

    Example:

    >>> out = generate_continuations(student, x["token_ids"], 8, seed=[0, 1],
    ...                              temperature=0.8, end_token_id=2)
    >>> out.token_ids, out.loss_mask
    """
    check_sampling(temperature, top_k, top_p)
    check_end_token_id(end_token_id)
    check_use_cache(use_cache)
    cached = has_cache(model)
    if use_cache and not cached:
        raise ValueError(
            "`use_cache=True` needs a model with `generate_step` and `call_with_cache` (a "
            f"KerasHub CausalLM). Received: a {type(model).__name__}"
        )
    cached = cached if use_cache is None else use_cache
    token_ids = tf.convert_to_tensor(token_ids)
    _check_prompt_length(prompt_length, token_ids.shape[1])
    length = tf.shape(token_ids)[1]
    positions = tf.range(length)[tf.newaxis, :]
    prompt_length = tf.cast(prompt_length, tf.int32)
    in_prompt = positions < prompt_length
    if padding_mask is not None:
        # The first token is always prompt: generation needs one to start from.
        real = tf.logical_or(tf.cast(padding_mask, tf.bool), positions == 0)
        in_prompt = tf.logical_and(in_prompt, real)
    in_prompt = tf.broadcast_to(in_prompt, tf.shape(token_ids))
    sampler = StatelessSampler(
        seed, temperature, top_k, top_p, greedy, end_token_id,
        ragged_prompts=padding_mask is not None,
    )
    if cached:
        with _sampler_of(model, sampler):
            generated = model.generate_step({TOKEN_IDS: token_ids, PADDING_MASK: in_prompt})
        ids = generated[TOKEN_IDS]
    else:
        all_real = tf.ones_like(token_ids, tf.bool)

        def forward(ids, cache, index):
            logits = model({TOKEN_IDS: ids, PADDING_MASK: all_real}, training=False)
            return tf.gather(logits, index - 1, axis=1), None, cache

        start = tf.reduce_min(tf.reduce_sum(tf.cast(in_prompt, tf.int32), axis=1))
        ids = sampler(forward, token_ids, (), start, in_prompt)
    written = tf.logical_and(tf.logical_not(in_prompt), positions < sampler.final_index)
    return _end_at_end_tokens(ids, in_prompt, written, end_token_id)


def _end_at_end_tokens(ids, in_prompt, written, end_token_id):
    counted = written
    if end_token_id is not None:
        ends = tf.cast(tf.logical_and(written, ids == end_token_id), tf.int32)
        after_end = tf.cumsum(ends, axis=1, exclusive=True) > 0
        # Positions after the first end token: never written when the loop
        # stopped early, else tokens sampled past it.
        unused = tf.logical_and(tf.logical_not(in_prompt), tf.logical_not(counted))
        after_end = tf.logical_or(after_end, unused)
        ids = tf.where(after_end, tf.cast(end_token_id, ids.dtype), ids)
        counted = tf.logical_and(written, tf.logical_not(after_end))
    # Position t predicts token t + 1.
    predicts = tf.concat([counted[:, 1:], tf.zeros_like(counted[:, :1])], axis=1)
    return Continuations(
        token_ids=ids,
        padding_mask=tf.logical_or(in_prompt, counted),
        loss_mask=tf.cast(predicts, tf.float32),
    )


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
    end_token_id=None,
    use_cache=None,
):
    """Replaces the tokens after the prompt by the model's own continuation.

    The token ids of `generate_continuations` (see it for the arguments):
    decoded with the KV cache when the model has one.

    Returns:
        int `[batch, time]` token ids: the prompt, then the continuation.
    """
    return generate_continuations(
        model, token_ids, prompt_length, seed, temperature, top_k, top_p, greedy,
        padding_mask, end_token_id, use_cache,
    ).token_ids


def continuation_mask(shape, prompt_length):
    """float32 `[batch, time]`: 1 where a position predicts a sampled token.

    Position `t` predicts token `t + 1`, so the sampled tokens `P … time−1`
    are predicted at positions `P−1 … time−2`.
    """
    positions = tf.range(shape[1])[tf.newaxis, :]
    inside = tf.logical_and(positions >= prompt_length - 1, positions <= shape[1] - 2)
    return tf.broadcast_to(tf.cast(inside, tf.float32), shape)
