"""Tests of multi-stage distillation (`tf_distill.stages`): teacher assistants
and born-again networks. Tiny Dense models, one epoch per stage."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import build_mlp

from tf_distill import LogitsDistillation
from tf_distill.architectures import fresh_copy
from tf_distill.backend import keras
from tf_distill.distillers.stages import Stage
from tf_distill.distillers.stages import born_again
from tf_distill.distillers.stages import distill_stages


def np_log_softmax(logits, temperature=1.0):
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_kd(teacher_logits, student_logits, temperature):
    """Hinton's `T² · KL(softmax(t/T) ‖ softmax(s/T))` per example."""
    log_p_teacher = np_log_softmax(teacher_logits, temperature)
    log_p_student = np_log_softmax(student_logits, temperature)
    return temperature**2 * (np.exp(log_p_teacher) * (log_p_teacher - log_p_student)).sum(-1)


def logits_of(model, x):
    return np.asarray(model(x, training=False), np.float64)


def weights_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


class Watch(keras.callbacks.Callback):
    """Records, for one stage, its Distiller and its teacher's weights
    before and after the stage's training."""

    def on_train_begin(self, logs=None):
        self.distiller = self.model
        self.teacher_before = self.model.teacher.get_weights()
        self.student_before = self.model.student.get_weights()

    def on_train_end(self, logs=None):
        self.teacher_after = self.model.teacher.get_weights()
        self.student_after = self.model.student.get_weights()


def watchers(count):
    watches = [Watch() for _ in range(count)]
    return watches, lambda index, stage: [watches[index]]


def test_stage_two_is_taught_by_stage_one_trained_student_frozen(teacher, tiny_data):
    x, y = tiny_data
    stages = [
        Stage(lambda: build_mlp("assistant", hidden=12), LogitsDistillation(2.0),
              student_loss_weight=0.3, optimizer={"class_name": "SGD",
                                                  "config": {"learning_rate": 0.1}},
              compile_kwargs={"jit_compile": False}, name="assistant"),
        Stage(lambda: build_mlp("student", hidden=4), "kd", student_loss_weight=0.0,
              epochs=2, compile_kwargs={"jit_compile": False}, name="student"),
    ]
    watches, callbacks = watchers(2)
    teacher_weights = teacher.get_weights()
    runs = distill_stages(teacher, stages, x, y, batch_size=16, callbacks=callbacks, verbose=0)

    assistant, student = runs.students
    assert runs.names == ["assistant", "student"]
    assert runs.teachers == ["teacher", "assistant"]
    assert [len(h.history["loss"]) for h in runs.histories] == [1, 2]
    assert watches[0].distiller.teacher is teacher
    assert weights_equal(teacher.get_weights(), teacher_weights)
    # Stage 1 trained its student; stage 2 read exactly that student, frozen.
    assert not weights_equal(watches[0].student_before, watches[0].student_after)
    assert watches[1].distiller.teacher is assistant
    assert assistant.trainable is False
    assert weights_equal(watches[1].teacher_before, watches[0].student_after)
    assert weights_equal(watches[1].teacher_after, watches[0].student_after)
    assert weights_equal(assistant.get_weights(), watches[0].student_after)
    assert not weights_equal(watches[1].student_before, student.get_weights())
    # Stage 2's distillation loss is KD from the assistant's logits.
    terms = watches[1].distiller.compute_loss_terms(x, y)
    expected = np.mean(np_kd(logits_of(assistant, x), logits_of(student, x), 3.0))
    np.testing.assert_allclose(float(terms["distillation_loss"]), expected, rtol=1e-5)


@pytest.mark.slow
def test_born_again_generations_are_chained(teacher, tiny_data):
    x, y = tiny_data
    watches, callbacks = watchers(3)
    runs = born_again(teacher, generations=3, x=x, y=y, epochs=1, batch_size=32,
                      distillation_losses={"name": "kd", "temperature": 1.0},
                      callbacks=callbacks, ensemble=True, seed=5, verbose=0,
                      compile_kwargs={"jit_compile": False})
    assert len(runs.students) == len(runs.histories) == 3
    assert watches[0].distiller.teacher is teacher
    for generation in (1, 2):
        previous = runs.students[generation - 1]
        watch = watches[generation]
        assert watch.distiller.teacher is previous
        assert weights_equal(watch.teacher_before, watches[generation - 1].student_after)
        assert weights_equal(watch.teacher_after, watch.teacher_before)
    for watch in watches:
        # Fresh weights: neither the teacher's trained nor another generation's.
        kernels = [w for w in watch.student_before if w.ndim == 2]
        assert not any(np.array_equal(k, t) for k in kernels for t in teacher.get_weights())
    first_kernels = [w[0] for w in (watch.student_before for watch in watches)]
    assert not np.array_equal(first_kernels[0], first_kernels[1])
    # The BAN ensemble averages the generations' probabilities.
    probabilities = np.mean(
        [np.exp(np_log_softmax(logits_of(s, x))) for s in runs.students], axis=0)
    np.testing.assert_allclose(
        np.exp(np_log_softmax(logits_of(runs.ensemble, x))), probabilities, atol=1e-5)


