"""A teacher and a student with different tokenizers: the Distiller aligns the
teacher's outputs to the student's positions and trains with ULD."""

import json

import numpy as np
import numpy_reference as reference
import pytest
import tiny_tokenizers

import tf_distill
from tf_distill import data as data_lib
from tf_distill.language import build_causal_lm


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "a.jsonl"
    with open(path, "w") as handle:
        for i in range(12):
            handle.write(json.dumps({"prompt": f"Count {i}:", "response": f" {i} {i + 1}"}) + "\n")
    teacher = tiny_tokenizers.causal_lm("llama", sequence_length=24, name="teacher")
    data = data_lib.load_instructions(
        str(path), None, sequence_length=24,
        teacher_tokenizer=teacher.preprocessor.tokenizer, teacher_sequence_length=24)
    return teacher, data


def _student():
    return build_causal_lm("gpt2", 256, num_layers=1, hidden_dim=16, num_heads=2,
                           max_sequence_length=24, name="student")


def test_uld_in_the_distiller_equals_the_numpy_loss_on_aligned_positions(pair):
    teacher, data = pair
    student = _student()
    distiller = tf_distill.Distiller(teacher, student, "uld", student_loss_weight=0.0)
    distiller.compile("adam", loss="sparse_categorical_crossentropy")
    x, y, weight = next(iter(data.dataset("train", 4, shuffle=False, with_teacher=True)))
    values = distiller.compute_loss_terms(x, y, weight)
    teacher_inputs = {key: x["teacher_inputs"][key] for key in ("token_ids", "padding_mask")}
    teacher_logits = teacher(teacher_inputs).numpy()
    alignment = x["teacher_inputs"]["alignment"].numpy()
    aligned = np.take_along_axis(teacher_logits, np.maximum(alignment, 0)[..., None], axis=1)
    mask = weight.numpy() * (alignment >= 0)
    expected = reference.uld(aligned, student(x["inputs"]).numpy(), 1.0, mask).mean()
    np.testing.assert_allclose(values["distillation_loss"], expected, rtol=1e-5)
    assert mask.sum() > 0


@pytest.mark.slow
def test_a_cross_tokenizer_distiller_trains_and_the_student_learns(pair):
    teacher, data = pair
    student = _student()
    distiller = tf_distill.Distiller(teacher, student, tf_distill.losses.UniversalLogitDistillation(),
                                     student_loss_weight=0.5)
    distiller.compile("adam",
                      loss=tf_distill.backend.keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
    train = data.dataset("train", 4, seed=0, with_teacher=True)
    first = distiller.evaluate(data.dataset("train", 4, shuffle=False, with_teacher=True),
                               verbose=0, return_dict=True)
    distiller.fit(train, epochs=3, verbose=0)
    after = distiller.evaluate(data.dataset("train", 4, shuffle=False, with_teacher=True),
                               verbose=0, return_dict=True)
    assert np.isfinite(after["loss"]) and after["loss"] < first["loss"]


def test_different_tokenizers_need_a_cross_tokenizer_loss_and_the_teachers_tokens(pair):
    teacher, data = pair
    with pytest.raises(ValueError, match="cross-tokenizer loss, such as 'uld'"):
        tf_distill.Distiller(teacher, _student(), "token_kd")
    distiller = tf_distill.Distiller(teacher, _student(), "uld")
    distiller.compile("adam", loss="sparse_categorical_crossentropy")
    x, y, weight = next(iter(data.dataset("train", 4, shuffle=False)))
    with pytest.raises(ValueError, match="must carry the teacher's own tokens"):
        distiller.compute_loss_terms(x, y, weight)
