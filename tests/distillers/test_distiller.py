"""Tests of `tf_distill.Distiller`.

Loss values are checked against NumPy formulas computed from the models'
own outputs; compatibility with `keras.distillation` is checked by running
its test programs with only the import changed.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from recording import RecordCalls

import tf_distill
from tf_distill import Distiller
from tf_distill import FeatureDistillation
from tf_distill import LogitsDistillation
from tf_distill.backend import keras
from tf_distill.backend import tf

# ---------------------------------------------------------------------------
# NumPy references (float64).


def np_log_softmax(logits, temperature=1.0):
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_crossentropy(labels, logits):
    """Per-position cross-entropy of logits with integer labels."""
    log_probs = np_log_softmax(logits)
    return -np.take_along_axis(log_probs, np.asarray(labels)[..., None], axis=-1)[..., 0]


def np_kd(teacher_logits, student_logits, temperature):
    """Hinton's `T² · KL(softmax(t/T) ‖ softmax(s/T))` per position."""
    log_p_teacher = np_log_softmax(teacher_logits, temperature)
    log_p_student = np_log_softmax(student_logits, temperature)
    kl = (np.exp(log_p_teacher) * (log_p_teacher - log_p_student)).sum(axis=-1)
    return temperature**2 * kl


def np_mse(teacher_features, student_features):
    difference = np.asarray(teacher_features, np.float64) - np.asarray(student_features, np.float64)
    return (difference**2).reshape(len(difference), -1).mean(axis=1)


def outputs_of(model, layer_name, x):
    """The output of `layer_name` (or the model's output) on `x`, float64."""
    if layer_name is None:
        return np.asarray(model(x, training=False), np.float64)
    extractor = keras.Model(model.inputs[0], model.get_layer(layer_name).output)
    return np.asarray(extractor(x, training=False), np.float64)


def as_json(config):
    """`config` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(config))


def frozen_sgd():
    """An optimizer that changes nothing, so a logged loss is that of the
    initial weights."""
    return keras.optimizers.SGD(learning_rate=0.0)


# ---------------------------------------------------------------------------
# Test models.


class SimpleModel(keras.Model):
    """The subclassed teacher/student of keras.distillation's tests."""

    def __init__(self, vocab_size=10, hidden_dim=32, **kwargs):
        super().__init__(**kwargs)
        self.dense1 = keras.layers.Dense(hidden_dim, activation="relu")
        self.dense2 = keras.layers.Dense(vocab_size)

    def call(self, inputs, training=None):
        return self.dense2(self.dense1(inputs))




def counted_mlp(name, hidden=16):
    """An MLP with a RecordCalls layer after `<name>_hidden`."""
    inputs = keras.Input((8,))
    hidden_out = keras.layers.Dense(hidden, activation="relu", name=f"{name}_hidden")(inputs)
    hidden_out = RecordCalls(name=f"{name}_calls")(hidden_out)
    outputs = keras.layers.Dense(5, name=f"{name}_logits")(hidden_out)
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------------------
# keras.distillation's own tests, with only the import changed.


def test_keras_distillation_port_subclassed_models():
    """keras.distillation distiller_test.TestDistiller, on tf_distill."""
    x = np.random.random((20, 5)).astype(np.float32)
    teacher = SimpleModel(vocab_size=10, hidden_dim=32)
    student = SimpleModel(vocab_size=10, hidden_dim=16)
    teacher(x[:2])
    student(x[:2])
    distiller = Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=LogitsDistillation(temperature=2.0),
        student_loss_weight=0.5,
    )
    distiller.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    # test_distiller_initialization / test_teacher_freezing
    assert teacher.trainable is False
    assert student.trainable is True
    assert distiller.student_loss_weight == 0.5
    assert isinstance(distiller.distillation_losses, list)
    assert len(distiller.distillation_losses) == 1
    assert isinstance(distiller.distillation_losses[0], LogitsDistillation)
    assert distiller.distillation_losses[0].temperature == 2.0
    assert distiller.optimizer is not None
    new_teacher = SimpleModel()
    assert new_teacher.trainable
    Distiller(new_teacher, student, LogitsDistillation(2.0))
    assert new_teacher.trainable is False
    # test_distiller_call
    np.testing.assert_allclose(distiller(x), student(x), rtol=1e-6)
    assert tuple(distiller(x).shape) == (20, 10)

    # test_full_training_workflow
    np.random.seed(42)
    x_train = np.random.random((100, 5)).astype(np.float32)
    y_train = np.random.randint(0, 10, (100,)).astype(np.int32)
    x_val = np.random.random((20, 5)).astype(np.float32)
    y_val = np.random.randint(0, 10, (20,)).astype(np.int32)
    history = distiller.fit(
        x_train, y_train, validation_data=(x_val, y_val), epochs=2, batch_size=16, verbose=0
    )
    for key in ("loss", "total_loss", "student_loss", "distillation_loss", "accuracy"):
        assert key in history.history
        assert "val_" + key in history.history
        assert len(history.history[key]) == 2
        assert np.all(np.isfinite(history.history[key]))
    assert history.history["loss"] == history.history["total_loss"]
    predictions = distiller.predict(x_val[:5], verbose=0)
    assert predictions.shape == (5, 10)
    initial = [w.numpy().copy() for w in student.trainable_weights]
    distiller.fit(x_train[:10], y_train[:10], epochs=1, verbose=0)
    assert any(
        not np.allclose(a, w.numpy(), atol=1e-6) for a, w in zip(initial, student.trainable_weights)
    )

    # test_evaluation_workflow
    results = distiller.evaluate(x_val, y_val, verbose=0)
    assert isinstance(results, list) and len(results) == 5
    assert np.all(np.isfinite(results))


