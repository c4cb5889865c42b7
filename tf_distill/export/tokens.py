"""Token data for a language model's export: its checks, and next-token perplexity."""

import numpy as np

from tf_distill.export.decode import PADDING_MASK
from tf_distill.export.decode import TOKEN_IDS
from tf_distill.export.errors import AccuracyDropError
from tf_distill.export.errors import ExportError

# Sequences the Keras model scores at a time when its logits are compared.
KERAS_BATCH_SIZE = 32


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


def compare_token_logits(report, keras_logits, litert_logits, token_ids, real, quantization, *,
                         tolerance, max_perplexity_increase, conversion, milder):
    """Fills `report` with how LiteRT's logits compare with Keras's, and refuses
    a file that changed the computation or the perplexity too much.

    Sets `max_abs_difference`, `top1_agreement`, both perplexities,
    `num_tokens` and `perplexity_change_percent`, over the `real` positions.

    Args:
        conversion: What made the file, in the float32 error ("conversion").
        milder: The quantizations a too large perplexity rise suggests.

    Raises:
        ExportError: In float32, for logits further than `tolerance` times
            the largest Keras logit (at least 1).
        AccuracyDropError: For a perplexity rise above
            `max_perplexity_increase` percent.
    """
    difference = np.abs(keras_logits - litert_logits)[real]
    report.max_abs_difference = float(difference.max())
    report.top1_agreement = float(
        np.mean(keras_logits.argmax(-1)[real] == litert_logits.argmax(-1)[real])
    )
    report.keras_perplexity, report.num_tokens = token_perplexity(keras_logits, token_ids, real)
    report.litert_perplexity, _ = token_perplexity(litert_logits, token_ids, real)
    report.perplexity_change_percent = 100.0 * (
        report.litert_perplexity / report.keras_perplexity - 1.0
    )
    scale = max(1.0, float(np.abs(keras_logits[real]).max()))
    if quantization == "float32" and report.max_abs_difference > tolerance * scale:
        raise ExportError(
            f"The float32 LiteRT logits differ from Keras by {report.max_abs_difference:.3g} "
            f"> {tolerance:g} x {scale:.3g}: the {conversion} changed the model's "
            "computation. Nothing was written.",
            report=report,
        )
    if (
        max_perplexity_increase is not None
        and report.perplexity_change_percent > max_perplexity_increase
    ):
        raise AccuracyDropError(
            f"The {quantization} LiteRT model's perplexity is {report.litert_perplexity:.4g} "
            f"against Keras's {report.keras_perplexity:.4g} "
            f"({report.perplexity_change_percent:+.2f} %), more than "
            f"max_perplexity_increase={max_perplexity_increase}. Nothing was written. "
            f"Try a milder quantization ({milder}).",
            report=report,
        )


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


def keras_token_logits(model, token_ids, padding_mask):
    """The Keras causal LM's float32 logits `[batch, length, vocabulary]` for
    `token_ids` and `padding_mask` (`check_token_data`'s), `KERAS_BATCH_SIZE`
    sequences at a time."""
    outputs = []
    for start in range(0, len(token_ids), KERAS_BATCH_SIZE):
        inputs = {
            TOKEN_IDS: token_ids[start : start + KERAS_BATCH_SIZE],
            PADDING_MASK: padding_mask[start : start + KERAS_BATCH_SIZE].astype(bool),
        }
        outputs.append(np.asarray(model(inputs, training=False), np.float32))
    logits = np.concatenate(outputs)
    if logits.ndim != 3 or logits.shape[:2] != token_ids.shape:
        raise ValueError(
            "A causal LM must map token ids [batch, length] to logits "
            f"[batch, length, vocabulary]. Received logits of shape {logits.shape} "
            f"for ids of shape {token_ids.shape}."
        )
    return logits


def check_finite_logits(keras_logits, litert_logits, quantization, where, report,
                        litert_hint=""):
    """Raises `ExportError` if any logit, Keras's or LiteRT's, is NaN or infinite.

    A non-finite Keras logit means the model itself is broken (NaN weights,
    say): exporting it would ship a model that predicts nothing. `where`
    ends the count of bad values (e.g. "of 640 on 5 sequences of length
    8"); `litert_hint` follows the LiteRT model's message.
    """
    counts = _nonfinite_counts(keras_logits)
    if counts:
        raise ExportError(
            f"The Keras model itself gives non-finite logits: {counts} {where}. Nothing was "
            "written: check its weights (a diverged training leaves NaN weights).",
            report=report,
        )
    counts = _nonfinite_counts(litert_logits)
    if counts:
        raise ExportError(
            f"The {quantization} LiteRT model gives non-finite logits where Keras's "
            f"are finite: {counts} {where}. "
            "Nothing was written." + (f" {litert_hint}" if litert_hint else ""),
            report=report,
        )


def _nonfinite_counts(logits):
    """"3 NaN and 1 infinite values" for the logits' bad values, or None."""
    broken = ~np.isfinite(logits)
    if not broken.any():
        return None
    nan = int(np.isnan(logits[broken]).sum())
    return f"{nan} NaN and {int(broken.sum()) - nan} infinite values"