def test_born_again_with_a_builder_and_without_ensemble(teacher, tiny_data):
    x, y = tiny_data
    runs = born_again(teacher, lambda: build_mlp("student", hidden=32), generations=1,
                      x=x, y=y, verbose=0, compile_kwargs={"jit_compile": False})
    assert runs.ensemble is None and len(runs.students) == 1
    assert runs.students[0] is not teacher


def test_fresh_copy_draws_new_weights_reproducibly(teacher):
    first, again, other = (fresh_copy(teacher, seed=s, name="copy") for s in (1, 1, 2))
    assert first.name == "copy"
    assert weights_equal(first.get_weights(), again.get_weights())
    assert not np.array_equal(first.get_weights()[0], other.get_weights()[0])
    assert not np.array_equal(first.get_weights()[0], teacher.get_weights()[0])


def test_a_stage_round_trips_through_its_config():
    stage = Stage(build_mlp("student", hidden=4), [{"name": "kd", "temperature": 2.0}, "kd"],
                  distillation_loss_weights=[1.0, 0.5], student_loss_weight=0.2, epochs=3,
                  optimizer=keras.optimizers.SGD(0.05),
                  compile_kwargs={"metrics": ["accuracy"]}, name="assistant")
    config = json.loads(json.dumps(stage.get_config()))
    copy = Stage.from_config(config)
    without_student = lambda c: {k: v for k, v in c.items() if k != "student"}  # noqa: E731
    assert without_student(copy.get_config()) == without_student(config)
    assert copy.student is not stage.student
    assert [layer.name for layer in copy.student.layers] == [
        layer.name for layer in stage.student.layers]
    assert copy.distillation_losses[0].temperature == 2.0
    optimizer = copy.make_optimizer()
    assert optimizer is not copy.make_optimizer()
    assert float(optimizer.learning_rate) == pytest.approx(0.05)


@pytest.mark.parametrize("arguments, message", [
    ({"student": 3}, "`student` must be a keras.Model or a function"),
    ({"epochs": 0}, "`epochs` must be an integer >= 1. Received: epochs=0"),
    ({"student_loss_weight": 2.0}, "`student_loss_weight` must be in [0, 1]"),
    ({"distillation_losses": []}, "`distillation_losses` must hold at least one loss"),
    ({"distillation_losses": "nope"}, "nope"),
    ({"distillation_loss_weights": [1.0, 2.0]}, "loss"),
    ({"optimizer": "nope"}, "Received: optimizer='nope'"),
    ({"compile_kwargs": {"optimizer": "sgd"}}, "not in `compile_kwargs`"),
    ({"name": ""}, "`name` must be a non-empty string"),
])
def test_stage_errors_name_the_argument(arguments, message):
    arguments = {"student": lambda: None, **arguments}
    with pytest.raises(ValueError, match=None) as error:
        Stage(**arguments)
    assert message in str(error.value)


def test_distill_stages_errors(teacher, tiny_data):
    x, y = tiny_data
    with pytest.raises(ValueError, match="non-empty list of `Stage`s"):
        distill_stages(teacher, [], x, y)
    with pytest.raises(ValueError, match=r"`stages\[0\]` must be a `Stage`"):
        distill_stages(teacher, ["kd"], x, y)
    two = [Stage(lambda: build_mlp("a"), name="same"), Stage(lambda: build_mlp("b"), name="same")]
    with pytest.raises(ValueError, match=r"own `name`. Received: names=\['same', 'same'\]"):
        distill_stages(teacher, two, x, y)
    with pytest.raises(ValueError, match="Each stage sets its own `epochs`"):
        distill_stages(teacher, [Stage(lambda: build_mlp("a"))], x, y, epochs=2)
    with pytest.raises(ValueError, match="stage 'own' is its teacher"):
        distill_stages(teacher, [Stage(teacher, name="own")], x, y)
    with pytest.raises(ValueError, match="must return a keras.Model. Received: None"):
        distill_stages(teacher, [Stage(lambda: None, name="empty")], x, y)


