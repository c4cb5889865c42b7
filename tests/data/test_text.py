"""`tf_distill.data.load_text`: a local corpus as byte-level next-token windows."""

import numpy as np
import pytest

from tf_distill.data import TextSplits
from tf_distill.data import load_text
from tf_distill.data.text import make_windows
from tf_distill.data.text import text_files


def write_corpus(folder, texts):
    folder.mkdir(exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_bytes(text.encode("utf-8"))
    return folder


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus", {
        "a.txt": "abcdefghijklmnopqrstuvwxyz" * 4,  # 104 bytes
        "b.txt": "0123456789" * 10,  # 100 bytes
    })


def test_windows_are_next_token_pairs_with_padding():
    ids = np.arange(1, 12, dtype=np.int32)  # 11 ids: 10 (input, label) pairs
    token_ids, labels, mask = make_windows(ids, 4)
    np.testing.assert_array_equal(token_ids, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]])
    np.testing.assert_array_equal(labels, [[2, 3, 4, 5], [6, 7, 8, 9], [10, 11, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
    # A stride below L overlaps windows; the last one still ends at the text's end.
    token_ids, labels, mask = make_windows(ids, 4, stride=3)
    np.testing.assert_array_equal(token_ids[:, 0], [1, 4, 7])
    assert labels[-1][mask[-1] > 0][-1] == 11


def test_splits_by_position_and_no_window_crosses(corpus):
    splits = load_text(str(corpus), sequence_length=8, validation_fraction=0.2,
                       test_fraction=0.2)
    assert isinstance(splits, TextSplits)
    assert splits.vocabulary_size == 256
    # Every label of each split comes from that split's part of one file.
    a = np.frombuffer(("abcdefghijklmnopqrstuvwxyz" * 4).encode(), np.uint8)
    b = np.frombuffer(("0123456789" * 10).encode(), np.uint8)
    expected = {
        "train": np.concatenate([a[1:62], b[1:60]]),
        "validation": np.concatenate([a[63:83], b[61:80]]),
        "test": np.concatenate([a[84:104], b[81:100]]),
    }
    for split, labels in expected.items():
        _, split_labels, mask = splits.windows[split]
        np.testing.assert_array_equal(split_labels[mask > 0], labels)
        assert splits.tokens(split) == len(labels)
    token_ids, labels, mask = splits.windows["train"]
    np.testing.assert_array_equal(token_ids[:, 1:][mask[:, 1:] > 0],
                                  labels[:, :-1][mask[:, 1:] > 0])


def test_dataset_is_keras_hub_style(corpus):
    splits = load_text(str(corpus), sequence_length=8)
    inputs, labels, weights = next(iter(splits.dataset("validation", batch_size=3)))
    assert set(inputs) == {"token_ids", "padding_mask"}
    assert inputs["token_ids"].shape == (3, 8) and inputs["token_ids"].dtype.name == "int32"
    assert inputs["padding_mask"].dtype.name == "bool"
    assert labels.shape == (3, 8) and weights.dtype.name == "float32"
    np.testing.assert_array_equal(inputs["padding_mask"].numpy(), weights.numpy() > 0)
    first = splits.dataset("train", batch_size=4, seed=3)
    second = splits.dataset("train", batch_size=4, seed=3)
    np.testing.assert_array_equal(next(iter(first))[1], next(iter(second))[1])


def test_fingerprint_follows_content_not_options(corpus, tmp_path):
    one = load_text(str(corpus), sequence_length=8)
    assert one.fingerprint.startswith("text:sha256:")
    assert load_text(str(corpus), sequence_length=4).fingerprint == one.fingerprint
    (corpus / "b.txt").write_bytes(("0123456789" * 10).replace("5", "x").encode())
    assert load_text(str(corpus), sequence_length=8).fingerprint != one.fingerprint


def test_glob_and_file_sources(corpus):
    assert [f.rsplit("/", 1)[1] for f in text_files(str(corpus / "*.txt"))] == ["a.txt", "b.txt"]
    single = load_text(str(corpus / "a.txt"), sequence_length=8)
    assert single.files == (str(corpus / "a.txt"),)
    assert single.name == "a.txt"
    truncated = load_text(str(corpus), sequence_length=4, max_bytes_per_file=50)
    assert sum(truncated.tokens(s) for s in ("train", "validation", "test")) == 2 * (50 - 3)  # 3 labels lost at the splits' starts


@pytest.mark.parametrize("options, message", [
    ({"sequence_length": 0}, "`sequence_length` must be a positive integer"),
    ({"validation_fraction": 0.0}, "`validation_fraction` must be a number in (0, 1)"),
    ({"test_fraction": 0.5, "validation_fraction": 0.5}, "must be < 1"),
    ({"train_stride": 1.5}, "`train_stride` must be a positive integer"),
    ({"sequence_length": 8, "max_bytes_per_file": 5}, "too small: no"),
])
def test_bad_options_are_refused(corpus, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_text(str(corpus), **options)


def test_missing_source_and_bad_split(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="names no file"):
        load_text(str(tmp_path / "nothing*.txt"))
    with pytest.raises(ValueError, match="Expected one of"):
        load_text(str(corpus), sequence_length=8).dataset("dev", batch_size=2)


def test_a_gzipped_file_is_read_as_its_text_and_a_binary_one_is_refused(corpus, tmp_path):
    import gzip

    plain = load_text(str(corpus / "a.txt"), sequence_length=8)
    zipped = tmp_path / "a.txt.gz"
    zipped.write_bytes(gzip.compress((corpus / "a.txt").read_bytes()))
    read = load_text(str(zipped), sequence_length=8)
    for split in ("train", "validation", "test"):
        for ours, theirs in zip(read.windows[split], plain.windows[split]):
            np.testing.assert_array_equal(ours, theirs)
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"text, then \xff\xfe\x00 bytes that no UTF-8 text holds" * 20)
    with pytest.raises(ValueError, match=r"must be UTF-8 text .*weights\.bin' is not: byte 11"):
        load_text(str(binary), sequence_length=8)
    # A multi-byte character cut by `max_bytes_per_file` is no error.
    accented = tmp_path / "accented.txt"
    accented.write_text("é" * 400, encoding="utf-8")
    assert load_text(str(accented), sequence_length=8, max_bytes_per_file=101).windows
