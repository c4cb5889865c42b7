"""Instruction data: JSONL prompt–response pairs, response-only masks, end
tokens, and the teacher's own tokens when its tokenizer differs."""

import gzip
import json

import numpy as np
import pytest
import tiny_tokenizers

from tf_distill import data as data_lib
from tf_distill.data import instructions


def _write(path, records):
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return str(path)


def _examples(count=10):
    return [{"prompt": f"Q{i}: 2+{i}?", "response": f"{2 + i}."} for i in range(count)]


def test_byte_level_examples_count_the_response_and_end_token_only(tmp_path):
    path = _write(tmp_path / "a.jsonl", [{"prompt": "ab", "response": "cd"}] * 10)
    data = data_lib.load_instructions(path, sequence_length=6)
    token_ids, labels, mask = data.windows["train"]
    # "ab" "cd" then the byte end token 0: ids a b c d 0, predicted from a b c d.
    np.testing.assert_array_equal(token_ids[0], [97, 98, 99, 100, 0, 0])
    np.testing.assert_array_equal(labels[0], [98, 99, 100, 0, 0, 0])
    np.testing.assert_array_equal(mask[0], [0, 1, 1, 1, 0, 0])
    # The prompt is real input; the end token (id 0 = the pad id) is a label
    # that counts, the padding after it is not input.
    np.testing.assert_array_equal(data.inputs("train")["padding_mask"][0],
                                  [1, 1, 1, 1, 0, 0])
    assert data.end_token_id == 0 and data.vocabulary_size == 256
    assert data.sizes == {"train": 8, "validation": 1, "test": 1}


def test_gpt2_end_token_equal_to_pad_is_told_apart_by_length(tmp_path):
    tokenizer = tiny_tokenizers.gpt2_tokenizer()
    path = _write(tmp_path / "a.jsonl", _examples())
    data = data_lib.load_instructions(path, tokenizer, sequence_length=24)
    end = tokenizer.end_token_id
    assert end == tokenizer.pad_token_id == data.end_token_id
    prompt = list(np.asarray(tokenizer("Q0: 2+0?")))
    response = list(np.asarray(tokenizer("2.")))
    length = 1 + len(prompt) + len(response)  # start token, prompt, response
    token_ids, labels, mask = (array[0] for array in data.windows["train"])
    np.testing.assert_array_equal(token_ids[:length], [end, *prompt, *response])
    np.testing.assert_array_equal(labels[:length], [*prompt, *response, end])
    assert mask.sum() == len(response) + 1 and mask[length - 1] == 1
    assert data.padding["train"][0].sum() == length


def test_bad_lines_are_named(tmp_path):
    cases = [
        ("not json", "line 2 is not JSON"),
        ({"prompt": "a"}, "line 2 must be a JSON object with a string 'prompt' and a string "
                          "'response'"),
        ({"prompt": "a", "response": 3}, "line 2 must be a JSON object"),
        ({"prompt": "a", "response": ""}, "line 2 has an empty 'response'"),
    ]
    for record, message in cases:
        path = _write(tmp_path / "bad.jsonl", [{"prompt": "a", "response": "b"}, record])
        with pytest.raises(ValueError, match=message):
            data_lib.load_instructions(path)


def test_too_long_examples_and_bad_end_tokens_are_refused_before_training(tmp_path):
    path = _write(tmp_path / "a.jsonl", _examples())
    with pytest.raises(ValueError, match=r"Example 0 is 11 tokens long.*sequence_length=8"):
        data_lib.load_instructions(path, sequence_length=8)
    with pytest.raises(ValueError, match=r"end_token_id.*\[0, 256\). Received: end_token_id=300"):
        data_lib.load_instructions(path, end_token_id=300)
    with pytest.raises(ValueError, match="Received: sequence_length=0"):
        data_lib.load_instructions(path, sequence_length=0)
    with pytest.raises(ValueError, match="no validation nor test example"):
        data_lib.load_instructions(_write(tmp_path / "one.jsonl", _examples(1)))