def test_born_again_errors(teacher):
    with pytest.raises(ValueError, match="`generations` must be an integer >= 1. Received: "
                                         "generations=0"):
        born_again(teacher, generations=0)
    with pytest.raises(ValueError, match="`teacher` must be a trained keras.Model"):
        born_again("teacher")
    with pytest.raises(ValueError, match="`build_student` must be a function"):
        born_again(teacher, build_student=3)
    with pytest.raises(ValueError, match="Invalid value for argument `ensemble_kind`"):
        born_again(teacher, ensemble=True, ensemble_kind="vote")


def sgd(rate=0.1):
    return {"class_name": "SGD", "config": {"learning_rate": rate}}


def test_the_first_stage_may_have_several_weighted_teachers(teacher, tiny_data):
    x, y = tiny_data
    other = build_mlp("other", hidden=8)
    stages = [Stage(lambda: build_mlp("assistant", hidden=12), "kd", student_loss_weight=0.0,
                    optimizer=sgd(), compile_kwargs={"jit_compile": False}, name="assistant"),
              Stage(lambda: build_mlp("student", hidden=4), "kd",
                    compile_kwargs={"jit_compile": False}, name="student")]
    watches, callbacks = watchers(2)
    runs = distill_stages({"big": teacher, "small": other}, stages, x, y, batch_size=32,
                          callbacks=callbacks, teacher_weights={"big": 3.0, "small": 1.0},
                          ensemble="average_logits", verbose=0)
    assert runs.teachers == ["teacher", "assistant"]
    # Stage 1 learns KD from the weighted average of both teachers' logits.
    assistant = runs.students[0]
    terms = watches[0].distiller.compute_loss_terms(x, y)
    ensemble = 0.75 * logits_of(teacher, x) + 0.25 * logits_of(other, x)
    expected = np.mean(np_kd(ensemble, logits_of(assistant, x), 3.0))
    np.testing.assert_allclose(float(terms["distillation_loss"]), expected, rtol=1e-5)
    # Stage 2 has one teacher: the assistant.
    assert watches[1].distiller.teacher is assistant
    with pytest.raises(ValueError, match="teacher_weights"):
        distill_stages({"big": teacher, "small": other}, stages[:1], x, y,
                       teacher_weights=[1.0], verbose=0)


def test_a_stage_takes_a_scheduled_student_loss_weight(teacher, tiny_data):
    x, y = tiny_data
    stage = Stage(build_mlp("student", hidden=4), "kd",
                  student_loss_weight={"schedule": "linear", "start": 0.9, "end": 0.1,
                                       "duration": 2},
                  epochs=2, compile_kwargs={"jit_compile": False}, name="student")
    assert stage.get_config()["student_loss_weight"] == {
        "schedule": "linear", "start": 0.9, "end": 0.1, "duration": 2, "unit": "epoch"}
    copy = Stage.from_config(json.loads(json.dumps(stage.get_config())))
    assert copy.student_loss_weight.bounds == (0.1, 0.9)
    watches, callbacks = watchers(1)
    runs = distill_stages(teacher, [stage], x, y, batch_size=32, callbacks=callbacks, verbose=0)
    # The schedule reached its second epoch's value, 0.5: the loss is α·CE + (1 − α)·KD.
    distiller = watches[0].distiller
    assert float(distiller.student_loss_weight.read()) == pytest.approx(0.5)
    terms = distiller.compute_loss_terms(x, y)
    expected = 0.5 * float(terms["student_loss"]) + 0.5 * float(terms["distillation_loss"])
    np.testing.assert_allclose(float(terms["loss"]), expected, rtol=1e-5)
    assert len(runs.histories[0].history["loss"]) == 2
    with pytest.raises(ValueError,
                       match=r"`student_loss_weight` must be in \[0.0, 1.0\] at every epoch"):
        Stage(lambda: None, student_loss_weight={"schedule": "linear", "start": 0.5,
                                                 "end": 1.5, "duration": 2})


