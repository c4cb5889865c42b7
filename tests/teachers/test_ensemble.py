"""Tests of distillation from several teachers (`Distiller(teacher=[...])`).

Loss values are checked against NumPy formulas computed from each model's
own outputs, with an optimizer that changes nothing so that a logged loss is
that of the initial weights.
"""

import json

import numpy as np
import pytest
from conftest import build_mlp
from recording import RecordCalls

from tf_distill import Distiller
from tf_distill import FeatureDistillation
from tf_distill import LogitsDistillation
from tf_distill import cache
from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.batches import INPUTS
from tf_distill.batches import TEACHER_OUTPUTS
from tf_distill.teachers import TeacherEnsemble
from tf_distill.teachers import ensemble_logits
from tf_distill.teachers import teacher_output_key

# ---------------------------------------------------------------------------
# NumPy references (float64).


def np_log_softmax(logits, temperature=1.0):
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_kd(teacher_logits, student_logits, temperature):
    """Hinton's `T² · KL(softmax(t/T) ‖ softmax(s/T))` per example."""
    log_p_teacher = np_log_softmax(teacher_logits, temperature)
    log_p_student = np_log_softmax(student_logits, temperature)
    kl = (np.exp(log_p_teacher) * (log_p_teacher - log_p_student)).sum(axis=-1)
    return temperature**2 * kl


def np_average_probabilities(logits_list, weights):
    """`log Σ w_k softmax(t_k)` with normalized weights, done naively."""
    weights = np.asarray(weights, np.float64) / np.sum(weights)
    mixture = sum(w * np.exp(np_log_softmax(t)) for w, t in zip(weights, logits_list))
    return np.log(mixture)


def np_average_logits(logits_list, weights):
    weights = np.asarray(weights, np.float64) / np.sum(weights)
    return sum(w * np.asarray(t, np.float64) for w, t in zip(weights, logits_list))


def logits_of(model, x):
    return np.asarray(model(x, training=False), np.float64)


def hidden_of(model, x):
    layer = model.get_layer(f"{model.name}_hidden")
    return np.asarray(keras.Model(model.inputs[0], layer.output)(x), np.float64)


def frozen_sgd():
    return keras.optimizers.SGD(learning_rate=0.0)


def logged_losses(distiller, x, y):
    """The first epoch's logs of one full-batch step that changes nothing."""
    distiller.compile(optimizer=frozen_sgd(), loss="sparse_categorical_crossentropy")
    history = distiller.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return {key: values[0] for key, values in history.history.items()}


def as_json(config):
    return json.loads(json.dumps(config))




def counted_mlp(name, hidden=8, batch_norm=False):
    """`Input -> <name>_hidden -> [BatchNorm, Dropout] -> <name>_calls -> logits`."""
    inputs = keras.Input((8,))
    x = keras.layers.Dense(hidden, activation="relu", name=f"{name}_hidden")(inputs)
    if batch_norm:
        # Would change moving statistics, and drop units, in training mode.
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        x = keras.layers.Dropout(0.9)(x)
    x = RecordCalls(name=f"{name}_calls")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name=f"{name}_logits")(x), name=name)


@pytest.fixture
def teachers():
    """Two teachers of different widths (so their hidden layers differ)."""
    return build_mlp("t1", hidden=16), build_mlp("t2", hidden=8)


def on_teacher(loss, teacher):
    loss.teacher = teacher
    return loss


# ---------------------------------------------------------------------------
# The ensemble's soft targets.


