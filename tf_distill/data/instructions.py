"""`load_instructions(path, tokenizer)`: prompt–response pairs for a causal LM.

Instruction data is a JSONL file (gzipped or not), one JSON object per line
with a prompt and a response:

    {"prompt": "Translate to French: cat", "response": "chat"}

Each example becomes one sequence, `[start] prompt response end`, and its
next-token labels. Only the labels that are response tokens, the end token
included, count in the losses and metrics (the loss mask); the prompt's
tokens are real (in `padding_mask`) but count in none. Padding follows the
end token; its positions are told apart by length, not by id, so a pad id
equal to the end id (GPT-2's `<|endoftext|>`, the byte tokenizer's 0) is
handled. Examples are split by position in the file: the first ones for
training, then validation, then test.

With a `teacher_tokenizer` that differs from the student's, each example is
tokenized by both, and the batches carry the teacher's own tokens with the
alignment of its response positions to the student's (Universal Logit
Distillation, Boizard et al. 2024; see `tf_distill.language.alignment`).
"""

import dataclasses
import hashlib
import json
import os

import numpy as np

from tf_distill.data import tokenization
from tf_distill.data.text import TEXT_SPLITS
from tf_distill.data.text import TextSplits
from tf_distill.data.text import check_fraction
from tf_distill.data.text import read_text_file
from tf_distill.data.text import split_by_position
from tf_distill.language.alignment import response_alignment
from tf_distill.validation import check_positive_integer


def read_jsonl(path, prompt_key="prompt", response_key="response", data=None):
    """The `(prompt, response)` pairs of a JSONL file, in order.

    Blank lines are skipped. `data`, the file's bytes when the caller has
    read them already (see `read_text_file`), saves reading it again.

    Raises:
        ValueError: naming the file and line, for a line that is not a JSON
            object with string `prompt_key` and `response_key` (the
            response not empty), or a file without any example.
    """
    text = (read_text_file(path) if data is None else data).decode("utf-8")
    examples = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path!r}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where} is not JSON: {error.msg}. Received: {line[:80]!r}") from None
        if not isinstance(record, dict) or not all(
            isinstance(record.get(key), str) for key in (prompt_key, response_key)
        ):
            raise ValueError(
                f"{where} must be a JSON object with a string {prompt_key!r} and a string "
                f"{response_key!r}. Received: {line[:80]!r}"
            )
        if not record[response_key]:
            raise ValueError(f"{where} has an empty {response_key!r}: nothing to learn.")
        examples.append((record[prompt_key], record[response_key]))
    if not examples:
        raise ValueError(f"{path!r} holds no example (one JSON object per line).")
    return examples


def encode_examples(examples, tokenizer, sequence_length, end_token_id=None,
                    argument="sequence_length"):
    """Token ids, labels, loss mask and padding mask of `(prompt, response)` pairs.

    Each sequence is `[start] prompt response end` (the start token when
    the tokenizer has one), then padding.

    Args:
        examples: `(prompt, response)` strings.
        tokenizer: A KerasHub tokenizer.
        sequence_length: `L`, the positions per sequence; an example longer
            than `L + 1` tokens is an error.
        end_token_id: The id that ends a response (see
            `tf_distill.data.tokenization.end_token_id`).
        argument: The length's name in error messages.

    Returns:
        `(token_ids, labels, mask, padding_mask)`: int32, int32, float32,
        bool, each `[n, L]`. `mask` is 1 where the label is a response
        token or the end token.

    Raises:
        ValueError: for an example too long, naming it by index.
    """
    end = tokenization.end_token_id(tokenizer, end_token_id)
    start = tokenization.start_token_id(tokenizer)
    pad = tokenization.pad_token_id(tokenizer)
    count = len(examples)
    token_ids = np.full((count, sequence_length), pad, np.int32)
    labels = np.full((count, sequence_length), pad, np.int32)
    mask = np.zeros((count, sequence_length), np.float32)
    padding_mask = np.zeros((count, sequence_length), bool)
    for row, (prompt, response) in enumerate(examples):
        prompt_ids = tokenization.encode(tokenizer, prompt)
        if start is not None:
            prompt_ids = np.concatenate([[start], prompt_ids]).astype(np.int32)
        response_ids = tokenization.encode(tokenizer, response)
        ids = np.concatenate([prompt_ids, response_ids, [end]]).astype(np.int32)
        length = len(ids) - 1
        if length > sequence_length:
            raise ValueError(
                f"Example {row} is {len(ids)} tokens long with its prompt and end token, "
                f"more than `{argument}` + 1 allows: the model reads at most "
                f"{sequence_length} positions. Received: {argument}={sequence_length}"
            )
        token_ids[row, :length] = ids[:-1]
        labels[row, :length] = ids[1:]
        padding_mask[row, :length] = True
        # Position j predicts ids[j + 1]: a response token from j = P − 1 on.
        mask[row, len(prompt_ids) - 1 : length] = 1.0
    return token_ids, labels, mask, padding_mask


