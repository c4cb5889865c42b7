"""A layer for tests that count forward passes and check the `training` flag."""

from tf_distill.backend import keras
from tf_distill.backend import tf


class RecordCalls(keras.layers.Layer):
    """Identity that records the `training` flag of every eager call.

    Symbolic builds and traces are not forward passes over data, so only
    eager calls are recorded: run the model with `run_eagerly=True`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.training_flags = []

    def call(self, inputs, training=None):
        if tf.executing_eagerly():
            self.training_flags.append(training)
        return inputs