def test_each_stage_reads_its_own_data_from_the_data_hook(teacher, tiny_data):
    x, y = tiny_data
    calls, ends = [], []

    def data(index, distiller):
        calls.append((index, distiller.teacher))
        rows = 64 if index == 0 else 32  # each stage's own training set
        return (tf.data.Dataset.from_tensor_slices((x[:rows], y[:rows])).batch(16),
                (x[32:], y[32:]))

    def on_stage_end(index, distiller, history):
        ends.append((index, distiller.student.get_weights(), history.params["steps"]))

    stages = [Stage(lambda: build_mlp("assistant", hidden=12), optimizer=sgd(),
                    compile_kwargs={"jit_compile": False}, name="assistant"),
              Stage(lambda: build_mlp("student", hidden=4), optimizer=sgd(),
                    compile_kwargs={"jit_compile": False}, name="student")]
    runs = distill_stages(teacher, stages, data=data, on_stage_end=on_stage_end, verbose=0)
    assistant = runs.students[0]
    assert calls == [(0, teacher), (1, assistant)]
    assert [(index, steps) for index, _, steps in ends] == [(0, 4), (1, 2)]
    # Called as each stage ends: stage 1's student as it went on to teach.
    assert weights_equal(ends[0][1], assistant.get_weights())
    assert all("val_loss" in history.history for history in runs.histories)


def test_a_chain_resumes_after_the_stages_trained_before(teacher, tiny_data):
    x, y = tiny_data
    assistant = build_mlp("assistant", hidden=12)
    before = assistant.get_weights()
    built, ends = [], []
    stages = [Stage(lambda: built.append(1) or build_mlp("never"), name="assistant"),
              Stage(lambda: build_mlp("student", hidden=4), optimizer=sgd(),
                    compile_kwargs={"jit_compile": False}, name="student")]
    watches = {}

    def callbacks(index, stage):
        watches[index] = Watch()
        return [watches[index]]

    runs = distill_stages(teacher, stages, x, y, trained=[assistant], batch_size=32,
                          callbacks=callbacks, verbose=0,
                          on_stage_end=lambda index, distiller, history: ends.append(index))
    assert built == [] and list(watches) == [1] and ends == [1]
    assert runs.students[0] is assistant and runs.histories[0] is None
    assert runs.teachers == ["teacher", "assistant"]
    assert watches[1].distiller.teacher is assistant
    assert weights_equal(assistant.get_weights(), before)
    assert len(runs.histories[1].history["loss"]) == 1


def test_distill_stages_refuses_bad_hooks_and_trained_models(teacher, tiny_data):
    x, y = tiny_data
    stage = Stage(lambda: build_mlp("a"), compile_kwargs={"jit_compile": False}, name="a")
    with pytest.raises(ValueError, match="`data` must be a function"):
        distill_stages(teacher, [stage], data="train")
    with pytest.raises(ValueError, match="as `x`, `y` and `validation_data`, or as `data`"):
        distill_stages(teacher, [stage], x, y, data=lambda index, distiller: (x, None))
    with pytest.raises(ValueError, match="`on_stage_end` must be a function"):
        distill_stages(teacher, [stage], x, y, on_stage_end=[])
    with pytest.raises(ValueError, match=r"`data` must return `\(x, validation_data\)`"):
        distill_stages(teacher, [stage], data=lambda index, distiller: x, verbose=0)
    with pytest.raises(ValueError, match=r"at most one per stage \(1\). Received: trained="):
        distill_stages(teacher, [stage], x, y, trained=[build_mlp("b"), build_mlp("c")])
    with pytest.raises(ValueError, match="`trained` must be a list of the keras.Models"):
        distill_stages(teacher, [stage], x, y, trained=["b"])
    with pytest.raises(ValueError, match="stage 'a' is its teacher"):
        distill_stages(teacher, [stage], x, y, trained=[teacher])


def test_check_stages_builds_the_chain_without_training(teacher, tiny_data):
    from tf_distill.distillers.stages import check_stages

    stages = [Stage(lambda: build_mlp("assistant", hidden=12), name="assistant"),
              Stage(lambda: build_mlp("student", hidden=4), name="student")]
    before = teacher.get_weights()
    assistant, student = check_stages(teacher, stages)
    assert [assistant.name, student.name] == ["assistant", "student"]
    assert weights_equal(teacher.get_weights(), before)
    wrong = [Stage(lambda: build_mlp("wide", num_classes=7), name="wide")]
    with pytest.raises(ValueError):
        check_stages(teacher, wrong)
    with pytest.raises(ValueError, match=r"own `name`. Received: names=\['a', 'a'\]"):
        check_stages(teacher, [Stage(lambda: build_mlp("a"), name="a")] * 2)