@pytest.mark.slow
def test_keras_distillation_port_multiple_losses_and_weights():
    """test_multi_distillation_loss_functionality and _validation, and
    test_student_loss_weighting."""
    x = np.random.random((10, 5)).astype(np.float32)
    y = np.random.randint(0, 10, (10,))
    teacher = SimpleModel(10, 32)
    student = SimpleModel(10, 16)
    teacher(x[:2])
    student(x[:2])
    losses = [LogitsDistillation(temperature=3.0), LogitsDistillation(temperature=2.0)]
    distiller = Distiller(teacher, student, losses, distillation_loss_weights=[0.7, 0.3])
    distiller.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    assert len(distiller.distillation_losses) == 2
    assert distiller.distillation_loss_weights == [0.7, 0.3]
    history = distiller.fit(x, y, epochs=1, verbose=0)
    for key in ("total_loss", "student_loss", "distillation_loss"):
        assert key in history.history
    with pytest.raises(ValueError, match="must match number of distillation_losses"):
        Distiller(teacher, student, losses, distillation_loss_weights=[1.0])

    for weight in (0.0, 1.0):
        distiller = Distiller(teacher, student, LogitsDistillation(2.0), student_loss_weight=weight)
        distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        logs = distiller.fit(x[:5], y[:5], epochs=1, verbose=0).history
        # α = 0 is pure distillation, α = 1 pure supervised training.
        expected = logs["distillation_loss"] if weight == 0.0 else logs["student_loss"]
        np.testing.assert_allclose(logs["total_loss"], expected, rtol=1e-6)


def test_keras_distillation_port_sequential_features():
    """distillation_loss_test.TestEndToEndDistillation (multiple losses)."""

    def sequential(prefix):
        return keras.Sequential(
            [
                keras.layers.Dense(32, activation="relu", name=f"{prefix}_dense_1"),
                keras.layers.Dense(16, activation="relu", name=f"{prefix}_dense_2"),
                keras.layers.Dense(10, name=f"{prefix}_output"),
            ]
        )

    teacher, student = sequential("teacher"), sequential("student")
    x = np.random.random((32, 20)).astype(np.float32)
    y = np.random.randint(0, 10, (32,)).astype(np.int32)
    teacher(x[:2])
    student(x[:2])
    distiller = Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=[
            LogitsDistillation(temperature=3.0),
            FeatureDistillation(
                loss="mse",
                teacher_layer_name="teacher_dense_1",
                student_layer_name="student_dense_1",
            ),
            FeatureDistillation(
                loss="mse",
                teacher_layer_name="teacher_dense_2",
                student_layer_name="student_dense_2",
            ),
        ],
        distillation_loss_weights=[1.0, 0.5, 0.3],
        student_loss_weight=0.5,
    )
    distiller.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = distiller.fit(x, y, epochs=2, verbose=0)
    for key in ("total_loss", "student_loss", "distillation_loss"):
        assert np.all(np.isfinite(history.history[key]))
    assert history.history["total_loss"][-1] > 0.0
    # The distillation term is the weighted sum of the three losses.
    features = {
        name: (outputs_of(teacher, "teacher_" + name, x), outputs_of(student, "student_" + name, x))
        for name in ("dense_1", "dense_2")
    }
    expected = (
        np_kd(outputs_of(teacher, None, x), outputs_of(student, None, x), 3.0)
        + 0.5 * np_mse(*features["dense_1"])
        + 0.3 * np_mse(*features["dense_2"])
    ).mean()
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-5)


def test_keras_distillation_port_serialization(tmp_path):
    """test_distiller_serialization_and_saving."""
    teacher = keras.Sequential(
        [keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10, name="teacher_output")]
    )
    student = keras.Sequential(
        [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(10, name="student_output")]
    )
    original = Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=LogitsDistillation(temperature=3.0, loss="kl_divergence"),
        student_loss_weight=0.7,
    )
    x = np.random.random((2, 20)).astype(np.float32)
    original(x)
    teacher(x)
    config = original.get_config()
    for key in (
        "teacher",
        "student",
        "distillation_losses",
        "distillation_loss_weights",
        "student_loss_weight",
    ):
        assert key in config
    json.dumps(config)
    rebuilt = Distiller.from_config(config)
    assert rebuilt.student_loss_weight == 0.7
    assert isinstance(rebuilt.distillation_losses[0], LogitsDistillation)
    assert rebuilt.distillation_losses[0].temperature == 3.0
    assert tuple(rebuilt(x).shape) == (2, 10)
    original.compile(loss="sparse_categorical_crossentropy")
    path = str(tmp_path / "distiller_model.keras")
    original.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.student_loss_weight == 0.7
    np.testing.assert_allclose(loaded(x), original(x), rtol=1e-6)


