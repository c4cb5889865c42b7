"""Tests for tf_distill.export's argument checks: each refused before converting, nothing written."""

import os

import numpy as np
import pytest

from tf_distill import export
from tf_distill.backend import keras


@pytest.fixture(scope="module")
def classifier():
    """An untrained convnet: the arguments are checked before it is converted."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"quantization": "int4"},
            r"Invalid value for argument `quantization`. Expected one of "
            r"\['float32', 'dynamic', 'float16', 'int8'\]. Received: "
            r"quantization='int4'",
        ),
        (
            {"int8_io": True},
            r"`int8_io=True` needs full integer quantization. Pass "
            r"quantization='int8'. Received: quantization='float32'",
        ),
        (
            {"max_accuracy_drop": float("nan")},
            r"`max_accuracy_drop` must be a finite number of percentage points. "
            r"Received: max_accuracy_drop=nan",
        ),
        (
            {"per_channel": False},
            r"`per_channel=False` applies to the integer weights of "
            r"quantization='dynamic' or 'int8'; float32 weights have no scales. "
            r"Received: quantization='float32', per_channel=False",
        ),
        (
            {"quantization": "float16", "per_channel": False},
            r"float16 weights have no scales. Received: quantization='float16'",
        ),
        (
            {"quantization": "dynamic", "per_channel": "yes"},
            r"`per_channel` must be a bool. Received: per_channel='yes'",
        ),
        (
            {"latency_runs": -1},
            r"`latency_runs` must be an integer >= 0. Received: latency_runs=-1",
        ),
        (
            {"quantization": "int8", "representative_data": np.zeros((4, 8, 8))},
            r"`representative_data` must hold a batch of inputs of rank 4",
        ),
        (
            {"validation_data": (np.zeros((4, 8, 8, 1)), np.zeros(3))},
            r"Received 4 inputs and 3 labels",
        ),
        (
            {"validation_data": (np.zeros((4, 32, 32, 3)), np.zeros(4))},
            r"The model takes inputs of shape \(8, 8, 1\) but `validation_data` holds "
            r"inputs of shape \(32, 32, 3\)",
        ),
        (
            {"quantization": "int8", "representative_data": np.zeros((4, 8, 8, 3))},
            r"The model takes inputs of shape \(8, 8, 1\) but `representative_data` holds "
            r"inputs of shape \(8, 8, 3\)",
        ),
    ],
)
def test_invalid_arguments(classifier, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export.export_litert(classifier, tmp_path / "m.tflite", **{"latency_runs": 0, **kwargs})
    assert os.listdir(tmp_path) == []


def test_rejects_non_keras_and_multi_input_models(tmp_path):
    with pytest.raises(TypeError, match="`model` must be a Keras model or a Distiller"):
        export.export_litert(object(), tmp_path / "m.tflite")
    first, second = keras.Input((3,)), keras.Input((3,))
    outputs = keras.layers.Dense(2)(keras.layers.Concatenate()([first, second]))
    model = keras.Model([first, second], outputs)
    with pytest.raises(
        ValueError, match="one input and one output. Received a model with 2 inputs"
    ):
        export.export_litert(model, tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []
