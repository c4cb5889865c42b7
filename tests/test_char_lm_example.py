"""The character-level language-model example, and token-level distillation.

`examples/char_lm_distillation.py` runs as a process with `--fast` and its
`RESULT` line is checked; its data helpers (windows, padding masks, the split
by position) are checked in process. The Distiller's reverse KL and
Jensen–Shannon on `[batch, time, vocab]` logits with a padding mask are
compared with NumPy (tests/distillers/test_distiller.py covers the forward KL), and a
training step is shown to ignore whatever the padding holds.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import numpy_reference as ref
import pytest

from tf_distill import Distiller
from tf_distill import LogitsDistillation
from tf_distill.backend import keras

pytestmark = pytest.mark.slow  # the example, run end to end

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "char_lm_distillation.py")
LICENSES = "/usr/share/common-licenses"


def load_example():
    spec = importlib.util.spec_from_file_location("char_lm_distillation", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


# ---------------------------------------------------------------------------
# The example, end to end (its tests come last: the run overlaps the others).


@pytest.fixture(scope="module", autouse=True)
def fast_process(request, tmp_path_factory):
    """Starts `--fast` as soon as the module's first test runs, if a selected
    test reads its result: the run overlaps with the in-process tests.

    Yields `(process, stdout_path, stderr_path)`, or None. The output goes to
    files, which (unlike pipes) cannot fill up and stall the run.
    """
    selected = [item for item in request.session.items if item.module is request.module]
    if not any("fast_result" in item.fixturenames for item in selected):
        yield None
        return
    if not os.path.isdir(LICENSES) or not os.listdir(LICENSES):
        yield None
        return
    folder = tmp_path_factory.mktemp("char_lm_fast")
    stdout_path, stderr_path = folder / "stdout.txt", folder / "stderr.txt"
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, EXAMPLE, "--fast"],
            cwd=REPO,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
            stdout=stdout,
            stderr=stderr,
        )
    yield process, stdout_path, stderr_path
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def fast_result(fast_process):
    if fast_process is None:
        pytest.skip(f"no license texts under {LICENSES}")
    process, stdout_path, stderr_path = fast_process
    process.wait(timeout=300)
    stdout = stdout_path.read_text()
    assert process.returncode == 0, stderr_path.read_text()[-3000:]
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, stdout[-3000:]
    return json.loads(lines[0][len("RESULT ") :])


# ---------------------------------------------------------------------------
# The example's data helpers and errors.


def test_windows_predict_the_next_character_and_pad_the_last():
    ids = np.arange(10, 21, dtype=np.int32)  # 11 ids: 10 (input, target) pairs
    inputs, targets, mask = example.make_windows(ids, seq_length=4)
    np.testing.assert_array_equal(inputs, [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19, 0, 0]])
    np.testing.assert_array_equal(targets, [[11, 12, 13, 14], [15, 16, 17, 18], [19, 20, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
    assert example.PAD_ID == 0
    # A run that fills its windows exactly has no padded window.
    inputs, targets, mask = example.make_windows(ids[:9], seq_length=4)
    assert inputs.shape == (2, 4) and mask.min() == 1.0
    # Overlapping windows (a stride below L) still end with the last target.
    inputs, targets, mask = example.make_windows(ids, seq_length=4, stride=3)
    np.testing.assert_array_equal(inputs[:, 0], [10, 13, 16])
    assert targets[mask > 0][-1] == 20
    # Too short to predict anything.
    inputs, targets, mask = example.make_windows(ids[:1], seq_length=4)
    assert inputs.shape == targets.shape == mask.shape == (0, 4)


def test_splits_by_position_without_leakage(tmp_path):
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefgh"))
    texts = {
        "one.txt": "".join(rng.choice(letters, 503)),
        "two.txt": "".join(rng.choice(letters, 260)) + "Z",  # Z only in the test part
    }
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    os.symlink(tmp_path / "one.txt", tmp_path / "alias.txt")  # read once
    loaded = example.read_texts(str(tmp_path))
    assert [os.path.basename(name) for name, _ in loaded] == ["alias.txt", "two.txt"]
    assert [text for _, text in loaded] == [texts["one.txt"], texts["two.txt"]]

    seq_length = 16
    splits, vocabulary = example.load_data(loaded, seq_length)
    assert sorted(vocabulary) == list("abcdefgh")  # from the training parts only
    decode = {index: character for character, index in vocabulary.items()}
    decode[example.UNKNOWN_ID] = "?"
    for position, split in enumerate(example.SPLITS):
        inputs, targets, mask = splits[split]
        # With stride L the real positions, in order, spell out each file's
        # part of this split exactly: no window reaches into another split.
        expected = ""
        for _, text in loaded:
            part = example.split_by_position(text)[position]
            expected += part[:-1]
        spelled = "".join(decode[i] for i in inputs[mask > 0])
        assert spelled == expected.replace("Z", "?")
        assert (inputs[mask == 0] == example.PAD_ID).all()
        assert (targets[mask == 0] == example.PAD_ID).all()
        assert mask.sum() == len(expected)
        assert (mask.min(axis=1) == 0).sum() >= 1  # a padded window per split
    assert example.UNKNOWN_ID in splits["test"][1][splits["test"][2] > 0]
    # The parts are 80 / 10 / 10 % of each file, in order.
    parts = example.split_by_position(texts["one.txt"])
    assert [len(part) for part in parts] == [402, 51, 50]
    assert "".join(parts) == texts["one.txt"]


def test_perplexity_counts_only_real_positions():
    vocab_size = 9
    rng = np.random.default_rng(1)
    targets = rng.integers(2, vocab_size, (3, 5))
    mask = np.ones((3, 5), np.float32)
    mask[2, 3:] = 0.0
    # Uniform logits give perplexity = vocabulary size, whatever the padding holds.
    logits = np.zeros((3, 5, vocab_size), np.float32)
    logits[2, 3:] = rng.normal(size=(2, vocab_size)) * 50.0
    total, count = example.masked_crossentropy(logits, targets, mask)
    assert count == 13.0
    np.testing.assert_allclose(math.exp(total / count), vocab_size, rtol=1e-12)
    # Against a direct computation on random logits.
    logits = rng.normal(size=(3, 5, vocab_size)) * 3.0
    probabilities = ref.softmax(logits)
    chosen = np.take_along_axis(probabilities, targets[..., None], axis=-1)[..., 0]
    total, count = example.masked_crossentropy(logits, targets, mask)
    np.testing.assert_allclose(total, -(np.log(chosen) * mask).sum(), rtol=1e-12)


def test_missing_text_exits_with_a_message(tmp_path):
    missing = str(tmp_path / "nothing_here")
    with pytest.raises(SystemExit, match="No text found at .*nothing_here.*--text"):
        example.main(["--text", missing, "--fast"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("")
    with pytest.raises(SystemExit, match="No text found"):
        example.main(["--text", str(empty), "--fast"])


# ---------------------------------------------------------------------------
# The Distiller on [batch, time, vocab] logits: reverse KL and JSD.

BATCH, STEPS, VOCAB = 6, 5, 7
TEMPERATURE = 2.0
ALPHA = 0.3


def sequence_data(seed=3):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, (BATCH, STEPS)).astype("int32")
    y = rng.integers(0, VOCAB, (BATCH, STEPS)).astype("int32")
    lengths = np.array([5, 4, 3, 2, 5, 1])
    mask = (np.arange(STEPS)[None, :] < lengths[:, None]).astype("float32")
    return x, y, mask


def language_models():
    """The example's LSTMs (causal, so later padding cannot reach earlier logits)."""
    bias = np.zeros(VOCAB)
    teacher = example.make_language_model("teacher", VOCAB, 6, [10], bias)
    student = example.make_language_model("student", VOCAB, 3, [4], bias)
    # Weights of unit scale, so the two models' distributions differ clearly
    # and per position (freshly initialised, both are nearly uniform).
    rng = np.random.default_rng(5)
    for model in (teacher, student):
        model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return teacher, student