# ---------------------------------------------------------------------------
# Validation errors.


def test_student_loss_weight_errors(teacher, student):
    losses = LogitsDistillation()
    for bad in (1.5, -0.1):
        with pytest.raises(
            ValueError,
            match=rf"`student_loss_weight` must be in \[0, 1\]. Received: student_loss_weight={bad}",
        ):
            Distiller(teacher, student, losses, student_loss_weight=bad)
    for bad in ("0.5", True, None):
        with pytest.raises(ValueError, match=r"`student_loss_weight` must be a number in \[0, 1\]"):
            Distiller(teacher, student, losses, student_loss_weight=bad)


def test_distillation_loss_errors(teacher, student):
    distiller = Distiller(teacher, student, None)
    with pytest.raises(ValueError, match="'distillation_losses' cannot be `None`"):
        distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(
        ValueError, match=r"must hold at least one loss. Received: distillation_losses=\[\]"
    ):
        Distiller(teacher, student, [])
    with pytest.raises(
        ValueError,
        match=r"Number of distillation_loss_weights \(1\) must match number of "
        r"distillation_losses \(2\)",
    ):
        Distiller(teacher, student, ["kd", "kd"], distillation_loss_weights=[1.0])
    with pytest.raises(ValueError, match="Each distillation loss weight must be a number >= 0"):
        Distiller(teacher, student, ["kd"], distillation_loss_weights=[-1.0])
    with pytest.raises(ValueError, match="Unknown distillation loss"):
        Distiller(teacher, student, "no_such_loss")


def test_model_type_errors(teacher, student):
    with pytest.raises(
        ValueError,
        match="`teacher` must be a keras.Model. Received: teacher='not_a_model' of type str",
    ):
        Distiller("not_a_model", student, LogitsDistillation())
    with pytest.raises(ValueError, match="`student` must be a keras.Model. Received: student=None"):
        Distiller(teacher, None, LogitsDistillation())
    with pytest.raises(ValueError, match="Invalid value for argument `teacher_outputs`"):
        Distiller(teacher, student, LogitsDistillation(), teacher_outputs="probs")


def test_unknown_layer_name_lists_available_layers(teacher, student):
    loss = FeatureDistillation(teacher_layer_name="nope", student_layer_name="student_hidden")
    with pytest.raises(
        ValueError,
        match=r"No layer named 'nope' in the teacher model 'teacher'. Available layers: "
        r"\['teacher_input', 'teacher_hidden', 'teacher_logits'\]",
    ):
        Distiller(teacher, student, loss)
    loss = FeatureDistillation(teacher_layer_name="teacher_hidden", student_layer_name="nope")
    with pytest.raises(ValueError, match="No layer named 'nope' in the student model 'student'"):
        Distiller(teacher, student, loss)


def test_output_shape_mismatch_names_both_shapes(teacher, make_mlp):
    student = make_mlp("student", num_classes=3)
    with pytest.raises(
        ValueError,
        match=r"Received: teacher output shape \(None, 5\) and student output shape \(None, 3\)",
    ):
        Distiller(teacher, student, LogitsDistillation())


def test_feature_shape_mismatch_is_refused_before_training(teacher, student, tiny_data):
    x, y = tiny_data
    distiller = Distiller(
        teacher, student, FeatureDistillation("mse", "teacher_hidden", "student_hidden")
    )
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    before = [w.numpy().copy() for w in student.weights]
    with pytest.raises(
        ValueError,
        match=r"FeatureDistillation needs teacher and student features of the same shape. "
        r"Received: teacher \(.*32\) from layer 'teacher_hidden' and student \(.*8\)",
    ):
        distiller.fit(x, y, verbose=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, student.weights))


def test_compile_errors(teacher, student):
    distiller = Distiller(teacher, student, LogitsDistillation())
    with pytest.raises(ValueError, match="'loss' cannot be `None`."):
        distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="as `loss` or as `student_loss_fn`, not both"):
        distiller.compile(loss="sparse_categorical_crossentropy", student_loss_fn="mse")
    with pytest.raises(ValueError, match="metrics must be a list or tuple"):
        distiller.compile(loss="sparse_categorical_crossentropy", metrics="accuracy")
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\]. Received: alpha=2"):
        distiller.compile(loss="sparse_categorical_crossentropy", alpha=2)
    with pytest.raises(ValueError, match="`temperature` must be > 0. Received: temperature=0"):
        distiller.compile(loss="sparse_categorical_crossentropy", temperature=0)
    with pytest.warns(UserWarning, match="from_logits=False"):
        distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy())


