"""`load_text(source)`: a local text corpus as next-token windows for a causal LM.

Text is read as bytes and tokenized with KerasHub's `ByteTokenizer` (256
token ids, one per byte, no vocabulary file), so every machine can build the
same corpus from what it already has: the license texts under
`/usr/share/common-licenses` (the default) or the Python standard library's
sources (`"python-stdlib"`).

Each file is split by position, its first part for training, the next for
validation, the last for testing, and windows are cut inside each part: no
window crosses a split or a file. A window of `L` tokens is
`token_ids = ids[i:i+L]`, `labels = ids[i+1:i+L+1]`; the last window of a
part is usually shorter and is padded with 0 after its real positions, which
`padding_mask` (and the sample weight) mark as False (0).
"""

import dataclasses
import glob
import gzip
import hashlib
import os

import numpy as np

from tf_distill.backend import tf
from tf_distill.data import tokenization

DEFAULT_TEXT_SOURCE = "/usr/share/common-licenses"
PYTHON_STDLIB = "python-stdlib"
TEXT_SPLITS = ("train", "validation", "test")
# One token id per byte: the vocabulary of KerasHub's `ByteTokenizer`.
BYTE_VOCABULARY_SIZE = 256
PAD_ID = 0


@dataclasses.dataclass(eq=False, repr=False)
class TextSplits:
    """A tokenized corpus cut into next-token windows of `sequence_length`.

    Attributes:
        windows: `{split: (token_ids, labels, mask)}` for each of
            `"train"`, `"validation"`, `"test"`: int32 `[n, L]`, int32
            `[n, L]` and float32 `[n, L]` (1 for a real position, 0 for
            padding).
        sequence_length: `L`, the window length.
        vocabulary_size: The tokenizer's vocabulary size (256 for bytes).
        name: A short name of the corpus.
        fingerprint: `"text:sha256:..."` of the file names and bytes read:
            it changes when the corpus does (not with the split options).
        files: The files read, in order.
        padding: `{split: bool [n, L]}`, the real tokens of each window, or
            `None`: the positions `mask` keeps. Instruction data has both:
            a prompt's tokens are real but count in no loss.
        teacher: The same examples in the teacher's tokens (a `TextSplits`)
            when its tokenizer differs, or `None` (see `load_instructions`).
        alignment: `{split: int32 [n, L]}` with `teacher`: the teacher
            position aligned to each position (see
            `tf_distill.language.alignment.response_alignment`).
        tokenizer: The tokenizer's fingerprint (see
            `tf_distill.data.tokenization.tokenizer_fingerprint`), or
            `"bytes"`.
        end_token_id: The id that ends an example (or a file, for text read
            with a tokenizer that has one), or `None` (bytes).
    """

    windows: dict
    sequence_length: int
    vocabulary_size: int = BYTE_VOCABULARY_SIZE
    name: str = "text"
    fingerprint: str = ""
    files: tuple = ()
    padding: dict = None
    teacher: "TextSplits" = None
    alignment: dict = None
    tokenizer: str = "bytes"
    end_token_id: int = None

    def tokens(self, split):
        """The number of real (unpadded) label tokens in `split`."""
        return int(self.windows[_check_split(split)][2].sum())

    @property
    def sizes(self):
        """`{split: number of windows}`."""
        return {split: len(self.windows[split][0]) for split in TEXT_SPLITS}

    def inputs(self, split):
        """KerasHub's `{"token_ids", "padding_mask"}` for every window of `split`."""
        token_ids, _, mask = self.windows[_check_split(split)]
        padding = mask > 0 if self.padding is None else self.padding[split]
        return {"token_ids": token_ids, "padding_mask": padding}

    def teacher_splits(self):
        """What the teacher reads: the same examples in its own tokens when
        its tokenizer differs (to score the teacher), else `self`."""
        return self if self.teacher is None else self.teacher

    def model_inputs(self, split, with_teacher=False):
        """`inputs(split)`, wrapped with the teacher's own tokens and their
        alignment when `with_teacher` and the teacher tokenizes otherwise
        (see `tf_distill.batches.TEACHER_INPUTS`)."""
        inputs = self.inputs(split)
        if not with_teacher or self.teacher is None:
            return inputs
        return {"inputs": inputs, "teacher_inputs": {
            **self.teacher.inputs(split), "alignment": self.alignment[split]}}

    def dataset(self, split, batch_size, shuffle=None, seed=None, order=None,
                with_teacher=False):
        """A `tf.data.Dataset` of `(inputs, labels, sample_weight)` batches.

        `inputs` is `{"token_ids": int32 [b, L], "padding_mask": bool [b, L]}`,
        `labels` the next tokens `[b, L]` and `sample_weight` the float32 mask
        `[b, L]`, which keeps padding out of every loss.

        Args:
            split: `"train"`, `"validation"` or `"test"`.
            batch_size: Windows per batch.
            shuffle: Shuffle the windows, reshuffled each epoch; defaults to
                True for `"train"` only.
            seed: The shuffle's seed.
            order: A `tf_distill.callbacks.EpochOrder` (also passed to
                `fit`): the windows in its orders, so a `fit` resumed by
                `BackupAndRestore` sees the batches of one never
                interrupted. Replaces `seed`.
            with_teacher: Wrap the inputs with the teacher's own tokens when
                its tokenizer differs (for the `Distiller`; see
                `model_inputs`).
        """
        split = _check_split(split)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(
                f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}"
            )
        token_ids, labels, mask = self.windows[split]
        shuffle = (split == "train") if shuffle is None else shuffle
        inputs = self.model_inputs(split, with_teacher)
        if shuffle and order is not None:
            tensors = tf.nest.map_structure(tf.constant, (inputs, labels, mask))
            return order.indices(len(token_ids)).batch(batch_size).map(
                lambda index: tf.nest.map_structure(lambda t: tf.gather(t, index), tensors),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = tf.data.Dataset.from_tensor_slices((inputs, labels, mask))
        if shuffle:
            dataset = dataset.shuffle(max(len(token_ids), 1), seed=seed,
                                      reshuffle_each_iteration=True)
        return dataset.batch(batch_size)

    def __repr__(self):
        return (
            f"TextSplits(name={self.name!r}, sequence_length={self.sequence_length}, "
            f"windows={self.sizes}, fingerprint={self.fingerprint!r})"
        )


def _check_split(split):
    if split not in TEXT_SPLITS:
        raise ValueError(
            f"Invalid value for argument `split`. Expected one of {list(TEXT_SPLITS)}. "
            f"Received: split={split!r}"
        )
    return split


def text_files(source=DEFAULT_TEXT_SOURCE):
    """The files a text source names, sorted, each real file once.

    Args:
        source: A file, a folder (every file under it), a glob pattern
            (`"docs/**/*.md"`), or `"python-stdlib"` (the `*.py` files at the
            top of the standard library's folder).

    Raises:
        FileNotFoundError: if the source names no file.
    """
    if source == PYTHON_STDLIB:
        candidates = glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py"))
    else:
        path = os.path.expanduser(os.fspath(source))
        if os.path.isfile(path):
            candidates = [path]
        elif os.path.isdir(path):
            candidates = [os.path.join(folder, name)
                          for folder, _, names in os.walk(path) for name in names]
        else:
            candidates = glob.glob(path, recursive=True)
    files, seen = [], set()
    for name in sorted(candidates):
        real = os.path.realpath(name)
        if real in seen or not os.path.isfile(real):
            continue  # `GPL` links to `GPL-3`: read once
        seen.add(real)
        files.append(name)
    if not files:
        raise FileNotFoundError(
            f"The text source names no file. Expected a file, a folder, a glob pattern "
            f"or {PYTHON_STDLIB!r}. Received: source={source!r}"
        )
    return files


_GZIP_MAGIC = b"\x1f\x8b"


def read_text_file(path, max_bytes=None):
    """The bytes of a UTF-8 text file, decompressed if it is gzipped.

    Args:
        path: The file.
        max_bytes: Keep only its first `max_bytes` (decompressed) bytes.

    Raises:
        ValueError: if the bytes are not UTF-8 text, naming the file and the
            first bad byte (a binary file would otherwise train the model on
            replacement characters).
    """
    with open(path, "rb") as handle:
        compressed = handle.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read(max_bytes) if max_bytes else handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"Cannot read the gzipped text file {path!r}: {error}") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        # A character cut by `max_bytes` at the very end is not an error.
        cut = max_bytes and len(data) == max_bytes and error.start >= len(data) - 3
        if not (cut and error.reason == "unexpected end of data"):
            raise ValueError(
                f"Text files must be UTF-8 text (gzipped or not). {path!r} is not: byte "
                f"{error.start} ({data[error.start:error.start + 1]!r}) is {error.reason}."
            ) from None
    return data


