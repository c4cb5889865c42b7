"""What a batch carries besides the inputs, and what losses may ask for."""

import numpy as np
import pytest

import tf_distill
from tf_distill import batches
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.losses.base import DistillationLoss
from tf_distill.losses.base import call_arguments


class Scaling(keras.layers.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


class _Recording(DistillationLoss):
    """Squared distance of scaled logits; records what the Distiller passes."""

    call_arguments = ("example_indices", "training")

    def __init__(self, seen):
        super().__init__()
        self.seen = seen
        self.head = Scaling()
        self.layers = [self.head]

    def call(self, teacher_outputs, student_outputs, mask=None, example_indices=None,
             training=None):
        self.seen.append((example_indices, training))
        if example_indices is not None:
            tf.debugging.assert_less(example_indices, tf.constant(10, example_indices.dtype))
        diff = self.head(student_outputs) - teacher_outputs
        return tf.reduce_mean(tf.square(diff), axis=-1)


def _models():
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="t")
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="s")
    return teacher, student


def test_split_inputs():
    x = np.zeros((2, 4))
    assert batches.split_inputs(x)[0] is x
    inputs, cached, indices = batches.split_inputs({"inputs": x, "example_indices": [0, 1]})
    assert inputs is x and cached is None and indices == [0, 1]
    # A model's own dict inputs are not mistaken for a wrapped batch.
    own = {"inputs": x, "token_ids": x}
    assert batches.split_inputs(own) == (own, None, None)


def test_with_example_indices_numbers_each_example():
    data = tf.data.Dataset.from_tensor_slices((np.arange(5.0), np.arange(5)))
    x, y = next(iter(batches.with_example_indices(data).batch(5)))
    np.testing.assert_array_equal(x["example_indices"], np.arange(5))
    np.testing.assert_array_equal(x["inputs"], np.arange(5.0))
    with pytest.raises(ValueError, match="Received: dataset of type list"):
        batches.with_example_indices([1, 2])


def test_loss_layers_train_and_losses_receive_what_they_ask_for():
    seen = []
    loss = _Recording(seen)
    teacher, student = _models()
    distiller = tf_distill.Distiller(teacher=teacher, student=student, distillation_losses=loss)
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype("float32")
    y = rng.integers(0, 3, size=10)
    data = batches.with_example_indices(tf.data.Dataset.from_tensor_slices((x, y))).batch(5)
    distiller.fit(data, epochs=2, verbose=0)
    assert any(v is loss.head.scale for v in distiller.trainable_variables)
    assert float(loss.head.scale.numpy()) != 1.0
    assert all(indices is not None and training is True for indices, training in seen)
    # Not part of the student.
    assert not any(v is loss.head.scale for v in student.weights)
    seen.clear()
    distiller.evaluate(data, verbose=0)
    assert seen and all(training is False for _, training in seen)


def test_call_arguments_refuses_an_unknown_name():
    loss = DistillationLoss()
    loss.call_arguments = ("labels", "epoch")
    with pytest.raises(ValueError, match=r"among \['labels', 'example_indices', 'training'\]"):
        call_arguments(loss, labels=None)
