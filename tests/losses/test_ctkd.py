"""CTKD: the gradient reversal, the learned temperature, its curriculum and its logging."""

import math

import numpy as np
import pytest
from numpy_reference import kd as numpy_kd

import tf_distill
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.losses import CurriculumTemperatureDistillation
from tf_distill.losses import reverse_gradient
from tf_distill.losses.ctkd import ReversalCurriculum


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _logits(seed=0, shape=(6, 5)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype("float32"), rng.normal(size=shape).astype("float32")


def test_reverse_gradient_is_identity_forward_and_reversed_backward():
    theta = tf.Variable(0.7)
    with tf.GradientTape(persistent=True) as tape:
        reversed_value = reverse_gradient(theta, 0.4)
        reversed_out = tf.sin(reversed_value) * 3.0
        plain_out = tf.sin(theta) * 3.0
    assert float(reversed_value) == pytest.approx(0.7)
    plain = float(tape.gradient(plain_out, theta))
    assert plain == pytest.approx(3.0 * math.cos(0.7), rel=1e-6)
    assert float(tape.gradient(reversed_out, theta)) == pytest.approx(-0.4 * plain, rel=1e-6)


def test_value_is_numpy_kd_at_the_current_temperature():
    teacher, student = _logits()
    loss = CurriculumTemperatureDistillation()
    temperature = 1.0 + 20.0 * _sigmoid(1.0)  # the official start, θ = 1
    assert loss.temperature() == pytest.approx(temperature, rel=1e-6)
    # At T ≈ 15.6 the KL is a small difference of float32 terms, times T² ≈ 244.
    np.testing.assert_allclose(
        loss(teacher, student).numpy(), numpy_kd(teacher, student, temperature), rtol=2e-4
    )
    fixed = CurriculumTemperatureDistillation(initial_temperature=4.0, min_temperature=2.0, temperature_range=6.0)
    assert fixed.temperature() == pytest.approx(4.0, rel=1e-6)
    np.testing.assert_allclose(
        fixed(teacher, student).numpy(), numpy_kd(teacher, student, 4.0), rtol=1e-5
    )


def test_temperature_gradient_is_reversed_and_scaled_by_lambda():
    teacher, student = _logits(1)
    loss = CurriculumTemperatureDistillation(lambda_max=0.8, curriculum_epochs=10, min_temperature=1.0,
                temperature_range=20.0, initial_temperature=5.0)
    # Keras's epoch 4 is the official script's epoch 5: halfway, λ = 0.4.
    lam = loss.reversal_lambda.update(step=0, epoch=4)
    assert lam == pytest.approx(0.4, rel=1e-6)
    assert loss.temperature() == pytest.approx(5.0, rel=1e-6)  # builds θ
    theta = loss.temperature_layer.logit
    student_logits = tf.Variable(student)
    with tf.GradientTape(persistent=True) as tape:
        mean_loss = tf.reduce_mean(loss(teacher, student_logits))
    theta0 = float(theta.numpy())

    def numpy_loss(logit):
        temperature = 1.0 + 20.0 * _sigmoid(logit)
        return float(np.mean(numpy_kd(teacher.astype("float64"), student.astype("float64"),
                                      temperature)))

    step = 1e-4
    finite_difference = (numpy_loss(theta0 + step) - numpy_loss(theta0 - step)) / (2 * step)
    assert abs(finite_difference) > 1e-3  # a case where the temperature matters
    np.testing.assert_allclose(
        float(tape.gradient(mean_loss, theta)), -lam * finite_difference, rtol=1e-3
    )
    # The student's gradient is not reversed: that of KD at the same T.
    with tf.GradientTape() as plain_tape:
        plain = tf.reduce_mean(tf_distill.losses.soft_label_kl(teacher, student_logits, 5.0))
    np.testing.assert_allclose(
        tape.gradient(mean_loss, student_logits).numpy(),
        plain_tape.gradient(plain, student_logits).numpy(),
        rtol=1e-4, atol=1e-7,
    )


def test_fit_learns_the_temperature_against_the_student_and_logs_it(teacher, student):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype("float32")
    y = rng.integers(0, 5, size=(32,))
    loss = CurriculumTemperatureDistillation(lambda_max=1.0, curriculum_epochs=2, initial_temperature=4.0)
    distiller = tf_distill.Distiller(teacher, student, loss, student_loss_weight=0.0)
    variables = [v.name for v in distiller.trainable_variables]
    assert sum(name.endswith("logit") for name in variables) == 1
    assert not any(w.name.endswith("logit") for w in distiller.student.weights)
    distiller.compile(optimizer=keras.optimizers.SGD(1.0), loss="sparse_categorical_crossentropy")
    history = distiller.fit(x, y, batch_size=8, epochs=3, verbose=0).history
    # λ's cosine curriculum over E = 2 epochs counted from 1, as the
    # official script: ½, 1, 1 in Keras's epochs 0, 1, 2.
    np.testing.assert_allclose(history["reversal_lambda"], [0.5, 1.0, 1.0], atol=1e-6)
    # λ > 0 from the first epoch: the temperature moved in it already.
    assert abs(history["temperature"][0] - 4.0) > 1e-4
    assert history["temperature"][-1] == pytest.approx(loss.temperature(), rel=1e-6)
    assert 1.0 < loss.temperature() < 21.0


def _official_lambda(epoch, lambda_max, curriculum_epochs):
    """CTKD's train_student.py: CosineDecay(max_value=0, min_value=-1,
    num_loops=E).get_value(epoch), epoch from 1; the reversal weight is its
    magnitude, scaled to lambda_max."""
    i = min(max(epoch, 0), curriculum_epochs)
    value = (math.cos(i * math.pi / curriculum_epochs) + 1.0) * 0.5
    value = value * (0.0 - -1.0) + -1.0
    return -value * lambda_max


@pytest.mark.parametrize("lambda_max,curriculum_epochs", [(1.0, 10), (0.5, 3), (2.0, 1)])
def test_reversal_lambda_per_epoch_is_the_official_schedule(lambda_max, curriculum_epochs):
    loss = CurriculumTemperatureDistillation(
        lambda_max=lambda_max, curriculum_epochs=curriculum_epochs
    )
    for keras_epoch in range(curriculum_epochs + 3):
        expected = _official_lambda(keras_epoch + 1, lambda_max, curriculum_epochs)
        value = float(loss.reversal_lambda.value(step=0, epoch=keras_epoch))
        assert value == pytest.approx(expected, abs=1e-6), keras_epoch
    # The first epoch's λ is not 0; the variable starts there before `fit`.
    first = _official_lambda(1, lambda_max, curriculum_epochs)
    assert first > 0.0
    assert float(loss.reversal_lambda.read()) == pytest.approx(first, abs=1e-6)


def test_reversal_lambda_at_the_papers_setting_by_hand():
    # λ_max = 1 over 10 epochs: (1 − cos(π e / 10)) / 2 for e = 1, 5, 10.
    schedule = ReversalCurriculum(0.0, 1.0, 10)
    values = [float(schedule.value(0, epoch)) for epoch in (0, 4, 9, 20)]
    np.testing.assert_allclose(values, [0.0244717, 0.5, 1.0, 1.0], atol=1e-6)


def test_temperature_climbs_the_loss(teacher, student):
    # With the student frozen (its learning rate is that of the temperature,
    # but one SGD step on θ alone is checked): θ moves up the loss's slope.
    x = np.random.default_rng(3).normal(size=(16, 8)).astype("float32")
    loss = CurriculumTemperatureDistillation(lambda_max=1.0, curriculum_epochs=1, initial_temperature=4.0)
    loss.reversal_lambda.update(0, 1)  # λ = 1
    loss.temperature()  # builds θ
    teacher_logits, student_logits = teacher(x), student(x)
    before = float(tf.reduce_mean(loss(teacher_logits, student_logits)))
    theta = loss.temperature_layer.logit
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(loss(teacher_logits, student_logits))
    theta.assign_sub(0.5 * tape.gradient(value, theta))  # a descent step, reversed
    after = float(tf.reduce_mean(loss(teacher_logits, student_logits)))
    assert after > before


def test_config_round_trip_and_registry(teacher, student):
    loss = tf_distill.losses.get({"name": "ctkd", "lambda_max": 0.5, "curriculum_epochs": 4})
    assert isinstance(loss, CurriculumTemperatureDistillation)
    config = keras.saving.serialize_keras_object(loss)
    again = keras.saving.deserialize_keras_object(config)
    assert again.get_config() == loss.get_config()
    assert again.reversal_lambda.get_config() == {
        "start": 0.0, "end": 0.5, "duration": 4, "unit": "epoch"}
    distiller = tf_distill.Distiller(teacher, student, loss)
    restored = tf_distill.Distiller.from_config(distiller.get_config())
    assert restored.distillation_losses[0].get_config() == loss.get_config()
    assert "ctkd" in tf_distill.losses.names()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lambda_max": -1.0}, "`lambda_max` must be a number >= 0"),
        ({"curriculum_epochs": 0}, "`curriculum_epochs` must be > 0"),
        ({"initial_temperature": 30.0}, "`initial_temperature` must lie strictly between"),
        ({"min_temperature": 0.0}, "`min_temperature` must be > 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CurriculumTemperatureDistillation(**kwargs)
