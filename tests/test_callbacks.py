"""The callbacks that let an interrupted `fit` resume as if never interrupted."""
import json

import numpy as np

from tf_distill import data as data_lib
from tf_distill.callbacks import EpochLog
from tf_distill.callbacks import EpochOrder


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
