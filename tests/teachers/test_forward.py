"""Tests of which teacher output each loss reads (tf_distill.teachers)."""

import numpy as np
import pytest

from tf_distill import cache
from tf_distill import teachers
from tf_distill.distillers.distiller import Distiller
from tf_distill.losses import FeatureDistillation
from tf_distill.losses import LogitsDistillation

LOSSES = [
    {"name": "kd", "temperature": 4.0},
    {"name": "fitnets", "teacher_layer_name": "features", "student_layer_name": "features"},
]


def test_tap_names_come_from_the_losses():
    assert teachers.tap_names(None) == []
    assert teachers.tap_names("kd") == []
    assert teachers.tap_names(LOSSES + LOSSES) == ["features"]


def test_tap_names_read_a_loss_configs_teacher_key():
    feature = {
        "name": "feature",
        "loss": "mse",
        "teacher_layer_name": "t2_hidden",
        "student_layer_name": "features",
    }
    losses = ["kd", {**feature, "teacher": "t2"}, {**feature, "teacher": 1}]
    # One teacher: its layers' names, whatever the loss calls the teacher.
    assert teachers.tap_names(losses) == ["t2_hidden"]
    # Several: the keys `Distiller.teacher_forward` gives them.
    assert teachers.tap_names(losses, ["t1", "t2"]) == ["t2/t2_hidden"]
    assert teachers.tap_names({**feature, "teacher": 0}, ["t1", "t2"]) == ["t1/t2_hidden"]
    with pytest.raises(ValueError, match=r"reads the teacher layer 't2_hidden' but does not say"):
        teachers.tap_names(feature, ["t1", "t2"])
    with pytest.raises(
        ValueError,
        match=r"Invalid `teacher` for the distillation loss 1 \(FeatureDistillation\). "
        r"Expected a teacher's name \(one of \['t1', 't2'\]\) or index \(0 to 1\). "
        r"Received: teacher='t3'",
    ):
        teachers.tap_names(["kd", {**feature, "teacher": "t3"}], ["t1", "t2"])




def test_loss_teacher_reads_the_losss_teacher():
    names = ["t1", "t2"]
    kd = LogitsDistillation(2.0)
    assert teachers.loss_teacher(kd, names, several=True) is None
    assert teachers.loss_teacher(LogitsDistillation(2.0, teacher="t2"), names, several=True) == "t2"
    assert teachers.loss_teacher(LogitsDistillation(2.0, teacher=0), names, several=True) == "t1"
    # Set after construction, as before `teacher=` existed.
    kd.teacher = 1
    assert teachers.loss_teacher(kd, names, several=True) == "t2"
    # One teacher: naming it is allowed, and it is read as the only teacher.
    assert teachers.loss_teacher(LogitsDistillation(teacher="t1"), ["t1"]) is None
    with pytest.raises(ValueError, match=r"Received: teacher='t1'"):
        teachers.loss_teacher(LogitsDistillation(teacher="t1"), ["teacher"], index=3)
    hint = FeatureDistillation("mse", "hidden", "hidden")
    with pytest.raises(ValueError, match=r"distillation loss 2 \(FeatureDistillation\) reads"):
        teachers.loss_teacher(hint, names, several=True, index=2)
    assert teachers.loss_teacher_key(None, None) == "logits"
    assert teachers.loss_teacher_key(None, "hidden") == "hidden"
    assert teachers.loss_teacher_key("t2", "hidden") == "t2/hidden"
    assert teachers.loss_teacher_key("t2") == "t2/logits"


@pytest.mark.parametrize("several", [False, True], ids=["one_teacher", "two_teachers"])
def test_teacher_forward_is_the_distillers_and_the_caches(make_mlp, tiny_data, several):
    x, _ = tiny_data
    t1, t2 = make_mlp("t1", hidden=12), make_mlp("t2", hidden=6)
    hint = FeatureDistillation("mse", "t1_hidden", "student_hidden", teacher="t1")
    teacher = [t1, t2] if several else t1
    distiller = Distiller(teacher, make_mlp("student", hidden=12), [LogitsDistillation(2.0), hint])
    keys = teachers.tap_names(distiller.distillation_losses, ["t1", "t2"] if several else None)
    assert keys == (["t1/t1_hidden"] if several else ["t1_hidden"])
    forward = teachers.TeacherForward(distiller.teacher, keys)
    expected = distiller.teacher_forward(x)
    got = forward(x)
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, atol=1e-6)
    np.testing.assert_allclose(expected["t1/logits" if several else "logits"], t1(x), atol=1e-6)
    # A cache of the bare teacher model holds the same outputs.
    built = cache.build_teacher_cache(
        distiller.teacher, (x, np.zeros(len(x), "int32")), distillation_losses=[hint]
    )
    for key, value in expected.items():
        np.testing.assert_allclose(built.outputs[key], value, atol=1e-6)


def test_as_teacher_and_check_logit_shapes_errors(make_mlp):
    with pytest.raises(ValueError, match="`teacher` must be a keras.Model"):
        teachers.as_teacher("teacher")
    with pytest.raises(ValueError, match="`teacher_weights` and `ensemble` apply to several"):
        teachers.as_teacher(make_mlp("t"), teacher_weights=[1.0])
    ensemble = teachers.as_teacher([make_mlp("a"), make_mlp("b")], teacher_weights=[0.0, 1.0])
    assert isinstance(ensemble, teachers.TeacherEnsemble)
    assert teachers.reading_model(ensemble, None).name == "b"
    assert teachers.reading_model(ensemble, "a").name == "a"
    with pytest.raises(ValueError, match=r"Teacher 'a' and student outputs must have the same"):
        teachers.check_logit_shapes(
            ensemble, make_mlp("s", num_classes=3), [LogitsDistillation(teacher="a")], ["a"]
        )