# ---------------------------------------------------------------------------
# Loss values.


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
def test_logged_loss_matches_numpy(make_mlp, tiny_data, weighted):
    """loss = α·CE + (1−α)·Σ wᵢ·Dᵢ, averaged with the sample weights."""
    x, y = tiny_data
    teacher = make_mlp("teacher", hidden=16)
    student = make_mlp("student", hidden=16)
    alpha, temperature, weights = 0.3, 2.0, [0.7, 0.2]
    distiller = Distiller(
        teacher,
        student,
        [
            LogitsDistillation(temperature=temperature),
            FeatureDistillation("mse", "teacher_hidden", "student_hidden"),
        ],
        distillation_loss_weights=weights,
        student_loss_weight=alpha,
    )
    distiller.compile(optimizer=frozen_sgd(), loss="sparse_categorical_crossentropy")
    sample_weight = np.random.default_rng(1).uniform(0, 2, len(x)).astype("float32")
    history = distiller.fit(
        x,
        y,
        sample_weight=sample_weight if weighted else None,
        batch_size=len(x),
        epochs=1,
        shuffle=False,
        verbose=0,
    ).history

    teacher_logits, student_logits = outputs_of(teacher, None, x), outputs_of(student, None, x)
    student_values = np_crossentropy(y, student_logits)
    distillation_values = weights[0] * np_kd(teacher_logits, student_logits, temperature) + weights[
        1
    ] * np_mse(outputs_of(teacher, "teacher_hidden", x), outputs_of(student, "student_hidden", x))
    total_values = alpha * student_values + (1 - alpha) * distillation_values
    example_weight = sample_weight if weighted else np.ones(len(x))

    def mean(values):
        return (values * example_weight).sum() / len(x)

    np.testing.assert_allclose(history["loss"][0], mean(total_values), rtol=1e-5)
    np.testing.assert_allclose(history["total_loss"][0], mean(total_values), rtol=1e-5)
    np.testing.assert_allclose(history["student_loss"][0], mean(student_values), rtol=1e-5)
    np.testing.assert_allclose(
        history["distillation_loss"][0], mean(distillation_values), rtol=1e-5
    )

    # The same value from the loss terms on fixed inputs.
    terms = distiller.compute_loss_terms(
        x, y, sample_weight if weighted else None, training=True
    )
    assert set(terms) == {"loss", "student_loss", "distillation_loss"}
    np.testing.assert_allclose(float(terms["loss"]), mean(total_values), rtol=1e-5)
    np.testing.assert_allclose(float(terms["student_loss"]), mean(student_values), rtol=1e-5)
    np.testing.assert_allclose(
        float(terms["distillation_loss"]), mean(distillation_values), rtol=1e-5
    )


def test_one_hot_and_sparse_labels_give_the_same_loss(teacher, student, tiny_data):
    x, y = tiny_data
    one_hot = np.eye(5, dtype="float32")[y]
    expected_student = np_crossentropy(y, outputs_of(student, None, x)).mean()
    cases = [
        ("sparse_categorical_crossentropy", y),
        ("sparse_categorical_crossentropy", one_hot),
        ("categorical_crossentropy", one_hot),
        ("categorical_crossentropy", y[:, None]),
        (keras.losses.SparseCategoricalCrossentropy(from_logits=True), y),
        (keras.losses.CategoricalCrossentropy(from_logits=True), one_hot),
    ]
    distiller = Distiller(teacher, student, LogitsDistillation(2.0), student_loss_weight=0.4)
    totals = []
    for loss, labels in cases:
        distiller.compile(optimizer=frozen_sgd(), loss=loss)
        terms = distiller.compute_loss_terms(x, labels, training=True)
        np.testing.assert_allclose(float(terms["student_loss"]), expected_student, rtol=1e-5)
        totals.append(float(terms["loss"]))
    np.testing.assert_allclose(totals, totals[0], rtol=1e-6)

    # Through fit, with the accuracy metric reading one-hot labels.
    distiller.compile(optimizer=frozen_sgd(), loss="categorical_crossentropy", metrics=["accuracy"])
    history = distiller.fit(x, one_hot, batch_size=64, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], totals[0], rtol=1e-5)
    accuracy = (outputs_of(student, None, x).argmax(axis=1) == y).mean()
    np.testing.assert_allclose(history["accuracy"][0], accuracy, rtol=1e-6)


