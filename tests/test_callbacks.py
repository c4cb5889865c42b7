"""Callbacks: the student alone saved during `fit`; an interrupted `fit`
resumed as if never interrupted."""

import json

import numpy as np
import pytest
from conftest import build_mlp

from tf_distill import Distiller
from tf_distill import LogitsDistillation
from tf_distill import MutualDistiller
from tf_distill import data as data_lib
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.callbacks import EpochLog
from tf_distill.callbacks import EpochOrder
from tf_distill.callbacks import StudentCheckpoint


@pytest.mark.slow
def test_student_checkpoint_saves_the_student_alone_each_epoch(
    tiny_data, teacher, student, tmp_path
):
    x, y = tiny_data
    distiller = Distiller(teacher, student, LogitsDistillation(2.0))
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    checkpoint = StudentCheckpoint(tmp_path / "student-{epoch:02d}.keras")
    distiller.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[checkpoint])

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "student-01.keras", "student-02.keras"
    ]
    loaded = saving.load_model(tmp_path / "student-02.keras")
    assert not isinstance(loaded, Distiller)
    assert loaded.name == "student"
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               student.predict(x, verbose=0), atol=1e-6)


def test_student_checkpoint_saves_a_mutual_distillers_predict_student(tiny_data, tmp_path):
    x, y = tiny_data
    students = [build_mlp(f"student_{i}", hidden=4) for i in range(2)]
    mutual = MutualDistiller(students, predict_student=1)
    mutual.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    mutual.fit(x, y, batch_size=32, epochs=1, verbose=0,
               callbacks=[StudentCheckpoint(tmp_path / "student.keras")])

    loaded = saving.load_model(tmp_path / "student.keras")
    assert loaded.name == "student_1"
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               students[1].predict(x, verbose=0), atol=1e-6)


class _Holder(keras.Model):
    """A stand-in for a distiller: a model with a `student`."""

    def __init__(self, student):
        super().__init__()
        self.student = student


def test_save_best_only_saves_the_epochs_that_improve_the_monitor(student, tmp_path):
    checkpoint = StudentCheckpoint(tmp_path / "best-{epoch}-{val_accuracy:.1f}.keras",
                                   monitor="val_accuracy", save_best_only=True)
    checkpoint.set_model(_Holder(student))
    checkpoint.on_train_begin()
    for epoch, accuracy in enumerate([0.5, 0.4, 0.7, 0.7]):
        checkpoint.on_epoch_end(epoch, {"val_accuracy": accuracy, "loss": 1.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best-1-0.5.keras", "best-3-0.7.keras"
    ]
    with pytest.warns(UserWarning, match="'val_accuracy' in the logs, skipping epoch 5"):
        checkpoint.on_epoch_end(4, {"loss": 1.0})


def test_student_checkpoint_errors(student, tmp_path):
    with pytest.raises(ValueError, match=r"`filepath` must end in `\.keras`"):
        StudentCheckpoint(tmp_path / "student.h5")
    with pytest.raises(ValueError, match="Invalid value for argument `mode`"):
        StudentCheckpoint(tmp_path / "student.keras", mode="lowest")
    checkpoint = StudentCheckpoint(tmp_path / "student.keras")
    checkpoint.set_model(student)
    with pytest.raises(ValueError, match="saves `model.student`, which this model lacks"):
        checkpoint.on_train_begin()




def _labels(dataset):
    return np.concatenate([y.numpy() for _, y in dataset])


def test_an_epochs_order_depends_on_the_seed_and_the_epoch_only():
    x = np.arange(20, dtype="float32").reshape(20, 1)
    splits = data_lib.DataSplits(x, np.arange(20, dtype="int32"), x[:2], np.zeros(2, "int32"),
                                 x[:2], np.zeros(2, "int32"), num_classes=20, input_shape=(1,))
    order, again = EpochOrder(7), EpochOrder(7)
    dataset = splits.as_tf_dataset("train", 8, order=order)
    orders = []
    for epoch in range(3):
        order.on_epoch_begin(epoch)
        orders.append(_labels(dataset))
    # A fit resumed at epoch 2 starts with a fresh pipeline and sees epoch 2's order.
    again.on_epoch_begin(2)
    assert (_labels(splits.as_tf_dataset("train", 8, order=again)) == orders[2]).all()
    assert sorted(orders[0]) == list(range(20)) and len(dataset) == 3
    assert not (orders[0] == orders[1]).all()
    order.on_epoch_begin(0)
    assert (_labels(dataset) == orders[0]).all()


def test_an_endless_order_resumed_at_an_epoch_reads_on_where_that_epoch_starts():
    # Epochs of 4 examples over passes of 10: epoch 2 starts mid-pass and
    # crosses into the next pass; a resumed `fit` starts there.
    whole = EpochOrder(7, examples_per_epoch=4)
    stream = [int(i) for i in whole.indices(10).take(30)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20]
    resumed = EpochOrder(7, examples_per_epoch=4)
    resumed.on_epoch_begin(2)
    assert [int(i) for i in resumed.indices(10).take(22)] == stream[8:30]
    # Each pass is the order that an epoch of one pass has.
    assert stream[:10] == [int(i) for i in EpochOrder(7).indices(10)]


def test_the_epoch_log_keeps_the_epochs_before_a_resume_and_drops_one_not_backed_up(tmp_path):
    path = tmp_path / "epochs.jsonl"
    first = EpochLog(str(path))
    for epoch in range(3):
        first.on_epoch_begin(epoch)
        first.on_epoch_end(epoch, {"loss": float(epoch)})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"epoch": 3, "lo')  # a line cut off by a kill
    resumed = EpochLog(str(path))  # the backup holds 2 epochs: epoch 2 runs again
    resumed.on_epoch_begin(2)
    resumed.on_epoch_end(2, {"loss": 20.0})
    assert resumed.history == {"loss": [0.0, 1.0, 20.0]}
    assert resumed.resumed_at == 2 and first.resumed_at is None
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [0, 1, 2]
