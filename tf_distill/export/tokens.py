"""Token data for a language model's export: its checks, and next-token perplexity."""

import numpy as np

from tf_distill.export.decode import PADDING_MASK
from tf_distill.export.decode import TOKEN_IDS


def token_perplexity(logits, token_ids, padding_mask):
    """Next-token perplexity: `exp(mean NLL)` over pairs of real tokens.

    Position `t`'s logits predict token `t + 1`; a prediction counts when
    both tokens are real (`padding_mask` true). Computed in float64 from
    `log_softmax` (log-sum-exp), never from probabilities.

    Args:
        logits: `[batch, length, vocabulary]`.
        token_ids: `[batch, length]` ints.
        padding_mask: `[batch, length]`, true for real tokens.

    Returns:
        `(perplexity, num_predictions)`.
    """
    logits = np.asarray(logits, np.float64)[:, :-1]
    targets = np.asarray(token_ids)[:, 1:]
    mask = np.asarray(padding_mask, bool)
    counted = mask[:, :-1] & mask[:, 1:]
    peak = logits.max(axis=-1, keepdims=True)
    log_normalizer = peak[..., 0] + np.log(np.exp(logits - peak).sum(axis=-1))
    target_logits = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    negative_log_likelihood = (log_normalizer - target_logits)[counted]
    return float(np.exp(negative_log_likelihood.mean())), int(counted.sum())


def check_token_data(token_data, sequence_length, vocabulary_size=None):
    """`token_data` as int32 `(token_ids, padding_mask)` padded to `[n, L]`.

    Raises:
        ValueError: For sequences longer than `sequence_length`, ids outside
            `[0, vocabulary_size)`, a mask of another shape, or fewer than
            two real tokens in all (nothing to predict).
    """
    if isinstance(token_data, dict):
        unknown = set(token_data) - {TOKEN_IDS, PADDING_MASK}
        if TOKEN_IDS not in token_data or unknown:
            raise ValueError(
                "`token_data` as a dict needs the keys 'token_ids' and, optionally, "
                f"'padding_mask'. Received keys: {sorted(token_data)}"
            )
        token_ids = np.asarray(token_data[TOKEN_IDS])
        padding_mask = token_data.get(PADDING_MASK)
    else:
        token_ids, padding_mask = np.asarray(token_data), None
    if token_ids.ndim != 2 or not np.issubdtype(token_ids.dtype, np.integer):
        raise ValueError(
            "`token_data` must hold integer token ids of shape [num_sequences, length]. "
            f"Received shape {token_ids.shape} and dtype {token_ids.dtype}."
        )
    padding_mask = (
        np.ones(token_ids.shape, bool) if padding_mask is None else np.asarray(padding_mask, bool)
    )
    if padding_mask.shape != token_ids.shape:
        raise ValueError(
            "`padding_mask` must have the shape of `token_ids`. Received "
            f"{padding_mask.shape} and {token_ids.shape}."
        )
    count, length = token_ids.shape
    if length > sequence_length:
        raise ValueError(
            f"`token_data` sequences have length {length}, longer than the exported "
            f"sequence_length={sequence_length}. Pass shorter sequences or a larger "
            "sequence_length (at most the model's max_sequence_length)."
        )
    real_ids = token_ids[padding_mask]
    if (
        vocabulary_size is not None
        and real_ids.size
        and (real_ids.min() < 0 or real_ids.max() >= vocabulary_size)
    ):
        raise ValueError(
            f"`token_data` holds ids outside the vocabulary [0, {vocabulary_size}): "
            f"min {real_ids.min()}, max {real_ids.max()}."
        )
    if real_ids.size < 2:
        raise ValueError(
            "`token_data` needs at least two real tokens to measure a next-token "
            f"perplexity. Received {real_ids.size}."
        )
    padded_ids = np.zeros((count, sequence_length), np.int32)
    padded_mask = np.zeros((count, sequence_length), np.int32)
    padded_ids[:, :length] = np.where(padding_mask, token_ids, 0)
    padded_mask[:, :length] = padding_mask
    return padded_ids, padded_mask
