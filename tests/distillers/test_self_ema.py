"""Self-distillation from an EMA teacher: the average against NumPy, the
teacher untouched by gradients, the student saved alone, errors."""

import numpy as np
import pytest
from conftest import build_mlp

import tf_distill
from tf_distill import SelfDistiller
from tf_distill.backend import keras
from tf_distill.distillers.self_ema import ema_decay


def batch_norm_student(name="student"):
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    hidden = keras.layers.BatchNormalization(name="norm")(hidden)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(hidden), name=name)


class RecordWeights(keras.callbacks.Callback):
    """The student's weights before training and after each step."""

    def __init__(self, model):
        super().__init__()
        self.student = model
        self.snapshots = [[w.copy() for w in model.get_weights()]]

    def on_train_batch_end(self, batch, logs=None):
        self.snapshots.append([w.copy() for w in self.student.get_weights()])


def np_decay(decay, step, warmup_steps, adaptive):
    if step <= warmup_steps:
        return 0.0
    return min(decay, (1 + step) / (10 + step)) if adaptive else decay


@pytest.mark.parametrize(
    "decay, warmup_steps, adaptive", [(0.7, 0, False), (0.9, 2, True)]
)
def test_teacher_is_the_numpy_moving_average(tiny_data, decay, warmup_steps, adaptive):
    x, y = tiny_data
    student = batch_norm_student()
    distiller = SelfDistiller(
        student, decay=decay, warmup_steps=warmup_steps, adaptive_decay=adaptive
    )
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    recorder = RecordWeights(student)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[recorder])

    average = [np.asarray(w, np.float64) for w in recorder.snapshots[0]]
    for step, weights in enumerate(recorder.snapshots[1:], start=1):
        rate = np_decay(decay, step, warmup_steps, adaptive)
        average = [rate * a + (1 - rate) * w for a, w in zip(average, weights)]
    assert len(recorder.snapshots) == 5
    # Batch-norm statistics are averaged too.
    assert len(distiller.teacher.weights) == len(student.weights) == 8
    for expected, actual in zip(average, distiller.teacher.get_weights()):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    # The teacher lags behind the student.
    assert not np.allclose(distiller.teacher.get_weights()[0], student.get_weights()[0])


def test_decay_schedule_values():
    assert float(ema_decay(0.999, 1)) == pytest.approx(0.999)
    assert float(ema_decay(0.999, 1, adaptive=True)) == pytest.approx(2 / 11)
    assert float(ema_decay(0.999, 90, adaptive=True)) == pytest.approx(91 / 100)
    assert float(ema_decay(0.5, 90, adaptive=True)) == pytest.approx(0.5)
    assert float(ema_decay(0.9, 3, warmup_steps=3)) == 0.0
    assert float(ema_decay(0.9, 4, warmup_steps=3)) == pytest.approx(0.9)


def test_teacher_is_never_trained_by_gradients(tiny_data):
    x, y = tiny_data
    student = build_mlp("student", hidden=8)
    # decay = 1: only gradients could move the teacher.
    distiller = SelfDistiller(
        student, decay=1.0, distillation_losses=tf_distill.LogitsDistillation(2.0)
    )
    teacher_ids = {id(v) for v in distiller.teacher.weights}
    assert not teacher_ids & {id(v) for v in distiller.trainable_variables}
    assert not distiller.teacher.trainable_weights
    before = distiller.teacher.get_weights()
    np.testing.assert_array_equal(before[0], student.get_weights()[0])
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    for expected, actual in zip(before, distiller.teacher.get_weights()):
        np.testing.assert_array_equal(actual, expected)
    assert not np.array_equal(before[0], student.get_weights()[0])
    # The student moved away from its (fixed) initial self.
    assert history["distillation_loss"][-1] > 0


def test_feature_losses_and_saving(tiny_data, tmp_path):
    x, y = tiny_data
    student = batch_norm_student()
    distiller = SelfDistiller(
        student,
        decay=0.5,
        distillation_losses=["kd", tf_distill.FeatureDistillation("mse", "hidden", "hidden")],
        distillation_loss_weights=[1.0, 0.5],
        student_loss_weight=0.3,
    )
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    terms = distiller.compute_loss_terms(x, y)
    assert float(terms["distillation_loss"]) > 0

    # Deploy: the student alone.
    distiller.student.save(tmp_path / "student.keras")
    alone = keras.models.load_model(tmp_path / "student.keras")
    assert not isinstance(alone, tf_distill.Distiller)
    np.testing.assert_allclose(alone(x), student(x), rtol=1e-6)

    # Resume: the whole distiller, with the averaged teacher.
    distiller.save(tmp_path / "self.keras")
    loaded = keras.models.load_model(tmp_path / "self.keras")
    assert isinstance(loaded, SelfDistiller)
    config = loaded.get_config()
    assert (config["decay"], config["student_loss_weight"]) == (0.5, 0.3)
    assert "teacher" not in config
    for expected, actual in zip(distiller.teacher.get_weights(), loaded.teacher.get_weights()):
        np.testing.assert_allclose(actual, expected)
    restored = loaded.compute_loss_terms(x, y)
    np.testing.assert_allclose(restored["loss"], terms["loss"], rtol=1e-5)


class Unbuilt(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(5)

    def call(self, inputs):
        return self.dense(inputs)


def test_errors(tiny_data):
    student = build_mlp("student", hidden=8)
    with pytest.raises(ValueError, match="`student` must be a keras.Model"):
        SelfDistiller("student")
    with pytest.raises(ValueError, match="must be built"):
        SelfDistiller(Unbuilt())
    with pytest.raises(ValueError, match="`decay` must be in"):
        SelfDistiller(student, decay=1.5)
    with pytest.raises(ValueError, match="`warmup_steps` must be an integer >= 0"):
        SelfDistiller(student, warmup_steps=-1)
    with pytest.raises(ValueError, match="ends with a softmax"):
        SelfDistiller(build_mlp("soft", final_activation="softmax"))
    x, y = tiny_data
    distiller = SelfDistiller(student)
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    cached = {"inputs": x, "teacher_outputs": {"logits": np.zeros((len(x), 5), "float32")}}
    with pytest.raises(ValueError, match="cannot train from cached teacher outputs"):
        distiller.fit(cached, y, verbose=0)


def test_exported_lazily():
    assert "SelfDistiller" in tf_distill.__all__
    assert tf_distill.SelfDistiller is SelfDistiller
