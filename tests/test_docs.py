"""The Python blocks of README.md and examples/README.md run as written.

Every ```python block of the two documents runs, one test per block (its id is
`DOCUMENT:LINE`, the line of its opening fence), in a fresh namespace, in a
temporary folder. Before a block runs, its document's preamble (`PREAMBLES`
below) gives it the names it takes for granted: a block says `teacher` or
`distiller` where the reader has their own. The preamble builds tiny models
on the embedded digits; nothing is downloaded.

One textual substitution is made, so that a block that trains takes seconds:
`epochs=N` becomes `epochs=1` (`SUBSTITUTIONS`). Nothing else of a block
changes, and a file a block saves (`.save("x.keras")`) must exist afterwards.

A block that cannot run here (it downloads, or needs a cluster) is marked in
the document itself, on the line right before its fence:

    <!-- docs-test: skip (downloads MNIST) -->

and `EXPECTED_SKIPS` lists every such mark, so none is skipped silently.
"""

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ("README.md", "examples/README.md")

SKIP_MARK = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>\w*)\s*$")

# How many ```python blocks each document holds: a block the parser missed
# (an odd fence) would otherwise go untested without a word.
EXPECTED_BLOCKS = {"README.md": 6, "examples/README.md": 0}
# (document, reason) of every block marked `docs-test: skip`.
EXPECTED_SKIPS = []

SUBSTITUTIONS = [
    # Training blocks train one epoch here.
    (re.compile(r"\bepochs=\d+"), "epochs=1"),
]

_README_PREAMBLE = """
import numpy as np
import tf_distill
from tf_distill.backend import keras

data = tf_distill.data.load("digits")
# A teacher file for a block that loads "the trained teacher" (untrained here:
# the blocks are checked for running, the library's tests check learning).
teacher = tf_distill.architectures.build("cnn", data.input_shape, data.num_classes, seed=0)
teacher.save("teacher.keras")
student = tf_distill.architectures.build("mlp", data.input_shape, data.num_classes, seed=1)
distiller = tf_distill.Distiller(
    teacher=teacher, student=student,
    distillation_losses=tf_distill.LogitsDistillation(temperature=4.0),
    student_loss_weight=0.1,
)
distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
train = data.as_tf_dataset("train", 64, shuffle=True, seed=0)
validation = data.as_tf_dataset("validation", 64)

# The language-model block's teacher file and tokenized text: a tiny GPT-2 on
# bytes, 24 windows of 16 tokens (+1 for the next-token labels).
lm_teacher = tf_distill.language.build_causal_lm(
    "gpt2", vocabulary_size=256, num_layers=1, hidden_dim=16, max_sequence_length=16
)
lm_teacher.save("lm_teacher.keras")
text = b"Knowledge distillation for Keras 3 on TensorFlow: a small student imitates. " * 6
token_ids = np.frombuffer(text[: 24 * 17], dtype=np.uint8).reshape(24, 17).astype("int32")

# The preset block's teacher preset (a tiny GPT-2 with a BPE tokenizer trained
# on a local text) and instruction data.
import json
import tiny_tokenizers
tiny_tokenizers.write_preset("teacher_preset", "gpt2", num_layers=2, sequence_length=128)
with open("train.jsonl", "w") as handle:
    for i in range(40):
        handle.write(json.dumps({"prompt": f"Count from {i}:", "response": f" {i + 1} {i + 2}"}))
        handle.write("\\n")
"""

PREAMBLES = {
    "README.md": _README_PREAMBLE,
    "examples/README.md": _README_PREAMBLE,
}


def python_blocks(document, text=None):
    """`(line, code, skip_reason)` of every ```python block of `document`.

    `line` is the 1-based line of the opening fence; `skip_reason` is the
    reason of a `docs-test: skip` mark on the line before it, else None.
    `text` is the document's text, read from the repository when None.

    Raises:
        ValueError: a skip mark that no ```python block follows, or a block
            that is never closed.
    """
    if text is None:
        with open(os.path.join(REPO, document), encoding="utf-8") as file:
            text = file.read()
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        mark = SKIP_MARK.match(lines[index])
        if mark:
            following = FENCE.match(lines[index + 1]) if index + 1 < len(lines) else None
            if not following or following["language"] not in ("python", "py"):
                raise ValueError(
                    f"{document}:{index + 1}: a `docs-test: skip` mark must stand on the "
                    f"line right before a ```python fence. Received: {lines[index + 1 : index + 2]}"
                )
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        start = index
        end = start + 1
        while end < len(lines) and not re.match(r"^\s*```\s*$", lines[end]):
            end += 1
        if end == len(lines):
            raise ValueError(f"{document}:{start + 1}: a ``` block is never closed.")
        if fence["language"] in ("python", "py"):
            indent = len(fence["indent"])
            code = "\n".join(line[indent:] for line in lines[start + 1 : end])
            previous = SKIP_MARK.match(lines[start - 1]) if start else None
            blocks.append((start + 1, code, previous["reason"].strip() if previous else None))
        index = end + 1
    return blocks


def _all_blocks():
    return [
        (document, line, code, reason)
        for document in DOCUMENTS
        for line, code, reason in python_blocks(document)
    ]


def test_every_block_found_and_every_skip_listed():
    found = {document: len(python_blocks(document)) for document in DOCUMENTS}
    assert found == EXPECTED_BLOCKS
    skipped = [(document, reason) for document, _, _, reason in _all_blocks() if reason]
    assert skipped == EXPECTED_SKIPS


def test_parser_reads_marks_and_refuses_a_stray_one():
    text = (
        "Text.\n```python\nx = 1\n```\n```sh\nls\n```\n"
        "<!-- docs-test: skip (downloads MNIST) -->\n```python\n  y = 2\n```\n"
        "- item:\n  ```py\n  z = 3\n  ```\n"
    )
    assert python_blocks("doc.md", text) == [
        (2, "x = 1", None),
        (9, "  y = 2", "downloads MNIST"),
        (13, "z = 3", None),
    ]
    with pytest.raises(ValueError, match=r"doc.md:1: a `docs-test: skip` mark must stand"):
        python_blocks("doc.md", "<!-- docs-test: skip (cluster) -->\n```sh\nls\n```\n")
    with pytest.raises(ValueError, match=r"doc.md:2: a ``` block is never closed"):
        python_blocks("doc.md", "Text.\n```python\nx = 1\n")


@pytest.mark.slow  # trains a student for an epoch per block
@pytest.mark.parametrize(
    "document, line, code, reason",
    [pytest.param(*block, id=f"{block[0]}:{block[1]}") for block in _all_blocks()],
)
def test_block_runs(document, line, code, reason, tmp_path, monkeypatch):
    if reason:
        pytest.skip(f"marked in {document}: {reason}")
    monkeypatch.chdir(tmp_path)
    for pattern, replacement in SUBSTITUTIONS:
        code = pattern.sub(replacement, code)
    namespace = {"__name__": "__docs__"}
    exec(compile(PREAMBLES[document], f"<preamble of {document}>", "exec"), namespace)
    # Blank lines before the code, so a traceback gives the document's line.
    exec(compile("\n" * line + code, os.path.join(REPO, document), "exec"), namespace)
    for saved in re.findall(r"""\.save\(\s*["']([^"']+)["']""", code):
        assert os.path.exists(saved), f"{document}:{line} saves {saved!r}, which is not there"
