"""KerasHub causal language models in the Distiller: inputs, masks and checks.

A `keras_hub.models.CausalLM` takes `{"token_ids", "padding_mask"}` and
returns logits `[batch, time, vocabulary]`; its labels are the next tokens
`[batch, time]`. The `Distiller` treats a `[batch, time]` sample weight as a
mask over positions (see `tf_distill.losses.labels.label_mask`), so the
padding mask of `x` becomes that weight when none is given: every token-level
term, the student's cross-entropy and each distillation loss, then skips the
padding. Teacher and student must share one tokenizer (or identical
vocabularies) and one vocabulary size; sequences must fit both models.
"""

import sys

from tf_distill.backend import tf

TOKEN_IDS = "token_ids"
PADDING_MASK = "padding_mask"


def is_token_batch(x):
    """Whether `x` is KerasHub's `{"token_ids", "padding_mask"}` dict."""
    return isinstance(x, dict) and TOKEN_IDS in x and PADDING_MASK in x


def is_causal_lm(model):
    """Whether `model` is a `keras_hub.models.CausalLM` (False without KerasHub)."""
    causal_lm = _causal_lm_class()
    return causal_lm is not None and isinstance(model, causal_lm)


def _causal_lm_class():
    # A model built by KerasHub means KerasHub is imported: the Distiller of
    # other models does not pay for importing it.
    keras_hub = sys.modules.get("keras_hub")
    return None if keras_hub is None else keras_hub.models.CausalLM


def vocabulary_size(model):
    """The number of token ids a causal LM scores, or `None` if unknown."""
    backbone = getattr(model, "backbone", None)
    size = getattr(backbone, "vocabulary_size", None)
    if size is None and getattr(model, "outputs", None):
        size = model.outputs[0].shape[-1]
    return None if size is None else int(size)


def max_sequence_length(model):
    """The longest sequence `model` accepts, or `None` when it has no limit.

    GPT-2's backbone has one (its learned position embedding); Gemma and
    Llama use rotary positions, limited only when `build_causal_lm` recorded
    `max_sequence_length` on the backbone.
    """
    backbone = getattr(model, "backbone", None)
    length = getattr(backbone, "max_sequence_length", None)
    return None if length is None else int(length)


def model_tokenizer(model):
    """The tokenizer of a causal LM's preprocessor, or `None` without one."""
    preprocessor = getattr(model, "preprocessor", None)
    return getattr(preprocessor, "tokenizer", None)


def _vocabulary(tokenizer):
    try:
        return list(tokenizer.get_vocabulary())
    except (AttributeError, NotImplementedError, ValueError, TypeError):
        return None


def check_tokenizers(teacher_tokenizer, student_tokenizer):
    """Raises `ValueError` unless both tokenizers map text to the same ids.

    Tokenizers of the same class and configuration agree; so do two of
    different classes whose vocabularies (`get_vocabulary()`) are identical.

    Raises:
        ValueError: in one line, naming both tokenizers.
    """
    if teacher_tokenizer is None or student_tokenizer is None:
        return
    teacher_vocabulary = _vocabulary(teacher_tokenizer)
    student_vocabulary = _vocabulary(student_tokenizer)
    if teacher_vocabulary is not None and teacher_vocabulary == student_vocabulary:
        return
    if teacher_vocabulary is None or student_vocabulary is None:
        teacher_config = {**teacher_tokenizer.get_config(), "name": None}
        student_config = {**student_tokenizer.get_config(), "name": None}
        if type(teacher_tokenizer) is type(student_tokenizer) and (
            teacher_config == student_config
        ):
            return
    raise ValueError(
        "The teacher and the student must share one tokenizer (or identical "
        f"vocabularies). Received: teacher tokenizer {type(teacher_tokenizer).__name__} "
        f"(vocabulary_size={teacher_tokenizer.vocabulary_size()}) and student "
        f"tokenizer {type(student_tokenizer).__name__} "
        f"(vocabulary_size={student_tokenizer.vocabulary_size()})"
    )


def is_cross_tokenizer(losses):
    """Whether every loss of `losses` compares models of different tokenizers
    (`tf_distill.losses.UniversalLogitDistillation`)."""
    return bool(losses) and all(getattr(loss, "cross_tokenizer", False) for loss in losses)


