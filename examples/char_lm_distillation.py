"""Token-level distillation of a character-level language model.

A 2-layer LSTM teacher is trained on local text (by default the license texts
under /usr/share/common-licenses); then a much smaller LSTM student is trained
twice from the same initial weights, for the same steps: alone, on the next
character, and distilled, with `tf_distill.Distiller` and `LogitsDistillation`
on the teacher's `[batch, time, vocab]` logits (forward KL, reverse KL or
generalized Jensen–Shannon, `--divergence`).

Each file is split by position (its first 80 % for training, the next 10 % for
validation, the last 10 % for testing), and windows are cut inside each part,
so no window sees text of another split. Windows hold `--seq-length`
characters, `inputs = text[i:i+L]` and `targets = text[i+1:i+L+1]`; the last
window of each part is usually shorter and is padded with `PAD_ID`. A
`[batch, time]` sample weight of 0 there keeps the padding out of every loss
(the Distiller treats a `[batch, time]` sample weight as a padding mask for
both the student's loss and the distillation loss) and out of the perplexity.

The score is the per-character perplexity on the test part,
`exp(Σ mask · CE / Σ mask)`: the exponential of the mean cross-entropy over
every real (unpadded) test character.

Usage:

    python examples/char_lm_distillation.py [--text PATH] [--fast]
        [--divergence kl_divergence|reverse_kl|jensen_shannon]

The last line printed is `RESULT {...}`, a JSON object with the perplexities.
"""

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tf_distill  # noqa: E402
from tf_distill.backend import keras  # noqa: E402
from tf_distill.backend import tf  # noqa: E402

DEFAULT_TEXT = "/usr/share/common-licenses"
PAD_ID = 0
UNKNOWN_ID = 1  # characters first seen outside the training part
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
DIVERGENCES = ("kl_divergence", "reverse_kl", "jensen_shannon")


# ---------------------------------------------------------------------------
# Data.


def read_texts(path, max_chars_per_file=None):
    """Reads the text files at `path` (a file, or every file under a folder).

    Files are read as UTF-8 (undecodable bytes replaced); each file is read
    once even when several names link to it (`GPL` → `GPL-3`). Empty files
    are skipped.

    Args:
        path: A text file or a folder.
        max_chars_per_file: Keep only the start of each file (for `--fast`).

    Returns:
        A list of `(name, text)` pairs, sorted by name.
    """
    if os.path.isfile(path):
        candidates = [path]
    elif os.path.isdir(path):
        candidates = []
        for folder, _, files in os.walk(path):
            candidates.extend(os.path.join(folder, name) for name in files)
    else:
        return []
    texts, seen = [], set()
    for name in sorted(candidates):
        real = os.path.realpath(name)
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        with open(real, "rb") as handle:
            text = handle.read().decode("utf-8", errors="replace")
        if max_chars_per_file:
            text = text[:max_chars_per_file]
        if text:
            texts.append((name, text))
    return texts