def tokenize(data, lowercase=False, tokenizer=None):
    """Token ids of `data` (bytes): with `tokenizer` (any KerasHub tokenizer),
    else byte-level with KerasHub's `ByteTokenizer`."""
    text = data.decode("utf-8", errors="replace")
    if tokenizer is None:
        tokenizer = tokenization.byte_tokenizer(lowercase=lowercase)
    elif lowercase:
        text = text.lower()
    # Decoded as UTF-8 with errors replaced, then re-encoded by the tokenizer:
    # the tokenizer sees text, as it would at inference.
    return tokenization.encode(tokenizer, text)


def split_by_position(length, validation_fraction, test_fraction):
    """`[(start, end)]` of train, validation and test in a run of `length` tokens."""
    train_end = int(round(length * (1.0 - validation_fraction - test_fraction)))
    validation_end = int(round(length * (1.0 - test_fraction)))
    return [(0, train_end), (train_end, validation_end), (validation_end, length)]


def make_windows(ids, sequence_length, stride=None):
    """Next-token windows over one run of ids, the last one padded.

    Window `k` starts at `i = k · stride`: `token_ids = ids[i:i+L]`,
    `labels = ids[i+1:i+L+1]`. Every one of the `len(ids) - 1` labels falls
    in some window (exactly one when `stride == L`).

    Returns:
        `(token_ids, labels, mask)`: int32 `[n, L]`, int32 `[n, L]`,
        float32 `[n, L]`.
    """
    stride = stride or sequence_length
    pairs = len(ids) - 1
    starts = list(range(0, max(pairs, 0), stride))
    # Stop at the first window that reaches the end: later ones would repeat it.
    for index, start in enumerate(starts):
        if start + sequence_length >= pairs:
            starts = starts[: index + 1]
            break
    token_ids = np.full((len(starts), sequence_length), PAD_ID, np.int32)
    labels = np.full((len(starts), sequence_length), PAD_ID, np.int32)
    mask = np.zeros((len(starts), sequence_length), np.float32)
    for row, start in enumerate(starts):
        valid = min(sequence_length, pairs - start)
        token_ids[row, :valid] = ids[start : start + valid]
        labels[row, :valid] = ids[start + 1 : start + 1 + valid]
        mask[row, :valid] = 1.0
    return token_ids, labels, mask