def test_sequence_logits_with_padding_mask(make_mlp):
    """[batch, time, vocab] logits; a [batch, time] sample_weight is a mask."""
    batch, steps, vocab = 6, 5, 7

    def language_model(name, width):
        inputs = keras.Input((steps,), dtype="int32")
        hidden = keras.layers.Embedding(vocab, width, name=f"{name}_embedding")(inputs)
        outputs = keras.layers.Dense(vocab, name=f"{name}_logits")(hidden)
        return keras.Model(inputs, outputs, name=name)

    teacher, student = language_model("teacher", 12), language_model("student", 4)
    rng = np.random.default_rng(3)
    x = rng.integers(0, vocab, (batch, steps)).astype("int32")
    y = rng.integers(0, vocab, (batch, steps)).astype("int32")
    lengths = np.array([5, 4, 3, 2, 5, 1])
    mask = (np.arange(steps)[None, :] < lengths[:, None]).astype("float32")
    distiller = Distiller(teacher, student, LogitsDistillation(2.0), student_loss_weight=0.4)
    distiller.compile(optimizer=frozen_sgd(), loss="sparse_categorical_crossentropy")

    def logged_loss(inputs, labels):
        history = distiller.fit(inputs, labels, sample_weight=mask, batch_size=batch, verbose=0)
        return history.history["loss"][0]

    # Per example: masked means over its valid positions, then α-weighted.
    teacher_logits, student_logits = outputs_of(teacher, None, x), outputs_of(student, None, x)

    def masked_mean(values):
        return (values * mask).sum(axis=1) / mask.sum(axis=1)

    expected = (
        0.4 * masked_mean(np_crossentropy(y, student_logits))
        + 0.6 * masked_mean(np_kd(teacher_logits, student_logits, 2.0))
    ).mean()
    reference = logged_loss(x, y)
    np.testing.assert_allclose(reference, expected, rtol=1e-5)

    # Padding holds anything: changing it changes nothing.
    padded = mask == 0
    x_changed, y_changed = x.copy(), y.copy()
    x_changed[padded] = (x[padded] + 1) % vocab
    y_changed[padded] = (y[padded] + 3) % vocab
    np.testing.assert_allclose(logged_loss(x_changed, y_changed), reference, rtol=1e-6)
    # A valid position does count.
    y_changed[0, 0] = (y[0, 0] + 1) % vocab
    assert abs(logged_loss(x_changed, y_changed) - reference) > 1e-4


# ---------------------------------------------------------------------------
# The keras.io "Knowledge Distillation" example form.


def test_keras_io_form(teacher, student, tiny_data):
    x, y = tiny_data
    distiller = Distiller(student=student, teacher=teacher)
    alpha, temperature = 0.1, 10
    distiller.compile(
        optimizer=frozen_sgd(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=alpha,
        temperature=temperature,
    )
    assert distiller.student_loss_weight == alpha
    assert distiller.distillation_losses[0].temperature == temperature
    history = distiller.fit(x, y, batch_size=64, epochs=1, verbose=0).history

    # The keras.io train_step, in NumPy: softmax then Keras's KLDivergence.
    teacher_logits, student_logits = outputs_of(teacher, None, x), outputs_of(student, None, x)
    teacher_probs = np.exp(np_log_softmax(teacher_logits, temperature))
    student_probs = np.exp(np_log_softmax(student_logits, temperature))
    clipped_t, clipped_s = np.clip(teacher_probs, 1e-7, 1), np.clip(student_probs, 1e-7, 1)
    keras_io_kl = (clipped_t * np.log(clipped_t / clipped_s)).sum(axis=1).mean()
    student_loss = np_crossentropy(y, student_logits).mean()
    expected = alpha * student_loss + (1 - alpha) * keras_io_kl * temperature**2
    np.testing.assert_allclose(history["loss"][0], expected, rtol=1e-4)
    np.testing.assert_allclose(history["student_loss"][0], student_loss, rtol=1e-5)

    results = distiller.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["student_loss"], student_loss, rtol=1e-5)
    accuracy = (student_logits.argmax(axis=1) == y).mean()
    np.testing.assert_allclose(results["sparse_categorical_accuracy"], accuracy, rtol=1e-6)


@pytest.mark.slow
def test_keras_io_form_learns_digits(make_mlp, digits):
    """End to end on real data: a distilled student beats chance by far."""
    x_train, y_train, x_test, y_test = digits
    teacher = make_mlp("teacher", hidden=64, num_classes=10, input_dim=64)
    teacher.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0)
    student = make_mlp("student", hidden=16, num_classes=10, input_dim=64)
    distiller = Distiller(student=student, teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.01),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.1,
        temperature=4,
    )
    history = distiller.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    results = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert results["sparse_categorical_accuracy"] > 0.85


# ---------------------------------------------------------------------------
# The teacher is frozen; one forward pass of each model per step.


def test_teacher_frozen_and_in_inference_mode(student, tiny_data):
    x, y = tiny_data
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    hidden = keras.layers.Dropout(0.99)(hidden)
    recorder = RecordCalls(name="recorder")
    outputs = keras.layers.Dense(5)(recorder(hidden))
    teacher = keras.Model(inputs, outputs, name="teacher")
    before = [w.numpy().copy() for w in teacher.weights]

    distiller = Distiller(teacher, student, LogitsDistillation(2.0))
    teacher_ids = {id(v) for v in teacher.weights}
    assert not teacher_ids & {id(v) for v in distiller.trainable_variables}
    assert {id(v) for v in distiller.trainable_variables} == {
        id(v) for v in student.trainable_variables
    }
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    student_before = [w.numpy().copy() for w in student.weights]
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)

    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, teacher.weights))
    assert not all(np.array_equal(a, w.numpy()) for a, w in zip(student_before, student.weights))
    assert recorder.training_flags == [False] * 8
    # Inference mode: the outputs are deterministic despite Dropout(0.99)...
    first = distiller.teacher_forward(x)["logits"]
    np.testing.assert_array_equal(first, distiller.teacher_forward(x)["logits"])
    np.testing.assert_allclose(first, teacher(x, training=False), rtol=1e-6)
    # ...which training mode would not be.
    assert not np.allclose(first, teacher(x, training=True), atol=1e-3)