def check_causal_lms(teachers, student, losses=()):
    """Raises if the student and any teacher are causal LMs that cannot be compared.

    Args:
        teachers: `{name: model}`, the Distiller's teachers.
        student: The student model.
        losses: The distillation losses. When every one of them compares
            different tokenizers (see `is_cross_tokenizer`), tokenizers and
            vocabularies may differ.

    Returns:
        Whether a teacher's tokenizer differs from the student's (its
        batches must then carry the teacher's own tokens).

    Raises:
        ValueError: in one line, for tokenizers that differ (see
            `check_tokenizers`) or vocabulary sizes that differ, naming both,
            unless the losses compare different tokenizers.
    """
    if not is_causal_lm(student):
        return False
    differ = False
    for name, teacher in teachers.items():
        if not is_causal_lm(teacher):
            continue
        try:
            check_tokenizers(model_tokenizer(teacher), model_tokenizer(student))
            teacher_size, student_size = vocabulary_size(teacher), vocabulary_size(student)
            if None not in (teacher_size, student_size) and teacher_size != student_size:
                raise ValueError(
                    "The teacher and the student must have the same vocabulary. Received: "
                    f"teacher {name!r} with vocabulary_size={teacher_size} and student "
                    f"{student.name!r} with vocabulary_size={student_size}"
                )
        except ValueError as error:
            if not is_cross_tokenizer(losses):
                raise ValueError(
                    f"{error}. Teacher and student with different tokenizers need a "
                    "cross-tokenizer loss, such as 'uld' (Universal Logit Distillation)."
                ) from None
            differ = True
    return differ


def check_sequence_length(models, x):
    """Raises if `x`'s token ids are longer than a model's maximum length.

    Checked on the static shape (at trace time, before any work); a dynamic
    length is checked when the batch runs.

    Args:
        models: The models that will read `x`.
        x: A batch's model inputs (see `tf_distill.batches.unpack`); only
            `{"token_ids", ...}` dicts are checked.

    Raises:
        ValueError: naming the model, its maximum and the sequence length.
    """
    if not is_token_batch(x):
        return
    token_ids = x[TOKEN_IDS]
    length = token_ids.shape[-1]
    for model in models:
        limit = max_sequence_length(model)
        if limit is None:
            continue
        message = (
            f"The sequences are longer than model {model.name!r} accepts: "
            f"max_sequence_length={limit}. Received: sequence length {{}}"
        )
        if length is not None:
            if length > limit:
                raise ValueError(message.format(length))
        else:
            tf.debugging.assert_less_equal(
                tf.shape(token_ids)[-1], limit, message=message.format("(dynamic)")
            )


def padding_sample_weight(x, sample_weight):
    """The sample weight of a batch: `sample_weight`, else `x`'s padding mask.

    A `{"token_ids", "padding_mask"}` batch without sample weight is weighted
    by its padding mask (float32 `[batch, time]`), which the Distiller
    applies as a mask to every token-level term; anything else is returned
    unchanged. The last real position of `x` is scored too: its target is
    the token after it (an end-of-sequence token, as KerasHub's
    preprocessors append). `next_token_batch` gives the targets' own mask.
    """
    if sample_weight is not None or not is_token_batch(x):
        return sample_weight
    return tf.cast(x[PADDING_MASK], tf.float32)


def next_token_batch(token_ids, padding_mask=None):
    """Token ids to `(x, y, sample_weight)` for next-token training.

    The same split as KerasHub's `CausalLMPreprocessor`, for ids that are
    already tokenized: `x = {"token_ids": ids[:, :-1], "padding_mask":
    mask[:, :-1]}`, `y = ids[:, 1:]`, `sample_weight = mask[:, 1:]`.

    Args:
        token_ids: int `[batch, time + 1]`.
        padding_mask: bool or int `[batch, time + 1]`; all ones when `None`.

    Returns:
        `(x, y, sample_weight)`, with `sample_weight` float32 `[batch, time]`.
    """
    token_ids = tf.convert_to_tensor(token_ids)
    if padding_mask is None:
        padding_mask = tf.ones_like(token_ids, dtype=tf.bool)
    padding_mask = tf.cast(padding_mask, tf.bool)
    x = {TOKEN_IDS: token_ids[..., :-1], PADDING_MASK: padding_mask[..., :-1]}
    return x, token_ids[..., 1:], tf.cast(padding_mask[..., 1:], tf.float32)