def check_fraction(argument, value):
    """Raises `ValueError` unless `value` is a number in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(
            f"`{argument}` must be a number in (0, 1). Received: {argument}={value!r}"
        )


def load_text(
    source=DEFAULT_TEXT_SOURCE,
    *,
    sequence_length=64,
    validation_fraction=0.1,
    test_fraction=0.1,
    train_stride=None,
    max_bytes_per_file=None,
    lowercase=False,
    name=None,
    tokenizer=None,
) -> TextSplits:
    """Reads a local text corpus as byte-level next-token windows.

    Args:
        source: A file, a folder, a glob pattern or `"python-stdlib"` (see
            `text_files`). Defaults to `/usr/share/common-licenses`.
        sequence_length: `L`, the tokens per window.
        validation_fraction, test_fraction: The share of each file (by
            position, at its end) for validation and for testing.
        train_stride: Distance between training windows' starts (`L` by
            default; smaller strides overlap them). Validation and test
            windows never overlap.
        max_bytes_per_file: Keep only the start of each file (for quick runs).
        lowercase: Lowercase the text before tokenizing.
        name: The corpus's name in reports (by default the source's).
        tokenizer: A KerasHub tokenizer (a preset's BPE, SentencePiece or
            WordPiece tokenizer); byte-level (`ByteTokenizer`) when `None`.
            Each file's text ends with the tokenizer's end token (none for
            bytes).

    Gzipped files (`.gz`, or any file starting with gzip's magic number) are
    read decompressed; every file must be UTF-8 text.

    Returns:
        A `TextSplits`.

    Raises:
        ValueError: for an invalid option, a file that is not UTF-8 text
            (naming it), or a corpus too small to give every split a window.
        FileNotFoundError: if the source names no file.

    Example:

    >>> corpus = tf_distill.data.load_text(sequence_length=64)
    >>> train = corpus.dataset("train", batch_size=32, seed=0)
    """
    for argument, value in (("sequence_length", sequence_length),
                            ("train_stride", train_stride),
                            ("max_bytes_per_file", max_bytes_per_file)):
        if value is None and argument != "sequence_length":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"`{argument}` must be a positive integer. Received: {argument}={value!r}"
            )
    check_fraction("validation_fraction", validation_fraction)
    check_fraction("test_fraction", test_fraction)
    if validation_fraction + test_fraction >= 1:
        raise ValueError(
            "`validation_fraction + test_fraction` must be < 1 (training needs text). "
            f"Received: validation_fraction={validation_fraction}, "
            f"test_fraction={test_fraction}"
        )
    files = text_files(source)
    digest = hashlib.sha256()
    parts = {split: [] for split in TEXT_SPLITS}
    root = os.path.commonpath([os.path.abspath(f) for f in files]) if len(files) > 1 else None
    for path in files:
        data = read_text_file(path, max_bytes_per_file)
        relative = os.path.relpath(path, root) if root else os.path.basename(path)
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
        ids = tokenize(data, lowercase=lowercase, tokenizer=tokenizer)
        if tokenizer is not None and getattr(tokenizer, "end_token_id", None) is not None:
            ids = np.append(ids, np.int32(tokenizer.end_token_id))
        bounds = split_by_position(len(ids), validation_fraction, test_fraction)
        for split, (start, end) in zip(TEXT_SPLITS, bounds):
            stride = train_stride if split == "train" else None
            parts[split].append(make_windows(ids[start:end], sequence_length, stride))
    windows = {split: tuple(np.concatenate(arrays) for arrays in zip(*parts[split]))
               for split in TEXT_SPLITS}
    empty = [split for split in TEXT_SPLITS if len(windows[split][0]) == 0]
    if empty:
        raise ValueError(
            f"The text source is too small: no {' nor '.join(empty)} window of "
            f"{sequence_length} tokens. Use more text or larger fractions. "
            f"Received: source={source!r} ({len(files)} files)"
        )
    if name is None:
        name = PYTHON_STDLIB if source == PYTHON_STDLIB else (
            os.path.basename(os.path.normpath(os.fspath(source))) or "text")
    identity = "bytes"
    if tokenizer is not None:
        # The same text in other tokens is another corpus (byte-level
        # fingerprints stay those of earlier versions).
        identity = tokenization.tokenizer_fingerprint(tokenizer)
        digest.update(f"\0tokenizer\0{identity}".encode())
    return TextSplits(
        windows=windows,
        sequence_length=sequence_length,
        vocabulary_size=(BYTE_VOCABULARY_SIZE if tokenizer is None
                         else tokenization.vocabulary_size(tokenizer)),
        name=name,
        fingerprint=f"text:sha256:{digest.hexdigest()}",
        files=tuple(files),
        tokenizer=identity,
        end_token_id=None if tokenizer is None else getattr(tokenizer, "end_token_id", None),
    )