def test_one_student_and_one_teacher_pass_per_step(tiny_data):
    """keras.distillation runs the student twice when a layer is tapped."""
    x, y = tiny_data

    def run(distiller_class, losses_module):
        teacher, student = counted_mlp("teacher"), counted_mlp("student")
        losses = [
            losses_module.LogitsDistillation(temperature=2.0),
            losses_module.FeatureDistillation(
                loss="mse", teacher_layer_name="teacher_hidden", student_layer_name="student_hidden"
            ),
        ]
        distiller = distiller_class(teacher, student, losses, distillation_loss_weights=[1.0, 0.5])
        distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", run_eagerly=True)
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
        return (
            teacher.get_layer("teacher_calls").training_flags,
            student.get_layer("student_calls").training_flags,
        )

    teacher_flags, student_flags = run(Distiller, tf_distill)
    assert teacher_flags == [False] * 4
    assert student_flags == [True] * 4
    keras_teacher_flags, keras_student_flags = run(keras.distillation.Distiller, keras.distillation)
    assert len(keras_teacher_flags) == 4
    assert len(keras_student_flags) == 8


def test_cached_teacher_outputs_skip_the_teacher(tiny_data):
    """Batches `{inputs, teacher_outputs}` give the same loss, no teacher pass."""
    x, y = tiny_data
    teacher, student = counted_mlp("teacher"), counted_mlp("student")
    distiller = Distiller(teacher, student, LogitsDistillation(2.0))
    distiller.compile(
        optimizer=frozen_sgd(), loss="sparse_categorical_crossentropy", run_eagerly=True
    )
    reference = distiller.fit(x, y, batch_size=64, verbose=0).history["loss"][0]
    cached = {
        tf_distill.batches.INPUTS: x,
        tf_distill.batches.TEACHER_OUTPUTS: {"logits": teacher.predict(x, verbose=0)},
    }
    calls = len(teacher.get_layer("teacher_calls").training_flags)
    assert calls >= 1  # the counter does count the teacher's passes
    loss = distiller.fit(cached, y, batch_size=64, verbose=0).history["loss"][0]
    np.testing.assert_allclose(loss, reference, rtol=1e-6)
    assert len(teacher.get_layer("teacher_calls").training_flags) == calls


# ---------------------------------------------------------------------------
# Softmax outputs.


@pytest.mark.parametrize("style", ["activation", "softmax_layer"])
def test_softmax_teacher_is_refused(make_mlp, student, style):
    if style == "activation":
        teacher = make_mlp("teacher", final_activation="softmax")
    else:
        logits_teacher = make_mlp("teacher")
        teacher = keras.Model(
            logits_teacher.inputs[0], keras.layers.Softmax()(logits_teacher.outputs[0])
        )
    with pytest.raises(
        ValueError, match=r"ends with a softmax.*pass `teacher_outputs='probabilities'`"
    ):
        Distiller(teacher, student, LogitsDistillation())


def test_softmax_student_is_refused(teacher, make_mlp):
    student = make_mlp("student", final_activation="softmax")
    with pytest.raises(ValueError, match="The student 'student' ends with a softmax"):
        Distiller(teacher, student, LogitsDistillation())


def test_probability_teacher_gives_the_logit_teacher_loss(teacher, student, tiny_data):
    x, y = tiny_data
    probability_teacher = keras.Model(
        teacher.inputs[0], keras.layers.Softmax()(teacher.outputs[0]), name="probability_teacher"
    )
    losses = []
    for model, kind in ((teacher, "logits"), (probability_teacher, "probabilities")):
        distiller = Distiller(
            model, student, LogitsDistillation(3.0), student_loss_weight=0.2, teacher_outputs=kind
        )
        distiller.compile(optimizer=frozen_sgd(), loss="sparse_categorical_crossentropy")
        losses.append(distiller.fit(x, y, batch_size=64, verbose=0).history["loss"][0])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    # log(softmax(z)) differs from z by a per-row constant, not by nothing.
    difference = np.asarray(distiller.teacher_forward(x)["logits"]) - teacher(x).numpy()
    assert np.abs(difference).min() > 0.1
    np.testing.assert_allclose(np.ptp(difference, axis=1), 0.0, atol=1e-5)


# ---------------------------------------------------------------------------
# evaluate / predict / call use the student.


def test_evaluate_predict_and_call_use_the_student(teacher, student, tiny_data):
    x, y = tiny_data
    distiller = Distiller(teacher, student, LogitsDistillation(2.0), student_loss_weight=0.0)
    distiller.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)

    student_logits, teacher_logits = outputs_of(student, None, x), outputs_of(teacher, None, x)
    results = distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    student_loss = np_crossentropy(y, student_logits).mean()
    distillation_loss = np_kd(teacher_logits, student_logits, 2.0).mean()
    # `loss` is the total objective, as in `fit`: with α = 0, the
    # distillation term alone; `student_loss` is still reported.
    np.testing.assert_allclose(results["loss"], distillation_loss, rtol=1e-5)
    np.testing.assert_allclose(results["student_loss"], student_loss, rtol=1e-5)
    np.testing.assert_allclose(results["distillation_loss"], distillation_loss, rtol=1e-5)
    np.testing.assert_allclose(results["total_loss"], distillation_loss, rtol=1e-5)
    np.testing.assert_allclose(
        results["accuracy"], (student_logits.argmax(1) == y).mean(), rtol=1e-6
    )
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student_logits, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(distiller(x), student_logits, rtol=1e-5, atol=1e-6)
    assert not np.allclose(distiller(x), teacher_logits, atol=1e-2)


