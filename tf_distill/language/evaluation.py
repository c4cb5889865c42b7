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


def sample_continuations(model, token_ids, prompt_length, *, temperature=1.0, top_k=None,
                         seed=None, jit_compile=True):
    """Continues the first `prompt_length` tokens of each row with the model's samples.

    Sampling runs compiled, with KerasHub's samplers (`model.generate`).

    Args:
        model: A KerasHub `CausalLM` (without preprocessor).
        token_ids: int `[n, L]` windows; only their prompts are read.
        prompt_length: Tokens kept from each window.
        temperature: Softmax temperature of the samples.
        top_k: Sample among the `top_k` likeliest tokens (None: all of them).
        seed: The sampler's seed.
        jit_compile: Compile the sampling loop with XLA (else a TensorFlow
            graph: a `tf.while_loop`, still no Python step per token).

    Returns:
        int32 `[n, L]`: the prompts followed by `L - prompt_length` samples.
    """
    import keras_hub

    token_ids = np.asarray(token_ids, np.int32)
    length = token_ids.shape[1]
    if not 1 <= prompt_length < length:
        raise ValueError(
            f"`prompt_length` must be in [1, {length}) for windows of {length} tokens. "
            f"Received: prompt_length={prompt_length!r}"
        )
    prompts = np.zeros_like(token_ids)
    prompts[:, :prompt_length] = token_ids[:, :prompt_length]
    mask = np.zeros(token_ids.shape, bool)
    mask[:, :prompt_length] = True
    if top_k is None:
        sampler = keras_hub.samplers.RandomSampler(seed=seed, temperature=temperature)
    else:
        sampler = keras_hub.samplers.TopKSampler(k=top_k, seed=seed, temperature=temperature)
    # `generate` uses the model's compiled sampler; a model kept for training
    # gets its own compile state back from the caller (see the run).
    model.compile(sampler=sampler, jit_compile=jit_compile)
    outputs = model.generate({"token_ids": prompts, "padding_mask": mask},
                             stop_token_ids=None)
    return np.asarray(outputs["token_ids"], np.int32)


def teacher_nll_of_samples(teacher, samples, prompt_length, batch_size=32):
    """The teacher's mean NLL per sampled token (positions after the prompt).

    Args:
        teacher: The scoring causal LM.
        samples: int `[n, L]` from `sample_continuations`.
        prompt_length: The prompt's length; only later tokens are scored.
        batch_size: Rows per forward pass.
    """
    samples = np.asarray(samples, np.int32)
    inputs = samples[:, :-1]
    labels = samples[:, 1:]
    mask = np.zeros(labels.shape, np.float32)
    mask[:, prompt_length - 1 :] = 1.0  # label t+1 is sampled for t >= prompt - 1
    dataset = tf.data.Dataset.from_tensor_slices((
        {"token_ids": inputs, "padding_mask": np.ones(inputs.shape, bool)}, labels, mask,
    )).batch(batch_size)
    total, count = token_nll(teacher, dataset)
    return total / count