def np_crossentropy(labels, logits):
    log_probs = np.log(ref.softmax(logits))
    return -np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


DIVERGENCES = {
    "reverse_kl": lambda t, s, mask: ref.reverse_kd(t, s, TEMPERATURE, mask=mask),
    "jensen_shannon": lambda t, s, mask: ref.jsd(t, s, TEMPERATURE, beta=0.3, mask=mask),
}


@pytest.mark.parametrize("divergence", sorted(DIVERGENCES))
def test_distiller_sequence_divergence_matches_numpy(divergence):
    teacher, student = language_models()
    x, y, mask = sequence_data()
    distiller = Distiller(
        teacher,
        student,
        LogitsDistillation(TEMPERATURE, loss=divergence, beta=0.3),
        student_loss_weight=ALPHA,
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy"
    )
    teacher_logits = np.asarray(teacher(x, training=False), np.float64)
    student_logits = np.asarray(student(x, training=False), np.float64)
    distillation = DIVERGENCES[divergence](teacher_logits, student_logits, mask)
    student_loss = ref.masked_mean(np_crossentropy(y, student_logits), mask)
    assert distillation.min() > 0.05  # the checks below compare real values

    history = distiller.fit(x, y, sample_weight=mask, batch_size=BATCH, verbose=0).history
    np.testing.assert_allclose(history["distillation_loss"][0], distillation.mean(), rtol=1e-5)
    np.testing.assert_allclose(history["student_loss"][0], student_loss.mean(), rtol=1e-5)
    expected_total = (ALPHA * student_loss + (1 - ALPHA) * distillation).mean()
    np.testing.assert_allclose(history["loss"][0], expected_total, rtol=1e-5)
    # Evaluation (the test step) masks the same way.
    evaluated = distiller.evaluate(
        x, y, sample_weight=mask, batch_size=BATCH, verbose=0, return_dict=True
    )
    np.testing.assert_allclose(evaluated["distillation_loss"], distillation.mean(), rtol=1e-5)
    np.testing.assert_allclose(evaluated["loss"], expected_total, rtol=1e-5)
    np.testing.assert_allclose(evaluated["student_loss"], student_loss.mean(), rtol=1e-5)
    # Without the mask, padding counts and the value differs.
    unmasked = DIVERGENCES[divergence](teacher_logits, student_logits, None)
    assert abs(unmasked.mean() - distillation.mean()) > 1e-4


