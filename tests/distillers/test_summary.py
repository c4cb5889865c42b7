"""`Distiller.summary()` (tf_distill.distiller_summary)."""

from tf_distill import Distiller
from tf_distill import FeatureDistillation
from tf_distill import LogitsDistillation


def printed(distiller, **kwargs):
    lines = []
    distiller.summary(print_fn=lines.append, **kwargs)
    return lines


def row(lines, role):
    (found,) = [line.split() for line in lines if line.startswith(role + " ")]
    return found


def test_summary_shows_roles_trainability_and_taps(make_mlp):
    teacher, student = make_mlp("teacher", hidden=32), make_mlp("student", hidden=8)
    losses = [
        LogitsDistillation(4.0),
        {
            "name": "fitnets",
            "teacher_layer_name": "teacher_hidden",
            "student_layer_name": "student_hidden",
        },
    ]
    distiller = Distiller(teacher, student, losses, distillation_loss_weights=[1.0, 0.5])
    lines = printed(distiller)
    text = "\n".join(lines)
    # Counts: teacher 8·32+32 + 32·5+5 = 453, student 8·8+8 + 8·5+5 = 117,
    # the FitNets adapter (8 → 32) 8·32+32 = 288.
    assert row(lines, "teacher") == [
        "teacher",
        "teacher",
        "453",
        "no",
        "(frozen)",
        "teacher_hidden",
    ]
    assert row(lines, "student") == ["student", "student", "117", "yes", "student_hidden"]
    assert row(lines, "adapter")[-3:] == ["288", "yes", "-"]
    assert "Trainable params (student and adapters): 405" in text
    assert "Frozen params (teachers): 453" in text
    assert "0.5·student_loss + 0.5·(1·LogitsDistillation, 0.5·FitNetsDistillation" in text
    # The student's tap model shares its layers: never listed as a model.
    assert "_taps" not in text


def test_summary_of_several_teachers(make_mlp):
    teachers = {"wide": make_mlp("wide", hidden=16), "deep": make_mlp("deep", hidden=4)}
    hint = FeatureDistillation("mse", "deep_hidden", "student_hidden", teacher="deep")
    distiller = Distiller(teachers, make_mlp("student", hidden=4), [LogitsDistillation(2.0), hint])
    lines = printed(distiller)
    teacher_rows = [line.split() for line in lines if line.startswith("teacher ")]
    assert teacher_rows == [
        ["teacher", "wide", "229", "no", "(frozen)", "-"],
        ["teacher", "deep", "61", "no", "(frozen)", "deep_hidden"],
    ]
    assert "Frozen params (teachers): 290" in "\n".join(lines)


def test_expand_nested_adds_each_models_keras_summary(make_mlp):
    distiller = Distiller(make_mlp("teacher"), make_mlp("student"), LogitsDistillation(2.0))
    lines = printed(distiller, expand_nested=True)
    text = "\n".join(str(line) for line in lines)
    assert 'Model: "teacher"' in text and 'Model: "student"' in text
