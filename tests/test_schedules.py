"""Schedules of the temperature and the loss weights: values, use in `fit`, history, configs."""

import math

import numpy as np
import pytest

import tf_distill
from tf_distill import schedules
from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.schedules import Constant
from tf_distill.schedules import Cosine
from tf_distill.schedules import Linear
from tf_distill.schedules import Step


def _linear(t, start, end, duration):
    return start + (end - start) * np.clip(t / duration, 0.0, 1.0)


def _cosine(t, start, end, duration):
    return end + (start - end) * (1.0 + np.cos(np.pi * np.clip(t / duration, 0.0, 1.0))) / 2.0


@pytest.mark.parametrize(
    "schedule, reference",
    [
        (Constant(2.5), lambda t: 2.5),
        (Linear(8.0, 2.0, 6), lambda t: _linear(t, 8.0, 2.0, 6)),
        (Linear(0.1, 0.9, 4), lambda t: _linear(t, 0.1, 0.9, 4)),
        (Cosine(8.0, 2.0, 10), lambda t: _cosine(t, 8.0, 2.0, 10)),
        (Cosine(0.0, 1.0, 3), lambda t: _cosine(t, 0.0, 1.0, 3)),
        (Step([8.0, 4.0, 2.0], [5, 10]), lambda t: [8.0, 4.0, 2.0][int(t >= 5) + int(t >= 10)]),
    ],
)
def test_values_per_epoch_match_numpy(schedule, reference):
    for epoch in range(14):
        # An epoch-unit schedule ignores the step.
        value = float(schedule.value(step=1000 + epoch, epoch=epoch))
        np.testing.assert_allclose(value, reference(epoch), rtol=1e-6, atol=1e-6)


def test_values_per_step_match_numpy():
    schedule = Cosine(4.0, 1.0, duration=50, unit="step")
    for step in (0, 1, 7, 25, 49, 50, 51, 500):
        value = float(schedule.value(step=step, epoch=99))
        np.testing.assert_allclose(value, _cosine(step, 4.0, 1.0, 50), rtol=1e-6)
    step_schedule = Step([1.0, 0.5], [100], unit="step")
    assert [float(step_schedule.value(s, 0)) for s in (99, 100)] == [1.0, 0.5]


def test_docstring_examples_and_bounds():
    assert float(Linear(0.9, 0.1, duration=4).value(step=0, epoch=2)) == pytest.approx(0.5)
    assert float(Cosine(8.0, 2.0, duration=10).value(step=0, epoch=5)) == pytest.approx(5.0)
    assert Cosine(8.0, 2.0, 10).bounds == (2.0, 8.0)
    assert Step([1.0, 3.0, 2.0], [1, 2]).bounds == (1.0, 3.0)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Linear(1.0, 0.0, 0), "`duration` must be a number of epochs (or steps) > 0"),
        (lambda: Cosine(1.0, 0.0, 5, unit="batch"), "Invalid value for argument `unit`"),
        (lambda: Step([1.0, 2.0], [1, 2]), "one more entry than `boundaries`"),
        (lambda: Step([1.0, 2.0, 3.0], [5, 2]), "`boundaries` must increase"),
        (lambda: Linear("a", 0.0, 5), "`start` must be a finite number"),
        (lambda: schedules.get({"schedule": "exponential"}), "Expected one of"),
        (
            lambda: schedules.get({"schedule": "linear", "start": 1, "stop": 2}),
            r"A 'linear' schedule takes \['start', 'end', 'duration', 'unit'\]",
        ),
        (lambda: schedules.get("cosine"), "Expected a number, a schedule"),
        (
            lambda: tf_distill.LogitsDistillation(temperature=Linear(4.0, 0.0, 3)),
            "`temperature` must be > 0.0 at every epoch",
        ),
    ],
)
def test_bad_schedules_are_refused(build, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_float_temperature_unchanged():
    loss = tf_distill.LogitsDistillation(temperature=4)
    assert loss.temperature == 4.0 and isinstance(loss.temperature, float)
    assert loss.get_config()["temperature"] == 4.0
    with pytest.raises(ValueError, match="`temperature` must be > 0. Received: temperature=0"):
        tf_distill.LogitsDistillation(temperature=0)


def test_weight_schedules_are_checked(teacher, student):
    with pytest.raises(ValueError, match=r"`student_loss_weight` must be in \[0.0, 1.0\]"):
        tf_distill.Distiller(teacher, student, "kd", student_loss_weight=Linear(0.5, 1.5, 3))
    with pytest.raises(ValueError, match="`distillation_loss_weights` must be >= 0.0"):
        tf_distill.Distiller(teacher, student, "kd", distillation_loss_weights=[Linear(1, -1, 3)])


@pytest.mark.parametrize(
    "schedule",
    [Constant(3.0, unit="step"), Linear(8.0, 2.0, 10), Cosine(8.0, 2.0, 10, "step"),
     Step([4.0, 2.0], [3])],
)
def test_serialization_round_trip(schedule):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    assert schedules.get(schedules.serialize(schedule)).get_config() == schedule.get_config()
    for loss in (
        tf_distill.LogitsDistillation(temperature=schedule),
        tf_distill.losses.DecoupledDistillation(temperature=schedule),
        tf_distill.losses.CorrelationDistillation(temperature=schedule),
    ):
        config = keras.saving.serialize_keras_object(loss)
        again = keras.saving.deserialize_keras_object(config)
        assert again.temperature == schedule
        assert again.get_config() == loss.get_config()


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = rng.integers(0, 5, size=(n,))
    return x, y


def _kd_distiller(teacher, student, temperature, steps_per_execution=1, **kwargs):
    distiller = tf_distill.Distiller(
        teacher, student, tf_distill.LogitsDistillation(temperature=temperature), **kwargs
    )
    # Learning rate 0: the models stay fixed, so each epoch's loss shows the
    # schedule alone.
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy",
        steps_per_execution=steps_per_execution,
    )
    return distiller


