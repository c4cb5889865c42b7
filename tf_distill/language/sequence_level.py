"""Sequence-level knowledge distillation of causal LMs.

Kim & Rush, "Sequence-Level Knowledge Distillation" (EMNLP 2016): the
teacher writes continuations of a data set's prompts once, and the student
is trained on them (with its label loss, alone or in a `Distiller`).
"""

import numpy as np

from tf_distill.backend import tf
from tf_distill.language import models as language_models
from tf_distill.language.models import PADDING_MASK
from tf_distill.language.models import TOKEN_IDS
from tf_distill.language.sampling import check_end_token_id
from tf_distill.language.sampling import check_sampling
from tf_distill.language.sampling import generate_continuations


def sequence_level_dataset(
    teacher,
    prompts,
    sequence_length,
    greedy=True,
    temperature=1.0,
    top_k=None,
    top_p=None,
    seed=0,
    end_token_id=None,
):
    """Sequence-level KD (Kim & Rush 2016): a data set of teacher continuations.

    The teacher continues each prompt to `sequence_length + 1` tokens
    (greedily, the approximation of beam search Kim & Rush found to work,
    or sampled), once; the student is then trained on those sequences with
    its label loss, e.g. `student.fit(dataset)` or a `Distiller`.

    Args:
        teacher: A causal LM (`{"token_ids", "padding_mask"}` -> logits).
        prompts: A `tf.data.Dataset` of int token-id batches `[batch, P]`
            (all real tokens), or an array `[examples, P]`.
        sequence_length: The training length `time`; `P <= time`.
        greedy: Take the teacher's most likely token; else sample with
            `temperature`, `top_k`, `top_p` and `seed`.
        end_token_id: Optional end token: a continuation stops at its first
            one, and the positions after it are padding (weight 0).

    The teacher decodes with its KV cache when it has one (a KerasHub
    `CausalLM`; see `tf_distill.language.sampling`).

    Returns:
        A `tf.data.Dataset` of `(x, y, sample_weight)` batches: `x` is
        `{"token_ids", "padding_mask"}` `[batch, time]`, `y` the next tokens,
        and `sample_weight` 1 on the positions predicting a teacher token.
    """
    check_sampling(temperature, top_k, top_p)
    check_end_token_id(end_token_id, language_models.vocabulary_size(teacher))
    if not isinstance(prompts, tf.data.Dataset):
        prompts = tf.data.Dataset.from_tensor_slices(np.asarray(prompts)).batch(32)
    language_models.check_sequence_length(
        [teacher], {TOKEN_IDS: tf.zeros([1, sequence_length + 1]), PADDING_MASK: None}
    )
    generate = tf.function(
        lambda ids, batch_seed, prompt_length: generate_continuations(
            teacher, ids, prompt_length, batch_seed, temperature, top_k, top_p, greedy,
            end_token_id=end_token_id,
        )
    )
    batches = []
    for index, prompt in enumerate(prompts):
        prompt = tf.convert_to_tensor(prompt)
        prompt_length = int(prompt.shape[1])
        if prompt_length > sequence_length:
            raise ValueError(
                "The prompts must not be longer than `sequence_length`. Received: prompt "
                f"length {prompt_length} and sequence_length={sequence_length}"
            )
        padding = tf.zeros([tf.shape(prompt)[0], sequence_length + 1 - prompt_length], prompt.dtype)
        ids = tf.concat([prompt, padding], axis=1)
        continuations = generate(ids, tf.constant([seed, index], tf.int64), prompt_length)
        x, y, _ = language_models.next_token_batch(
            continuations.token_ids, continuations.padding_mask
        )
        # Position t predicts token t + 1: the teacher's tokens are P ... time
        # (up to its first end token).
        mask = continuations.loss_mask[:, :-1]
        batches.append((x, y, mask))
    if not batches:
        raise ValueError("`prompts` is empty.")
    dataset = tf.data.Dataset.from_tensors(batches[0])
    for batch in batches[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(batch))
    return dataset