# ---------------------------------------------------------------------------
# Mixed precision, tf.distribute, XLA.


@pytest.fixture
def restore_dtype_policy():
    policy = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(policy)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(make_mlp, tiny_data, policy, restore_dtype_policy):
    x, y = tiny_data
    keras.mixed_precision.set_global_policy(policy)
    teacher, student = make_mlp("teacher", hidden=16), make_mlp("student", hidden=16)
    distiller = Distiller(
        teacher,
        student,
        [LogitsDistillation(2.0), FeatureDistillation("mse", "teacher_hidden", "student_hidden")],
        distillation_loss_weights=[1.0, 0.0],
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer) == (
        policy == "mixed_float16"
    )
    before = [w.numpy().copy() for w in student.trainable_weights]
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    for key in ("loss", "student_loss", "distillation_loss", "total_loss"):
        assert np.all(np.isfinite(history[key]))
    assert not all(np.array_equal(a, w.numpy()) for a, w in zip(before, student.trainable_weights))

    assert distiller.student(x, training=False).dtype == policy.split("_")[1]
    terms = distiller.compute_loss_terms(x, y)
    assert all(term.dtype == tf.float32 for term in terms.values())
    assert all(w.dtype == "float32" for w in student.trainable_weights)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import tensorflow as tf

    # Two logical CPUs, before anything initializes the devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

    from tf_distill import Distiller, FeatureDistillation, LogitsDistillation
    from tf_distill.backend import keras

    def mlp(name, hidden):
        inputs = keras.Input((8,))
        x = keras.layers.Dense(hidden, activation="relu", name=name + "_hidden")(inputs)
        return keras.Model(inputs, keras.layers.Dense(5)(x), name=name)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.integers(0, 5, 64)
    sample_weight = rng.uniform(0.0, 2.0, 64).astype("float32")
    keras.utils.set_random_seed(0)
    initial = [mlp("teacher", 16).get_weights(), mlp("student", 16).get_weights()]

    def run(strategy):
        with strategy.scope():
            teacher, student = mlp("teacher", 16), mlp("student", 16)
            teacher.set_weights(initial[0])
            student.set_weights(initial[1])
            distiller = Distiller(
                teacher,
                student,
                [
                    LogitsDistillation(2.0),
                    FeatureDistillation("mse", "teacher_hidden", "student_hidden"),
                ],
                student_loss_weight=0.3,
            )
            distiller.compile(
                optimizer=keras.optimizers.SGD(0.5),
                loss="sparse_categorical_crossentropy",
            )
        history = distiller.fit(
            x, y, sample_weight=sample_weight, batch_size=16, epochs=1,
            shuffle=False, verbose=0,
        ).history
        return {
            "replicas": strategy.num_replicas_in_sync,
            "history": {k: float(v[-1]) for k, v in history.items()},
            "weights": [w.tolist() for w in student.get_weights()],
        }

    single = run(tf.distribute.get_strategy())
    mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    print("RESULT" + json.dumps({"single": single, "mirrored": mirrored}))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(text for text in completed.stdout.splitlines() if text.startswith("RESULT"))
    result = json.loads(line[len("RESULT") :])
    single, mirrored = result["single"], result["mirrored"]
    assert single["replicas"] == 1 and mirrored["replicas"] == 2
    for key in ("loss", "student_loss", "distillation_loss", "total_loss"):
        np.testing.assert_allclose(mirrored["history"][key], single["history"][key], rtol=1e-5)
    for a, b in zip(single["weights"], mirrored["weights"]):
        np.testing.assert_allclose(b, a, atol=1e-5)
    # The training moved the weights: the comparison is not of initial values.
    assert single["history"]["loss"] > 0.0


def test_jit_compile_matches_eager_values(make_mlp, tiny_data):
    x, y = tiny_data
    results = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(0)
        teacher, student = make_mlp("teacher", hidden=16), make_mlp("student", hidden=16)
        distiller = Distiller(
            teacher,
            student,
            [
                LogitsDistillation(2.0),
                FeatureDistillation("mse", "teacher_hidden", "student_hidden"),
            ],
        )
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss="sparse_categorical_crossentropy",
            jit_compile=jit_compile,
        )
        history = distiller.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
        assert distiller.jit_compile is jit_compile
        results.append((history, student.get_weights()))
    (eager_history, eager_weights), (jit_history, jit_weights) = results
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(jit_history[key], eager_history[key], rtol=1e-5)
    for a, b in zip(eager_weights, jit_weights):
        np.testing.assert_allclose(b, a, atol=1e-5)


# ---------------------------------------------------------------------------
# Saving.