@pytest.mark.parametrize("weights", [None, [0.0, 2.0, 1.0, 1.0]], ids=["equal", "weighted"])
@pytest.mark.parametrize("ensemble", ["average_probabilities", "average_logits"])
def test_ensemble_logits_match_numpy_eager_and_compiled(ensemble, weights):
    rng = np.random.default_rng(0)
    logits = [rng.normal(scale=3.0, size=(6, 7)).astype("float32") for _ in range(4)]
    reference = (
        np_average_probabilities if ensemble == "average_probabilities" else np_average_logits
    )(logits, weights or [1.0] * 4)
    eager = ensemble_logits(logits, weights, ensemble)
    compiled = tf.function(lambda *t: ensemble_logits(list(t), weights, ensemble))(*logits)
    np.testing.assert_allclose(eager, reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(compiled, eager, rtol=1e-6, atol=1e-6)
    if ensemble == "average_probabilities":
        # Log-probabilities of a distribution: they exponentiate to sum 1.
        np.testing.assert_allclose(np.exp(eager).sum(-1), 1.0, rtol=1e-5)
        # At temperature T, softmax(log p / T) is the tempered ensemble
        # p^(1/T) / Σ p^(1/T), not the mean of the tempered teachers.
        p = np.exp(reference)
        tempered = p**0.5 / (p**0.5).sum(-1, keepdims=True)
        np.testing.assert_allclose(np.exp(np_log_softmax(eager, 2.0)), tempered, rtol=1e-4)
        mean_of_tempered = np.mean([np.exp(np_log_softmax(t, 2.0)) for t in logits], axis=0)
        assert np.abs(tempered - mean_of_tempered).max() > 1e-2


def test_ensemble_logits_errors():
    logits = [np.zeros((2, 3), "float32"), np.zeros((2, 3), "float32")]
    with pytest.raises(
        ValueError,
        match=r"Invalid value for argument `ensemble`. Expected one of "
        r"\['average_probabilities', 'average_logits'\]. Received: ensemble='max'",
    ):
        ensemble_logits(logits, None, "max")
    with pytest.raises(
        ValueError,
        match=r"The teachers' logits must have one shape to be "
        r"averaged. Received shapes \[\(2, 3\), \(2, 4\)\]",
    ):
        ensemble_logits([logits[0], np.zeros((2, 4), "float32")])


def test_two_teachers_averaging_logits_equal_one_averaged_teacher(teachers, student, tiny_data):
    """Equal weights and average_logits: the loss of one teacher whose logits
    are the average (a Functional model averaging t1 and t2)."""
    x, y = tiny_data
    t1, t2 = teachers
    inputs = keras.Input((8,))
    averaged = keras.Model(inputs, keras.layers.Average()([t1(inputs), t2(inputs)]), name="mean")
    several = Distiller(
        [t1, t2],
        student,
        LogitsDistillation(3.0),
        student_loss_weight=0.2,
        ensemble="average_logits",
    )
    single = Distiller(averaged, student, LogitsDistillation(3.0), student_loss_weight=0.2)
    logs_several, logs_single = logged_losses(several, x, y), logged_losses(single, x, y)
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(logs_several[key], logs_single[key], rtol=1e-5)
    expected = np_kd(
        np_average_logits([logits_of(t1, x), logits_of(t2, x)], [1, 1]), logits_of(student, x), 3.0
    ).mean()
    np.testing.assert_allclose(logs_several["distillation_loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(several.teacher(x), logits_of(averaged, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ensemble", ["average_probabilities", "average_logits"])
def test_weighted_ensemble_loss_matches_numpy(teachers, student, tiny_data, ensemble):
    x, y = tiny_data
    t1, t2 = teachers
    distiller = Distiller(
        {"first": t1, "second": t2},
        student,
        LogitsDistillation(2.0),
        student_loss_weight=0.0,
        teacher_weights={"second": 3.0, "first": 1.0},
        ensemble=ensemble,
    )
    assert distiller.teacher.teacher_weights == [1.0, 3.0]
    reference = (
        np_average_probabilities if ensemble == "average_probabilities" else (np_average_logits)
    )
    target = reference([logits_of(t1, x), logits_of(t2, x)], [1.0, 3.0])
    expected = np_kd(target, logits_of(student, x), 2.0).mean()
    np.testing.assert_allclose(logged_losses(distiller, x, y)["loss"], expected, rtol=1e-5)
    outputs = distiller.teacher_forward(x)
    np.testing.assert_allclose(outputs["logits"], target, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs["second/logits"], logits_of(t2, x), rtol=1e-6)


def test_probability_teachers_give_the_logit_teachers_loss(teachers, student, tiny_data):
    x, y = tiny_data
    softmax_teachers = [
        keras.Model(t.inputs[0], keras.layers.Softmax()(t.outputs[0]), name=f"{t.name}_p")
        for t in teachers
    ]
    losses = []
    for models, kind in ((list(teachers), "logits"), (softmax_teachers, "probabilities")):
        distiller = Distiller(
            models,
            student,
            LogitsDistillation(2.0),
            teacher_outputs=kind,
            teacher_weights=[1.0, 2.0],
        )
        losses.append(logged_losses(distiller, x, y)["loss"])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    with pytest.raises(ValueError, match=r"The teacher 't2_p' ends with a softmax"):
        Distiller([teachers[0], softmax_teachers[1]], student, LogitsDistillation())


# ---------------------------------------------------------------------------
# Per-teacher losses.


def test_per_teacher_losses_match_numpy(teachers, student, tiny_data):
    """KD on the ensemble, KD on teacher 1 alone, and a feature loss on
    teacher 2's hidden layer (by index, by name, and from a config dict)."""
    x, y = tiny_data
    t1, t2 = teachers
    losses = [
        LogitsDistillation(2.0),
        on_teacher(LogitsDistillation(4.0), "t1"),
        on_teacher(FeatureDistillation("mse", "t2_hidden", "student_hidden"), 1),
        {
            "name": "feature",
            "teacher": "t2",
            "loss": "l1",
            "teacher_layer_name": "t2_hidden",
            "student_layer_name": "student_hidden",
        },
    ]
    weights = [1.0, 0.5, 0.25, 2.0]
    distiller = Distiller(
        [t1, t2], student, losses, distillation_loss_weights=weights, student_loss_weight=0.3
    )
    assert distiller.loss_teachers == [None, "t1", "t2", "t2"]
    logs = logged_losses(distiller, x, y)

    student_logits, t1_logits, t2_logits = logits_of(student, x), logits_of(t1, x), logits_of(t2, x)
    t2_hidden, student_hidden = hidden_of(t2, x), hidden_of(student, x)
    distillation = (
        weights[0]
        * np_kd(np_average_probabilities([t1_logits, t2_logits], [1, 1]), student_logits, 2.0)
        + weights[1] * np_kd(t1_logits, student_logits, 4.0)
        + weights[2] * ((t2_hidden - student_hidden) ** 2).mean(axis=1)
        + weights[3] * np.abs(t2_hidden - student_hidden).mean(axis=1)
    )
    np.testing.assert_allclose(logs["distillation_loss"], distillation.mean(), rtol=1e-5)
    # Each term differs: a loss reading the wrong teacher would show.
    assert (
        abs(
            np_kd(t2_logits, student_logits, 4.0).mean()
            - np_kd(t1_logits, student_logits, 4.0).mean()
        )
        > 1e-3
    )

    outputs = distiller.teacher_forward(x)
    assert sorted(outputs) == ["logits", "t1/logits", "t2/logits", "t2/t2_hidden"]
    np.testing.assert_allclose(outputs["t2/t2_hidden"], t2_hidden, rtol=1e-6)
    assert teacher_output_key("t2", "t2_hidden") == "t2/t2_hidden"
    assert teacher_output_key("t2") == "t2/logits"


def test_loss_teacher_errors(teachers, student):
    feature = FeatureDistillation("mse", "t2_hidden", "student_hidden")
    with pytest.raises(
        ValueError,
        match=r"The distillation loss 0 \(FeatureDistillation\) reads "
        r"the teacher layer 't2_hidden' but does not say of which teacher. Set "
        r"its `teacher` to one of \['t1', 't2'\]",
    ):
        Distiller(list(teachers), student, feature)
    for bad in ("t3", 2, -1, True, 1.0):
        with pytest.raises(
            ValueError,
            match=r"Invalid `teacher` for the distillation loss 1 "
            r"\(LogitsDistillation\). Expected a teacher's name \(one of \['t1', "
            rf"'t2'\]\) or index \(0 to 1\). Received: teacher={bad!r}",
        ):
            Distiller(list(teachers), student, ["kd", on_teacher(LogitsDistillation(), bad)])
    # Teacher 1's hidden layer is unknown to teacher 2: the error names the model.
    with pytest.raises(ValueError, match="No layer named 't1_hidden' in the teacher model 't2'"):
        Distiller(
            list(teachers),
            student,
            on_teacher(FeatureDistillation("mse", "t1_hidden", "student_hidden"), "t2"),
        )
    # A single teacher accepts only its own name or index 0.
    Distiller(teachers[0], student, on_teacher(LogitsDistillation(), 0))
    with pytest.raises(ValueError, match=r"Received: teacher='t2'"):
        Distiller(teachers[0], student, on_teacher(LogitsDistillation(), "t2"))


# ---------------------------------------------------------------------------
# Validation of the teachers and their weights.


def test_teacher_weights_are_validated(teachers, student):
    models = list(teachers)

    def build(weights):
        return Distiller(models, student, "kd", teacher_weights=weights)

    with pytest.raises(
        ValueError,
        match=r"Number of teacher_weights \(1\) must match number of "
        r"teachers \(2\). Received: teacher_weights=\[1.0\]",
    ):
        build([1.0])
    with pytest.raises(
        ValueError,
        match=r"Each teacher weight must be a finite number >= 0. "
        r"Received: teacher_weights=\[1.0, -0.5\]",
    ):
        build([1.0, -0.5])
    for bad in ([1.0, float("nan")], [1.0, "2"], [True, 1.0]):
        with pytest.raises(ValueError, match="Each teacher weight must be a finite number >= 0"):
            build(bad)
    with pytest.raises(
        ValueError,
        match=r"`teacher_weights` must not all be 0. Received: "
        r"teacher_weights=\[0, 0.0\]",
    ):
        build([0, 0.0])
    with pytest.raises(
        ValueError,
        match=r"`teacher_weights` must be a list with one number >= 0 "
        r"per teacher, or a dict \{teacher_name: weight\}. Received: "
        r"teacher_weights=2.0",
    ):
        build(2.0)
    with pytest.raises(
        ValueError,
        match=r"A dict of `teacher_weights` must name every teacher "
        r"once. Expected keys \['t1', 't2'\]. Received: teacher_weights=\{'t1': 1\}",
    ):
        build({"t1": 1})
    # A zero weight leaves a teacher out of the ensemble, not out of the run.
    assert build([0.0, 1.0]).teacher.teacher_weights == [0.0, 1.0]
    with pytest.raises(
        ValueError,
        match=r"Invalid value for argument `ensemble`. Expected one of "
        r"\['average_probabilities', 'average_logits'\]. Received: ensemble='mean'",
    ):
        Distiller(models, student, "kd", ensemble="mean")
    with pytest.raises(
        ValueError,
        match=r"`teacher_weights` and `ensemble` apply to several "
        r"teachers: pass `teacher` as a list or a dict of models. Received: "
        r"teacher_weights=\[1.0\], ensemble=None",
    ):
        Distiller(models[0], student, "kd", teacher_weights=[1.0])


def test_teachers_are_validated(teachers, student, make_mlp):
    t1, t2 = teachers
    with pytest.raises(
        ValueError,
        match=r"`teacher` must hold at least one model. Received: "
        r"teacher=\[\]",
    ):
        Distiller([], student, "kd")
    with pytest.raises(
        ValueError,
        match=r"Each teacher must be a keras.Model. Received: "
        r"teacher\[1\]='t2' of type str",
    ):
        Distiller([t1, "t2"], student, "kd")
    with pytest.raises(
        ValueError,
        match=r"The teachers' names must be unique; they are "
        r"\['t1', 't1'\]. Pass `teacher` as a dict `\{name: model\}`",
    ):
        Distiller([t1, build_mlp("t1")], student, "kd")
    for bad in ("a/b", "", 3):
        with pytest.raises(
            ValueError, match="Each teacher's name must be a non-empty string without '/'"
        ):
            Distiller({bad: t1, "b": t2}, student, "kd")
    # Output shapes are checked per teacher, naming it.
    narrow = make_mlp("narrow", num_classes=3)
    with pytest.raises(
        ValueError,
        match=r"Teacher 'narrow' and student outputs must have the "
        r"same shape to be distilled. Received: teacher 'narrow' output shape "
        r"\(None, 3\) and student output shape \(None, 5\)",
    ):
        Distiller([t1, narrow], student, "kd")
    # A teacher left out of the ensemble, and read by no loss, is not checked...
    Distiller([t1, narrow], student, "kd", teacher_weights=[1.0, 0.0])
    # ...but one that a loss reads is.
    with pytest.raises(ValueError, match="Teacher 'narrow' and student outputs"):
        Distiller(
            [t1, narrow],
            student,
            ["kd", on_teacher(LogitsDistillation(), "narrow")],
            teacher_weights=[1.0, 0.0],
        )


# ---------------------------------------------------------------------------
# Frozen teachers, one pass each per step.


def test_teachers_frozen_and_run_once_per_step_in_inference_mode(tiny_data):
    x, y = tiny_data
    t1 = counted_mlp("t1", hidden=16, batch_norm=True)
    t2, t3 = counted_mlp("t2"), counted_mlp("t3")
    student = counted_mlp("student")
    losses = [
        LogitsDistillation(2.0),
        # Teacher 2 runs through its tap (a hidden layer), the others plainly.
        on_teacher(FeatureDistillation("mse", "t2_hidden", "student_hidden"), "t2"),
    ]
    distiller = Distiller([t1, t2, t3], student, losses)
    assert not {id(v) for v in distiller.trainable_variables} - {
        id(v) for v in student.trainable_variables
    }
    assert all(not t.trainable for t in (t1, t2, t3, distiller.teacher))
    before = {t.name: [w.numpy().copy() for w in t.weights] for t in (t1, t2, t3)}
    student_before = [w.numpy().copy() for w in student.weights]
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,
    )
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)

    for teacher in (t1, t2, t3):
        # Four steps: one inference-mode pass per teacher per step.
        assert teacher.get_layer(f"{teacher.name}_calls").training_flags == [False] * 4
        for a, w in zip(before[teacher.name], teacher.weights):
            np.testing.assert_array_equal(a, w.numpy())
    assert student.get_layer("student_calls").training_flags == [True] * 4
    assert not all(np.array_equal(a, w.numpy()) for a, w in zip(student_before, student.weights))
    # The ensemble teacher is deterministic despite Dropout(0.9) in t1.
    np.testing.assert_array_equal(distiller.teacher(x), distiller.teacher(x))