def test_history_logs_each_scheduled_value_and_the_step_uses_it(teacher, student):
    x, y = _data()
    temperature = Linear(4.0, 1.0, duration=2)
    alpha = Step([0.9, 0.2], boundaries=[1])
    weight = Cosine(1.0, 3.0, duration=3)
    distiller = _kd_distiller(
        teacher, student, temperature, student_loss_weight=alpha,
        distillation_loss_weights=[weight],
    )
    history = distiller.fit(x, y, batch_size=8, epochs=3, verbose=0).history
    epochs = np.arange(3)
    np.testing.assert_allclose(history["temperature"], _linear(epochs, 4.0, 1.0, 2), rtol=1e-6)
    np.testing.assert_allclose(history["student_loss_weight"], [0.9, 0.2, 0.2], rtol=1e-6)
    np.testing.assert_allclose(
        history["distillation_loss_weight_0"], _cosine(epochs, 1.0, 3.0, 3), rtol=1e-6
    )
    # Each epoch's distillation loss is the KD at that epoch's temperature,
    # times that epoch's weight: the compiled step read the variables.
    for epoch in range(3):
        fixed = _kd_distiller(teacher, student, float(_linear(epoch, 4.0, 1.0, 2)))
        kd = float(fixed.compute_loss_terms(x, y, training=True)["distillation_loss"])
        np.testing.assert_allclose(
            history["distillation_loss"][epoch], kd * _cosine(epoch, 1.0, 3.0, 3), rtol=1e-4
        )
        student_loss = history["student_loss"][epoch]
        alpha_value = [0.9, 0.2, 0.2][epoch]
        expected_total = alpha_value * student_loss + (1 - alpha_value) * history[
            "distillation_loss"][epoch]
        np.testing.assert_allclose(history["loss"][epoch], expected_total, rtol=1e-4)


def test_every_callback_of_fit_sees_the_scheduled_values(teacher, student):
    # TensorBoard and CSVLogger write the logs as they reach them at the
    # epoch's end: the scheduled values must be there already.
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(dict(logs))

    x, y = _data()
    distiller = _kd_distiller(teacher, student, Linear(4.0, 1.0, duration=1))
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[Record()])
    assert [logs["temperature"] for logs in seen] == pytest.approx([4.0, 1.0])


def test_step_schedule_is_computed_in_the_step(teacher, student):
    # The same batch 4 times per epoch: each step's KD is the same, so an
    # epoch's mean distillation loss is KD times the mean weight of its steps.
    x, y = _data(8)
    x4, y4 = np.concatenate([x] * 4), np.concatenate([y] * 4)
    weight = Linear(0.0, 1.0, duration=6, unit="step")
    distiller = _kd_distiller(
        teacher, student, 2.0, steps_per_execution=2, distillation_loss_weights=[weight]
    )
    history = distiller.fit(x4, y4, batch_size=8, epochs=2, verbose=0, shuffle=False).history
    kd = float(_kd_distiller(teacher, student, 2.0).compute_loss_terms(x, y, training=True)[
        "distillation_loss"])
    for epoch in range(2):
        steps = np.arange(4 * epoch, 4 * epoch + 4)
        np.testing.assert_allclose(
            history["distillation_loss"][epoch], kd * _linear(steps, 0.0, 1.0, 6).mean(), rtol=1e-4
        )
    # Logged: the value at each epoch's last step.
    np.testing.assert_allclose(history["distillation_loss_weight_0"], [3 / 6, 1.0], rtol=1e-6)


def test_distiller_config_round_trips_schedules(teacher, student):
    distiller = tf_distill.Distiller(
        teacher, student,
        [tf_distill.LogitsDistillation(temperature=Cosine(8.0, 2.0, 10)), "kd"],
        distillation_loss_weights=[Linear(0.0, 1.0, 5), 0.5],
        student_loss_weight=Step([0.5, 0.1], [3]),
    )
    config = distiller.get_config()
    restored = tf_distill.Distiller.from_config(config)
    assert restored.student_loss_weight == Step([0.5, 0.1], [3])
    assert restored.distillation_loss_weights == [Linear(0.0, 1.0, 5), 0.5]
    assert restored.distillation_losses[0].temperature == Cosine(8.0, 2.0, 10)
    assert restored.get_config()["distillation_losses"] == config["distillation_losses"]
    summary = []
    restored.summary(print_fn=summary.append)
    assert "Step(values=[0.5, 0.1]" in "\n".join(summary)
    # Only scheduled values are logged (the second loss's temperature is a number).
    names = set(restored.scheduled_values())
    assert names == {"temperature", "student_loss_weight", "distillation_loss_weight_0"}