def test_gzipped_jsonl_and_custom_keys(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for i in range(10):
            handle.write(json.dumps({"instruction": f"say {i}", "output": str(i)}) + "\n")
    data = data_lib.load_instructions(str(path), sequence_length=12, prompt_key="instruction",
                                      response_key="output")
    assert data.windows["train"][2][0].sum() == 2  # one digit and the end token


def test_a_teacher_tokenizer_adds_its_tokens_and_their_alignment(tmp_path):
    path = _write(tmp_path / "a.jsonl", _examples())
    teacher_tokenizer = tiny_tokenizers.llama_tokenizer()
    data = data_lib.load_instructions(path, sequence_length=16, teacher_tokenizer=teacher_tokenizer,
                                      teacher_sequence_length=16)
    teacher = data.teacher_splits()
    assert teacher.vocabulary_size == teacher_tokenizer.vocabulary_size()
    assert teacher.end_token_id == teacher_tokenizer.end_token_id
    for split in ("train", "test"):
        student_mask = data.windows[split][2]
        teacher_mask = teacher.windows[split][2]
        alignment = data.alignment[split]
        for row in range(len(alignment)):
            aligned = alignment[row][alignment[row] >= 0]
            count = int(min(student_mask[row].sum(), teacher_mask[row].sum()))
            np.testing.assert_array_equal(aligned, np.flatnonzero(teacher_mask[row])[:count])
            np.testing.assert_array_equal(np.flatnonzero(alignment[row] >= 0),
                                          np.flatnonzero(student_mask[row])[:count])
    x, _, _ = next(iter(data.dataset("train", 4, shuffle=False, with_teacher=True)))
    assert set(x) == {"inputs", "teacher_inputs"}
    assert set(x["teacher_inputs"]) == {"token_ids", "padding_mask", "alignment"}
    x, _, _ = next(iter(data.dataset("train", 4, shuffle=False)))
    assert set(x) == {"token_ids", "padding_mask"}


def test_text_with_a_real_tokenizer_ends_each_file_with_its_end_token(tmp_path):
    tokenizer = tiny_tokenizers.llama_tokenizer()
    path = tmp_path / "a.txt"
    path.write_text("the license says the program is free software. " * 40)
    data = data_lib.load_text(str(path), sequence_length=16, tokenizer=tokenizer)
    assert data.vocabulary_size == tokenizer.vocabulary_size()
    token_ids, labels, mask = data.windows["test"]
    assert labels[mask > 0][-1] == tokenizer.end_token_id
    assert data.tokenizer.startswith("LlamaTokenizer:sha256:")
    assert data.fingerprint != data_lib.load_text(str(path), sequence_length=16).fingerprint


def test_alignment_hand_example():
    from tf_distill.language.alignment import response_alignment

    student = np.array([[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0]])
    teacher = np.array([[0, 0, 1, 1, 0], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(response_alignment(student, teacher),
                                  [[-1, 2, 3, -1, -1, -1], [-1, -1, 0, 1, -1, -1]])
    assert instructions.read_jsonl  # the public reader


def test_a_wordpiece_tokenizer_needs_its_end_token_named(tmp_path):
    import keras_hub

    vocabulary = ["[PAD]", "[UNK]", "[SEP]", "count", "from", "one", "two", "three", ":", "."]
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary)
    path = _write(tmp_path / "a.jsonl",
                  [{"prompt": "count from one :", "response": "two three ."}] * 10)
    with pytest.raises(ValueError, match="has no end token: give `end_token_id`"):
        data_lib.load_instructions(path, tokenizer, sequence_length=8)
    data = data_lib.load_instructions(path, tokenizer, sequence_length=8, end_token_id=2)
    token_ids, labels, mask = (array[0] for array in data.windows["train"])
    np.testing.assert_array_equal(token_ids, [3, 4, 5, 8, 6, 7, 9, 0])
    np.testing.assert_array_equal(labels, [4, 5, 8, 6, 7, 9, 2, 0])
    np.testing.assert_array_equal(mask, [0, 0, 0, 1, 1, 1, 1, 0])
