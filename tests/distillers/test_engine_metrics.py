"""What `fit` and `evaluate` report (tf_distill.distiller_metrics).

`loss` and `val_loss` are the same quantity, as in `keras.distillation`: the
total objective `α·student + (1 − α)·distillation` plus the student's
regularization losses, in training and in evaluation alike.
"""

import numpy as np
import pytest

from tf_distill import Distiller
from tf_distill import LogitsDistillation
from tf_distill.backend import keras

ALPHA, TEMPERATURE, L2 = 0.3, 2.0, 0.01


def np_log_softmax(logits, temperature=1.0):
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_crossentropy(labels, logits):
    return -np.take_along_axis(np_log_softmax(logits), labels[:, None], axis=-1)[:, 0]


def np_kd(teacher_logits, student_logits, temperature):
    log_p_teacher = np_log_softmax(teacher_logits, temperature)
    log_p_student = np_log_softmax(student_logits, temperature)
    kl = (np.exp(log_p_teacher) * (log_p_teacher - log_p_student)).sum(axis=-1)
    return temperature**2 * kl


def regularized_student():
    inputs = keras.Input((8,))
    regularizer = keras.regularizers.L2(L2)
    hidden = keras.layers.Dense(8, activation="relu", kernel_regularizer=regularizer)(inputs)
    outputs = keras.layers.Dense(5, kernel_regularizer=regularizer, name="logits_dense")(hidden)
    return keras.Model(inputs, outputs, name="student")


def distiller_for(teacher, student):
    distiller = Distiller(
        teacher, student, LogitsDistillation(TEMPERATURE), student_loss_weight=ALPHA
    )
    # A frozen optimizer: every logged value is that of the initial weights.
    distiller.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return distiller


def expected_terms(teacher, student, x, y, regularization=0.0):
    teacher_logits = np.asarray(teacher(x, training=False), np.float64)
    student_logits = np.asarray(student(x, training=False), np.float64)
    student_loss = np_crossentropy(y, student_logits).mean()
    distillation_loss = np_kd(teacher_logits, student_logits, TEMPERATURE).mean()
    total = ALPHA * student_loss + (1 - ALPHA) * distillation_loss + regularization
    return total, student_loss, distillation_loss


@pytest.mark.parametrize("regularized", [False, True], ids=["plain", "l2"])
def test_loss_and_val_loss_are_the_total_objective(teacher, student, tiny_data, regularized):
    x, y = tiny_data
    regularization = 0.0
    if regularized:
        student = regularized_student()
        regularization = sum(
            L2 * float(np.sum(np.square(np.asarray(w, np.float64))))
            for w in student.trainable_weights
            if "kernel" in w.path
        )
        assert regularization > 0.01  # the checks below see it
    distiller = distiller_for(teacher, student)
    total, student_loss, distillation_loss = expected_terms(teacher, student, x, y, regularization)

    results = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["loss"], total, rtol=1e-5)
    np.testing.assert_allclose(results["total_loss"], total, rtol=1e-5)
    # The label loss alone, without the regularization.
    np.testing.assert_allclose(results["student_loss"], student_loss, rtol=1e-5)
    np.testing.assert_allclose(results["distillation_loss"], distillation_loss, rtol=1e-5)
    terms = distiller.compute_loss_terms(x, y)
    np.testing.assert_allclose(float(terms["loss"]), results["loss"], rtol=1e-6)

    # One batch, validated on itself: training and validation report the
    # same numbers under the same names (no dropout or batch norm here).
    history = distiller.fit(
        x, y, validation_data=(x, y), batch_size=64, epochs=1, shuffle=False, verbose=0
    ).history
    for key in ("loss", "total_loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(history[key][0], results[key], rtol=1e-5)
        np.testing.assert_allclose(history["val_" + key][0], results[key], rtol=1e-5)
    assert history["val_loss"] == history["val_total_loss"]


def test_early_stopping_on_the_label_loss(teacher, student, tiny_data):
    """The README's recipe: monitor `val_student_loss` to stop on the label
    loss (here it stops at once: the frozen optimizer never improves it)."""
    x, y = tiny_data
    distiller = distiller_for(teacher, student)
    # Keras cannot tell the direction of a name it does not know: `mode="min"`.
    stop = keras.callbacks.EarlyStopping(monitor="val_student_loss", mode="min", patience=1)
    history = distiller.fit(
        x, y, validation_data=(x, y), epochs=5, batch_size=64, callbacks=[stop], verbose=0
    ).history
    assert len(history["val_student_loss"]) == 2
    _, student_loss, _ = expected_terms(teacher, student, x, y)
    np.testing.assert_allclose(history["val_student_loss"], [student_loss] * 2, rtol=1e-5)


def test_metrics_leave_out_unlabeled_examples(teacher, student, tiny_data):
    """Examples labeled -1 count in no compiled metric, in `fit` and
    `evaluate` alike: the accuracy is that of the labeled examples alone."""
    x, y = tiny_data
    y = y.copy()
    y[::3] = -1
    labeled = y >= 0
    distiller = distiller_for(teacher, student)
    predictions = np.argmax(np.asarray(student(x, training=False)), axis=-1)
    accuracy = np.mean(predictions[labeled] == y[labeled])
    assert accuracy > 0.05  # counting the unlabeled as wrong would differ

    results = distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["accuracy"], accuracy, rtol=1e-6)
    history = distiller.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["accuracy"][0], accuracy, rtol=1e-6)


@pytest.mark.parametrize("train_form", ["one_hot", "sparse"])
def test_accuracy_follows_the_labels_format(teacher, student, tiny_data, train_form):
    """`accuracy` reads each batch's labels: one-hot in `fit`, class indices
    in `evaluate`, or the reverse (Keras's "accuracy" keeps the first format
    it sees and misreads the other)."""
    x, y = tiny_data
    one_hot = np.eye(5)[y]
    train_labels, test_labels = (one_hot, y) if train_form == "one_hot" else (y[:, None], one_hot)
    distiller = distiller_for(teacher, student)
    accuracy = np.mean(np.argmax(np.asarray(student(x, training=False)), axis=-1) == y)
    history = distiller.fit(x, train_labels, epochs=1, batch_size=16, verbose=0).history
    np.testing.assert_allclose(history["accuracy"][0], accuracy, rtol=1e-6)
    results = distiller.evaluate(x, test_labels, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["accuracy"], accuracy, rtol=1e-6)


@pytest.mark.parametrize("student_loss_weight", [ALPHA, 0.0])
def test_labels_of_neither_form_are_refused_before_a_step(
    teacher, student, tiny_data, student_loss_weight
):
    x, _ = tiny_data
    distiller = Distiller(teacher, student, "kd", student_loss_weight=student_loss_weight)
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = [np.array(w) for w in student.get_weights()]
    match = r"Invalid value for argument `y`.*Received: y with shape \(16, 2\)"
    with pytest.raises(ValueError, match=match):
        distiller.fit(x, np.zeros((64, 2), "float32"), epochs=1, batch_size=16, verbose=0)
    for weight, initial in zip(student.get_weights(), before):
        np.testing.assert_array_equal(weight, initial)
    with pytest.raises(ValueError, match=r"Invalid value for argument `y`"):
        distiller.evaluate(x, np.zeros((64, 2), "int32"), batch_size=16, verbose=0)