def split_by_position(text, fractions=SPLIT_FRACTIONS):
    """Cuts `text` into consecutive parts of the given fractions."""
    bounds = np.round(np.cumsum((0.0,) + tuple(fractions)) * len(text)).astype(int)
    return [text[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def build_vocabulary(texts):
    """Maps each character of `texts` to an id; 0 and 1 are padding and unknown."""
    characters = sorted(set("".join(texts)))
    return {character: index + 2 for index, character in enumerate(characters)}


def encode(text, vocabulary):
    return np.array([vocabulary.get(c, UNKNOWN_ID) for c in text], np.int32)


def make_windows(ids, seq_length, stride=None):
    """Next-character windows over one run of ids, the last one padded.

    Window `k` starts at `i = k · stride`: `inputs = ids[i:i+L]`,
    `targets = ids[i+1:i+L+1]`. Every one of the `len(ids) - 1` targets
    falls in some window (exactly one when `stride == L`); the last window
    is padded with `PAD_ID` after its real positions.

    Args:
        ids: 1-D int array.
        seq_length: `L`, the window length.
        stride: Distance between window starts; defaults to `L`.

    Returns:
        `(inputs, targets, mask)`: int32 `[n, L]`, int32 `[n, L]` and
        float32 `[n, L]` (1 for real positions, 0 for padding).
    """
    stride = stride or seq_length
    inputs, targets, mask = [], [], []
    pairs = len(ids) - 1  # (input, target) positions in this run
    start = 0
    while start < pairs:
        valid = min(seq_length, pairs - start)
        row_inputs = np.full(seq_length, PAD_ID, np.int32)
        row_targets = np.full(seq_length, PAD_ID, np.int32)
        row_inputs[:valid] = ids[start : start + valid]
        row_targets[:valid] = ids[start + 1 : start + 1 + valid]
        inputs.append(row_inputs)
        targets.append(row_targets)
        mask.append((np.arange(seq_length) < valid).astype(np.float32))
        if start + seq_length >= pairs:
            break
        start += stride
    if not inputs:
        empty = np.zeros((0, seq_length), np.int32)
        return empty, empty, np.zeros((0, seq_length), np.float32)
    return np.stack(inputs), np.stack(targets), np.stack(mask)


def load_data(texts, seq_length, train_stride=None):
    """Splits each text by position, builds the vocabulary, cuts windows.

    Returns:
        `(splits, vocabulary)`: `splits[name] = (inputs, targets, mask)` for
        each of `SPLITS`; the vocabulary comes from the training parts only.
    """
    parts = [split_by_position(text) for _, text in texts]
    vocabulary = build_vocabulary([train for train, _, _ in parts])
    splits = {}
    for index, name in enumerate(SPLITS):
        stride = train_stride if name == "train" else seq_length
        windows = [
            make_windows(encode(part[index], vocabulary), seq_length, stride) for part in parts
        ]
        splits[name] = tuple(np.concatenate(arrays) for arrays in zip(*windows))
    return splits, vocabulary


def training_batches(data, batch_size, seed):
    """`(inputs, targets, mask)` batches, reshuffled each epoch.

    The order depends only on `seed` and TensorFlow's global seed, so two
    students trained after `keras.utils.set_random_seed(s)` see the same
    batches in the same order.
    """
    dataset = tf.data.Dataset.from_tensor_slices(data)
    dataset = dataset.shuffle(len(data[0]), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size)


# ---------------------------------------------------------------------------
# Models.


def unigram_log_probabilities(targets, mask, vocab_size):
    """Log-frequencies of the training targets, with add-one smoothing."""
    counts = np.bincount(targets[mask > 0], minlength=vocab_size).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


def make_language_model(name, vocab_size, embedding_dim, units, output_bias):
    """Embedding → stacked LSTMs → Dense logits `[batch, time, vocab]`.

    The output bias starts at the training set's log unigram frequencies, so
    training starts from the unigram model instead of the uniform one (a
    short budget is then spent on context, not on learning letter counts).
    """
    inputs = keras.Input((None,), dtype="int32", name=f"{name}_characters")
    hidden = keras.layers.Embedding(vocab_size, embedding_dim, name=f"{name}_embedding")(inputs)
    for index, width in enumerate(units):
        hidden = keras.layers.LSTM(width, return_sequences=True, name=f"{name}_lstm_{index}")(
            hidden
        )
    logits = keras.layers.Dense(
        vocab_size,
        bias_initializer=keras.initializers.Constant(output_bias),
        name=f"{name}_logits",
    )(hidden)
    return keras.Model(inputs, logits, name=name)


def make_optimizer(learning_rate):
    # Clipping, as usual for LSTM language models: rare large gradients
    # otherwise undo a few steps' progress.
    return keras.optimizers.Adam(learning_rate, clipnorm=1.0)


# ---------------------------------------------------------------------------
# Evaluation.


def masked_crossentropy(logits, targets, mask):
    """`(Σ mask · CE, Σ mask)` of logits `[n, L, V]` against targets `[n, L]`."""
    logits = np.asarray(logits, np.float64)
    logits = logits - logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    crossentropy = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return float((crossentropy * mask).sum()), float(mask.sum())


def perplexity(model, data, batch_size):
    """Per-character perplexity `exp(Σ mask · CE / Σ mask)` on `data`."""
    inputs, targets, mask = data
    logits = model.predict(inputs, batch_size=batch_size, verbose=0)
    total, count = masked_crossentropy(logits, targets, mask)
    return math.exp(total / count)


# ---------------------------------------------------------------------------
# Main.


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--text", default=DEFAULT_TEXT, help="a text file or a folder of text files"
    )
    parser.add_argument("--divergence", choices=DIVERGENCES, default="kl_divergence")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.5, help="for jensen_shannon")
    parser.add_argument(
        "--student-loss-weight",
        type=float,
        default=0.5,
        help="α: weight of the student's loss on the next character",
    )
    parser.add_argument("--seq-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--teacher-units", type=int, default=192)
    parser.add_argument("--student-units", type=int, default=48)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--student-epochs", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fast",
        action="store_true",
        help="tiny run for tests: the first 1,500 characters of each file, small "
        "models, 1 epoch each",
    )
    args = parser.parse_args(argv)
    args.max_chars_per_file = None
    if args.fast:
        args.max_chars_per_file = 1500
        args.seq_length = 32
        args.batch_size = 16
        args.teacher_units = 64
        args.student_units = 16
        args.teacher_epochs = args.student_epochs = 1
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    texts = read_texts(args.text, args.max_chars_per_file)
    if not texts:
        sys.exit(
            f"No text found at {args.text!r}. Pass --text with a text file or a "
            "folder of text files."
        )
    splits, vocabulary = load_data(texts, args.seq_length)
    vocab_size = len(vocabulary) + 2
    train, validation, test = (splits[name] for name in SPLITS)
    if min(len(splits[name][0]) for name in SPLITS) == 0:
        sys.exit(f"The text at {args.text!r} is too short to split into windows.")
    print(
        f"{len(texts)} files, {sum(len(t) for _, t in texts):,} characters, "
        f"vocabulary {vocab_size} (with padding and unknown)"
    )
    for name in SPLITS:
        inputs, _, mask = splits[name]
        print(
            f"  {name:10s} {len(inputs):5d} windows of {args.seq_length}, "
            f"{int((mask.min(axis=1) == 0).sum())} padded, {int(mask.sum()):,} characters"
        )

    keras.utils.set_random_seed(args.seed)
    output_bias = unigram_log_probabilities(train[1], train[2], vocab_size)
    # `training_batches` shuffles and batches: fit must do neither.
    fit_options = dict(shuffle=False, verbose=0 if args.fast else 2)
    if not args.fast:
        # Validation loss per epoch, to watch for overfitting (`--fast` skips
        # it: tracing the evaluation step costs more than its run).
        fit_options["validation_data"] = validation

    teacher = make_language_model(
        "teacher", vocab_size, 64, [args.teacher_units, args.teacher_units], output_bias
    )
    teacher.compile(
        optimizer=make_optimizer(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    print(f"\nTeacher ({teacher.count_params():,} parameters)")
    teacher.fit(
        training_batches(train, args.batch_size, args.seed),
        epochs=args.teacher_epochs,
        **fit_options,
    )

    # One initial student, copied: the two students differ only in training.
    student = make_language_model("student", vocab_size, 16, [args.student_units], output_bias)
    initial_weights = student.get_weights()

    def fresh_student():
        copy = keras.models.clone_model(student)
        copy.set_weights(initial_weights)
        return copy

    print(f"\nStudent alone ({student.count_params():,} parameters)")
    keras.utils.set_random_seed(args.seed + 1)  # the same batch order for both
    student_alone = fresh_student()
    student_alone.compile(
        optimizer=make_optimizer(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    student_alone.fit(
        training_batches(train, args.batch_size, args.seed + 1),
        epochs=args.student_epochs,
        **fit_options,
    )

    print(f"\nStudent distilled ({args.divergence}, T={args.temperature:g})")
    keras.utils.set_random_seed(args.seed + 1)
    distiller = tf_distill.Distiller(
        teacher=teacher,
        student=fresh_student(),
        distillation_losses=tf_distill.LogitsDistillation(
            temperature=args.temperature, loss=args.divergence, beta=args.beta
        ),
        student_loss_weight=args.student_loss_weight,
    )
    distiller.compile(
        optimizer=make_optimizer(args.learning_rate), loss="sparse_categorical_crossentropy"
    )
    # The [batch, time] sample weight (each batch's third element) is the
    # padding mask of both the student's loss and the distillation loss.
    distiller.fit(
        training_batches(train, args.batch_size, args.seed + 1),
        epochs=args.student_epochs,
        **fit_options,
    )

    models = {
        "teacher": teacher,
        "student_alone": student_alone,
        "student_distilled": distiller.student,
    }
    test_perplexity, validation_perplexity = {}, {}
    for name, model in models.items():
        test_perplexity[name] = perplexity(model, test, args.batch_size)
        validation_perplexity[name] = perplexity(model, validation, args.batch_size)
    # The baseline every model starts near: the training letter frequencies.
    unigram = math.exp(-(output_bias[test[1]] * test[2]).sum() / test[2].sum())

    print(f"\nPer-character perplexity (unigram baseline: test {unigram:.3f})")
    print(f"{'model':18s} {'parameters':>10s} {'validation':>10s} {'test':>8s}")
    for name, model in models.items():
        print(
            f"{name:18s} {model.count_params():10,d} "
            f"{validation_perplexity[name]:10.3f} {test_perplexity[name]:8.3f}"
        )
    result = {
        "example": "char_lm_distillation",
        "text": args.text,
        "files": len(texts),
        "vocab_size": vocab_size,
        "seq_length": args.seq_length,
        "windows": {name: int(len(splits[name][0])) for name in SPLITS},
        "padded_windows": {name: int((splits[name][2].min(axis=1) == 0).sum()) for name in SPLITS},
        "test_characters": int(test[2].sum()),
        "divergence": args.divergence,
        "temperature": args.temperature,
        "student_loss_weight": args.student_loss_weight,
        "teacher_epochs": args.teacher_epochs,
        "student_epochs": args.student_epochs,
        "parameters": {name: int(model.count_params()) for name, model in models.items()},
        "unigram_perplexity": round(unigram, 4),
        "validation_perplexity": {k: round(v, 4) for k, v in validation_perplexity.items()},
        "test_perplexity": {k: round(v, 4) for k, v in test_perplexity.items()},
        "seconds": round(time.time() - started, 1),
    }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