# ---------------------------------------------------------------------------
# Cached teacher outputs.


def test_cached_outputs_of_several_teachers(student, tiny_data):
    x, y = tiny_data
    t1, t2 = (counted_mlp("t1", hidden=16), counted_mlp("t2"))
    losses = [
        LogitsDistillation(2.0),
        on_teacher(FeatureDistillation("mse", "t2_hidden", "student_hidden"), "t2"),
    ]
    distiller = Distiller([t1, t2], student, losses, teacher_weights=[1.0, 2.0])
    outputs = {key: np.asarray(value) for key, value in distiller.teacher_forward(x).items()}
    counters = [t.get_layer(f"{t.name}_calls").training_flags for t in (t1, t2)]
    # Run eagerly, so that the counters see every teacher pass.
    distiller.compile(
        optimizer=frozen_sgd(), loss="sparse_categorical_crossentropy", run_eagerly=True
    )
    reference = distiller.fit(x, y, batch_size=len(x), verbose=0).history["loss"][0]
    assert [len(c) for c in counters] == [2, 2]  # teacher_forward, then the step
    calls = [2, 2]

    def cached_loss(teacher_outputs):
        history = distiller.fit(
            {INPUTS: x, TEACHER_OUTPUTS: teacher_outputs},
            y,
            batch_size=len(x),
            shuffle=False,
            verbose=0,
        )
        return history.history["loss"][0]

    np.testing.assert_allclose(cached_loss(outputs), reference, rtol=1e-6)
    # The ensemble is re-formed from each teacher's logits: a stale or
    # missing "logits" changes nothing.
    stale = dict(outputs, logits=np.zeros_like(outputs["logits"]))
    np.testing.assert_allclose(cached_loss(stale), reference, rtol=1e-6)
    without = {k: v for k, v in outputs.items() if k != "logits"}
    np.testing.assert_allclose(cached_loss(without), reference, rtol=1e-6)
    assert [len(c) for c in counters] == calls  # no teacher pass
    with pytest.raises(
        ValueError,
        match=r"The cached teacher outputs lack \['t2/t2_hidden'\], "
        r"which the distillation losses read. Received keys: \['logits', "
        r"'t1/logits', 't2/logits'\]",
    ):
        cached_loss({k: v for k, v in outputs.items() if k != "t2/t2_hidden"})

    # tf_distill's cache stores this format as is.
    dataset = cache.cache_teacher_outputs(distiller, (x, y), batch_size=len(x), shuffle=False)
    ((batch_x, _),) = list(dataset.take(1))
    assert sorted(batch_x[TEACHER_OUTPUTS]) == sorted(outputs)
    assert [len(c) for c in counters] == calls  # its pass is compiled: not counted
    history = distiller.fit(dataset, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], reference, rtol=1e-5)
    assert [len(c) for c in counters] == calls