@pytest.mark.slow
def test_student_saves_alone(teacher, student, tiny_data, tmp_path):
    x, y = tiny_data
    distiller = Distiller(
        teacher,
        student,
        [
            LogitsDistillation(2.0),
            FeatureDistillation("cosine", "teacher_logits", "student_logits"),
        ],
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    distiller.fit(x, y, batch_size=16, verbose=0)
    path = str(tmp_path / "student.keras")
    distiller.student.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.count_params() == student.count_params()
    assert loaded.count_params() < distiller.count_params()
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in student.layers]
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6
    )


def test_distiller_round_trips_and_resumes(teacher, student, tiny_data, tmp_path):
    x, y = tiny_data
    distiller = Distiller(
        teacher,
        student,
        [LogitsDistillation(4.0), FeatureDistillation("mse", "teacher_logits", "student_logits")],
        distillation_loss_weights=[1.0, 0.25],
        student_loss_weight=0.3,
    )
    distiller.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    distiller.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)

    assert isinstance(loaded, Distiller)
    assert as_json(loaded.get_config()) == as_json(distiller.get_config())
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), rtol=1e-6
    )
    np.testing.assert_allclose(loaded.teacher(x), distiller.teacher(x), rtol=1e-6)
    assert loaded.teacher.trainable is False
    assert int(loaded.optimizer.iterations) == int(distiller.optimizer.iterations) == 4

    # Resuming continues the same run: Adam's moments came back too.
    resumed = loaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    continued = distiller.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(resumed["loss"], continued["loss"], rtol=1e-5)
    for a, b in zip(distiller.student.get_weights(), loaded.student.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)

    rebuilt = Distiller.from_config(as_json(distiller.get_config()))
    assert as_json(rebuilt.get_config()) == as_json(distiller.get_config())
    assert rebuilt.distillation_loss_weights == [1.0, 0.25]
    assert rebuilt.student.count_params() == student.count_params()


def test_sequence_mask_with_a_trailing_axis_is_the_same_mask():
    """A `[batch, time, 1]` sample weight masks like `[batch, time]` (as in Keras)."""
    batch, steps, vocab = 4, 5, 6
    rng = np.random.default_rng(5)

    def language_model(name, width):
        inputs = keras.Input((steps,), dtype="int32")
        hidden = keras.layers.Embedding(vocab, width)(inputs)
        return keras.Model(inputs, keras.layers.Dense(vocab)(hidden), name=name)

    distiller = Distiller(
        language_model("teacher", 8), language_model("student", 3), LogitsDistillation(2.0)
    )
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = rng.integers(0, vocab, (batch, steps)).astype("int32")
    y = tf.constant(rng.integers(0, vocab, (batch, steps)).astype("int32"))
    mask = (np.arange(steps)[None, :] < np.array([5, 3, 2, 1])[:, None]).astype("float32")
    flat = distiller.compute_loss_terms(x, y, tf.constant(mask))
    trailing = distiller.compute_loss_terms(x, y, tf.constant(mask[..., None]))
    unmasked = distiller.compute_loss_terms(x, y)
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(float(trailing[key]), float(flat[key]), rtol=1e-6)
    assert abs(float(flat["loss"]) - float(unmasked["loss"])) > 1e-4


@pytest.mark.parametrize("source", ["array", "dataset"])
def test_unlabeled_data_trains_on_the_distillation_loss_alone(teacher, student, tiny_data, source):
    x, _ = tiny_data
    alpha, temperature = 0.3, 2.0
    distiller = Distiller(
        teacher, student, LogitsDistillation(temperature), student_loss_weight=alpha
    )
    distiller.compile(
        optimizer=frozen_sgd(), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    data = x if source == "array" else tf.data.Dataset.from_tensor_slices(x).batch(64)
    expected = np_kd(outputs_of(teacher, None, x), outputs_of(student, None, x), temperature)
    # With a frozen optimizer the logged values are those of the start.
    history = distiller.fit(data, batch_size=64, epochs=1, shuffle=False, verbose=0).history
    # Accuracy needs labels: not reported rather than reported as 0.
    assert set(history) == {"loss", "student_loss", "distillation_loss", "total_loss"}
    assert history["student_loss"] == [0.0]
    np.testing.assert_allclose(history["distillation_loss"][0], expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(history["loss"][0], (1 - alpha) * expected.mean(), rtol=1e-5)
    terms = distiller.compute_loss_terms(x)
    assert float(terms["student_loss"]) == 0.0
    np.testing.assert_allclose(float(terms["loss"]), (1 - alpha) * expected.mean(), rtol=1e-5)

    results = distiller.evaluate(data, batch_size=64, verbose=0, return_dict=True)
    assert "accuracy" not in results
    assert results["student_loss"] == 0.0
    np.testing.assert_allclose(results["distillation_loss"], expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(results["loss"], (1 - alpha) * expected.mean(), rtol=1e-5)

    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    before = [w.numpy().copy() for w in student.trainable_weights]
    history = distiller.fit(data, batch_size=16, epochs=3, shuffle=False, verbose=0).history
    assert history["student_loss"] == [0.0, 0.0, 0.0]
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]
    assert all(not np.array_equal(a, w.numpy()) for a, w in zip(before, student.trainable_weights))