@pytest.mark.parametrize("divergence", sorted(DIVERGENCES))
def test_distiller_training_step_ignores_padding(divergence):
    x, y, mask = sequence_data(seed=4)
    padded = mask == 0
    x_changed, y_changed = x.copy(), y.copy()
    x_changed[padded] = (x[padded] + 1) % VOCAB
    y_changed[padded] = (y[padded] + 3) % VOCAB

    teacher, student = language_models()
    initial = student.get_weights()
    distiller = Distiller(
        teacher,
        student,
        LogitsDistillation(TEMPERATURE, loss=divergence, beta=0.3),
        student_loss_weight=ALPHA,
    )
    # Plain SGD has no state: restoring the weights restarts from the same
    # point, and the traced step is reused.
    distiller.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="sparse_categorical_crossentropy"
    )

    def weights_after_one_step(inputs, labels):
        student.set_weights(initial)
        distiller.fit(inputs, labels, sample_weight=mask, batch_size=BATCH, verbose=0)
        return student.get_weights()

    reference = weights_after_one_step(x, y)
    # The step does train the student...
    assert max(np.abs(a - b).max() for a, b in zip(initial, reference)) > 1e-4
    # ...and what the padding holds changes nothing.
    changed = weights_after_one_step(x_changed, y_changed)
    for expected, actual in zip(reference, changed):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
    # Changing a real label does change the step.
    y_changed[0, 0] = (y[0, 0] + 1) % VOCAB
    moved = weights_after_one_step(x_changed, y_changed)
    assert max(np.abs(a - b).max() for a, b in zip(reference, moved)) > 1e-6


# ---------------------------------------------------------------------------
# The example's `--fast` run.


def test_fast_run_reports_sensible_perplexities(fast_result):
    result = fast_result
    perplexities = result["test_perplexity"]
    assert set(perplexities) == {"teacher", "student_alone", "student_distilled"}
    for name, value in list(perplexities.items()) + list(result["validation_perplexity"].items()):
        assert math.isfinite(value), name
        # 1 would be a perfect predictor, the vocabulary size a uniform one.
        assert 1.0 < value < result["vocab_size"], (name, value)
    # Every model learned more than the letter counts it started from.
    for name, value in perplexities.items():
        assert value < result["unigram_perplexity"], (name, value)
    # The students are the same (much smaller) model.
    parameters = result["parameters"]
    assert parameters["student_alone"] == parameters["student_distilled"]
    assert parameters["student_alone"] * 5 < parameters["teacher"]
    assert result["divergence"] == "kl_divergence"


def test_fast_run_pads_windows_in_every_split(fast_result):
    result = fast_result
    # The last window of each file's part is padded: the masks are used.
    for split in ("train", "validation", "test"):
        assert 0 < result["padded_windows"][split] <= result["files"]
        assert result["windows"][split] > result["padded_windows"][split]
    assert result["windows"]["train"] >= 200
    assert result["test_characters"] < result["windows"]["test"] * result["seq_length"]