def test_cosine_is_smooth_at_both_ends():
    schedule = Cosine(0.0, 1.0, 10)
    assert float(schedule.value(0, 0)) == 0.0
    np.testing.assert_allclose(float(schedule.value(0, 1)), (1 - math.cos(math.pi / 10)) / 2, rtol=1e-6)


@pytest.mark.legacy_keras
@pytest.mark.skipif(not LEGACY_KERAS, reason="needs TF_USE_LEGACY_KERAS=1")
def test_schedules_and_ctkd_run_on_tf_keras(teacher, student):
    x, y = _data(16)
    distiller = tf_distill.Distiller(
        teacher, student,
        [tf_distill.LogitsDistillation(temperature=Linear(4.0, 1.0, 2)),
         tf_distill.losses.CurriculumTemperatureDistillation(curriculum_epochs=1)],
        student_loss_weight=Cosine(0.5, 0.1, 2),
        distillation_loss_weights=[Linear(0.0, 1.0, 4, unit="step"), 1.0],
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = distiller.fit(x, y, epochs=3, batch_size=8, verbose=0).history
    np.testing.assert_allclose(history["temperature_0"], [4.0, 2.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(history["student_loss_weight"], [0.5, 0.3, 0.1], rtol=1e-6)
    # Two steps an epoch: the weight at steps 1, 3 and 5.
    np.testing.assert_allclose(history["distillation_loss_weight_0"], [0.25, 0.75, 1.0], rtol=1e-6)
    # CTKD counts epochs from 1, as its official script: λ(1) = 1 over E = 1.
    np.testing.assert_allclose(history["reversal_lambda"], [1.0, 1.0, 1.0], atol=1e-6)
    assert len(history["temperature_1"]) == 3


# --- DKD's warm-up --------------------------------------------------------------


@pytest.mark.parametrize("weight,warmup", [(1.0, 20), (0.1, 3), (8.0, 2)])
def test_linear_warmup_is_dkds_min_epoch_over_warmup(weight, warmup):
    # mdistiller's DKD: min(epoch / warmup, 1) with epoch counted from 1.
    schedule = schedules.linear_warmup(weight, warmup)
    assert isinstance(schedule, Linear)
    for keras_epoch in range(warmup + 5):
        expected = weight * min((keras_epoch + 1) / warmup, 1.0)
        assert float(schedule.value(step=0, epoch=keras_epoch)) == pytest.approx(expected, rel=1e-6)
    assert schedule == Linear(weight / warmup, weight, warmup - 1)
    assert schedules.get(schedules.serialize(schedule)) == schedule


def test_linear_warmup_of_one_epoch_is_the_weight():
    assert schedules.linear_warmup(0.5, 1) == 0.5


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"weight": -1.0, "warmup_epochs": 3}, r"`weight` must be >= 0. Received: weight=-1.0"),
        ({"weight": 1.0, "warmup_epochs": 0},
         r"`warmup_epochs` must be a whole number of epochs >= 1. Received: warmup_epochs=0"),
        ({"weight": 1.0, "warmup_epochs": 2.5},
         r"`warmup_epochs` must be a whole number of epochs >= 1. Received: warmup_epochs=2.5"),
        ({"weight": "1", "warmup_epochs": 2},
         r"`weight` must be a finite number. Received: weight='1'"),
    ],
)
def test_linear_warmup_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        schedules.linear_warmup(**kwargs)


def test_dkd_with_linear_warmup_trains_as_the_loss_scaled_per_epoch(teacher, student):
    """One Distiller with the warm-up schedule gives the weights of training
    each epoch e (from 1) at DKD · min(e / W, 1), as mdistiller scales it."""
    x, y = _data(32)
    warmup, epochs = 3, 4
    initial = student.get_weights()
    twin = keras.models.clone_model(student)
    twin.set_weights(initial)

    def dkd():
        return tf_distill.losses.DecoupledDistillation(alpha=1.0, beta=8.0, temperature=4.0)

    scheduled = tf_distill.Distiller(
        teacher, student, dkd(), student_loss_weight=0.5,
        distillation_loss_weights=[schedules.linear_warmup(1.0, warmup)],
    )
    scheduled.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    history = scheduled.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0).history
    np.testing.assert_allclose(
        history["distillation_loss_weight_0"], [1 / 3, 2 / 3, 1.0, 1.0], rtol=1e-6
    )

    optimizer = keras.optimizers.SGD(0.05)
    for epoch in range(1, epochs + 1):
        per_epoch = tf_distill.Distiller(
            teacher, twin, dkd(), student_loss_weight=0.5,
            distillation_loss_weights=[min(epoch / warmup, 1.0)],
        )
        per_epoch.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        per_epoch.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for got, expected in zip(student.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(student.get_weights()[0], initial[0])  # it trained