def _split(arrays, bounds):
    return {split: tuple(array[start:end] for array in arrays)
            for split, (start, end) in zip(TEXT_SPLITS, bounds)}


def _splits(examples, tokenizer, sequence_length, end_token_id, bounds, name, fingerprint,
            argument="sequence_length"):
    token_ids, labels, mask, padding = encode_examples(
        examples, tokenizer, sequence_length, end_token_id, argument)
    parts = _split((token_ids, labels, mask, padding), bounds)
    return TextSplits(
        windows={split: value[:3] for split, value in parts.items()},
        padding={split: value[3] for split, value in parts.items()},
        sequence_length=sequence_length,
        vocabulary_size=tokenization.vocabulary_size(tokenizer),
        name=name,
        fingerprint=fingerprint,
        tokenizer=tokenization.tokenizer_fingerprint(tokenizer),
        end_token_id=tokenization.end_token_id(tokenizer, end_token_id),
    )


def load_instructions(
    source,
    tokenizer=None,
    *,
    sequence_length=128,
    validation_fraction=0.1,
    test_fraction=0.1,
    prompt_key="prompt",
    response_key="response",
    end_token_id=None,
    teacher_tokenizer=None,
    teacher_sequence_length=None,
    teacher_end_token_id=None,
    name=None,
) -> TextSplits:
    """Reads a JSONL file of prompts and responses as training sequences.

    Args:
        source: A `.jsonl` file (or `.jsonl.gz`), one JSON object per line.
        tokenizer: The student's KerasHub tokenizer (a preset's, see
            `tf_distill.language.presets`); byte-level when `None`.
        sequence_length: `L`, the positions per sequence: the longest
            example (with its start and end tokens) must fit in `L + 1`.
        validation_fraction, test_fraction: The share of examples (the last
            ones in the file) for validation and for testing.
        prompt_key, response_key: The JSON keys of the prompt and response.
        end_token_id: The id that ends a response; the tokenizer's own by
            default (0 for bytes).
        teacher_tokenizer: The teacher's tokenizer when it differs from the
            student's: the batches then carry the teacher's own tokens (see
            `TextSplits.model_inputs`), for a cross-tokenizer loss such as
            `tf_distill.losses.UniversalLogitDistillation`.
        teacher_sequence_length: The teacher's `L` (`sequence_length` by
            default).
        teacher_end_token_id: The teacher's end token id.
        name: The data's name in reports.

    Returns:
        A `TextSplits` of one sequence per example, whose sample weight
        (its `mask`) keeps the response tokens only.

    Raises:
        ValueError: for a line without a prompt or response (naming it), an
            example longer than the sequence length, an end token outside
            the vocabulary, or too few examples for every split.

    Example:

    >>> data = load_instructions("train.jsonl", teacher.preprocessor.tokenizer,
    ...                          sequence_length=128)
    >>> distiller.fit(data.dataset("train", batch_size=8, seed=0), epochs=1)
    """
    check_positive_integer("sequence_length", sequence_length)
    if teacher_sequence_length is not None:
        check_positive_integer("teacher_sequence_length", teacher_sequence_length)
    check_fraction("validation_fraction", validation_fraction)
    check_fraction("test_fraction", test_fraction)
    if tokenizer is None:
        tokenizer = tokenization.byte_tokenizer()
    tokenization.end_token_id(tokenizer, end_token_id)  # Checked before reading.
    if teacher_tokenizer is not None:
        tokenization.end_token_id(teacher_tokenizer, teacher_end_token_id)
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The instruction data is not a file. Received: source={path!r}")
    raw = read_text_file(path)
    examples = read_jsonl(path, prompt_key, response_key, data=raw)
    bounds = split_by_position(len(examples), validation_fraction, test_fraction)
    empty = [split for split, (start, end) in zip(TEXT_SPLITS, bounds) if end <= start]
    if empty:
        raise ValueError(
            f"Too few examples for every split: no {' nor '.join(empty)} example among "
            f"{len(examples)}. Use more examples or larger fractions. Received: source={path!r}"
        )
    digest = hashlib.sha256(raw)
    digest.update(f"\0{prompt_key}\0{response_key}".encode())
    identity = f"instructions:sha256:{digest.hexdigest()}"
    name = name or os.path.basename(path)
    data = _splits(examples, tokenizer, sequence_length, end_token_id, bounds, name,
                   identity)
    if teacher_tokenizer is None:
        return data
    teacher = _splits(examples, teacher_tokenizer, teacher_sequence_length or sequence_length,
                      teacher_end_token_id, bounds, name, identity,
                      argument="teacher_sequence_length")
    alignment = {split: response_alignment(data.windows[split][2], teacher.windows[split][2])
                 for split in TEXT_SPLITS}
    return dataclasses.replace(data, teacher=teacher, alignment=alignment)