# ---------------------------------------------------------------------------
# Serialization.


def test_several_teachers_round_trip(teachers, student, tiny_data, tmp_path):
    x, y = tiny_data
    t1, t2 = teachers
    losses = [
        LogitsDistillation(3.0),
        on_teacher(FeatureDistillation("mse", "t2_hidden", "student_hidden"), 1),
    ]
    distiller = Distiller(
        {"wide": t1, "narrow": t2},
        student,
        losses,
        distillation_loss_weights=[1.0, 0.5],
        teacher_weights=[2.0, 1.0],
        ensemble="average_logits",
        student_loss_weight=0.4,
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    distiller.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)

    config = as_json(distiller.get_config())
    assert list(config["teacher"]) == ["wide", "narrow"]
    assert config["teacher_weights"] == [2.0, 1.0]
    assert config["ensemble"] == "average_logits"
    assert config["distillation_loss_teachers"] == [None, "narrow"]
    rebuilt = Distiller.from_config(config)
    assert as_json(rebuilt.get_config()) == config
    assert isinstance(rebuilt.teacher, TeacherEnsemble)
    assert list(rebuilt.teachers) == ["wide", "narrow"]

    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert as_json(loaded.get_config()) == config
    for key, value in distiller.teacher_forward(x).items():
        np.testing.assert_allclose(loaded.teacher_forward(x)[key], value, rtol=1e-6)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), rtol=1e-6
    )
    assert all(not t.trainable for t in loaded.teachers.values())
    # Resuming continues the same run.
    resumed = loaded.fit(x, y, batch_size=32, shuffle=False, verbose=0).history["loss"]
    continued = distiller.fit(x, y, batch_size=32, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(resumed, continued, rtol=1e-5)


def test_single_teacher_api_is_unchanged(teacher, student, tiny_data):
    x, _ = tiny_data
    distiller = Distiller(
        teacher,
        student,
        [LogitsDistillation(2.0), FeatureDistillation("mse", "teacher_logits", "student_logits")],
    )
    assert distiller.teacher is teacher
    assert distiller.teachers == {"teacher": teacher}
    assert not distiller.has_several_teachers
    assert sorted(distiller.teacher_forward(x)) == ["logits", "teacher_logits"]
    config = distiller.get_config()
    # Built on `keras.Model.get_config()`: its name (and on Keras 3 its
    # `trainable` and `dtype`), then the Distiller's own keys.
    base = ["name"] if LEGACY_KERAS else ["dtype", "name", "trainable"]
    assert sorted(config) == sorted(base + [
        "adapter_batch_norm",
        "distillation_loss_weights",
        "distillation_losses",
        "student",
        "student_loss_weight",
        "teacher",
        "teacher_outputs",
    ])


def test_a_losss_teacher_given_in_its_constructor_or_config(teachers, student, tiny_data):
    """`teacher=` in a loss's constructor or config dict, as set after
    construction: the same teachers read, the same losses logged."""
    x, y = tiny_data
    t1, t2 = teachers
    feature = {
        "name": "feature",
        "loss": "mse",
        "teacher_layer_name": "t2_hidden",
        "student_layer_name": "student_hidden",
    }
    as_attributes = [
        on_teacher(LogitsDistillation(4.0), "t1"),
        on_teacher(FeatureDistillation("mse", "t2_hidden", "student_hidden"), "t2"),
    ]
    in_constructors = [
        LogitsDistillation(4.0, teacher="t1"),
        FeatureDistillation("mse", "t2_hidden", "student_hidden", teacher=1),
    ]
    in_configs = [{"name": "kd", "temperature": 4.0, "teacher": 0}, {**feature, "teacher": "t2"}]
    logs = []
    for losses in (as_attributes, in_constructors, in_configs):
        distiller = Distiller([t1, t2], student, losses, student_loss_weight=0.3)
        assert distiller.loss_teachers == ["t1", "t2"]
        assert [loss.teacher for loss in distiller.distillation_losses] in (
            ["t1", "t2"],
            ["t1", 1],
            [0, "t2"],
        )
        logs.append(logged_losses(distiller, x, y))
    for other in logs[1:]:
        for key, value in logs[0].items():
            np.testing.assert_allclose(other[key], value, rtol=1e-6)
    # The loss's config holds its teacher; a rebuilt Distiller reads it.
    config = as_json(distiller.get_config())
    assert [loss["config"]["teacher"] for loss in config["distillation_losses"]] == [0, "t2"]
    assert Distiller.from_config(config).loss_teachers == ["t1", "t2"]
