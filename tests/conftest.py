"""Shared pytest fixtures: tiny deterministic teachers, students and data.

Kept small and generic: a factory for two-layer MLPs with named layers (so
feature losses can tap `<name>_hidden`), random data for them, and the
sklearn digits for tests that need data a model can actually learn.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The shared helpers (`numpy_reference`, `recording`, `processes`, this file's
# `build_mlp`) import by name from every folder of tests/ (pytest imports the
# test files themselves with --import-mode=importlib).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tf_distill.backend import keras  # noqa: E402

INPUT_DIM = 8
NUM_CLASSES = 5


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    keras.utils.set_random_seed(0)


def build_mlp(
    name,
    hidden=16,
    num_classes=NUM_CLASSES,
    input_dim=INPUT_DIM,
    final_activation=None,
):
    """A Functional MLP: `Input -> <name>_hidden (relu) -> <name>_logits`."""
    inputs = keras.Input((input_dim,), name=f"{name}_input")
    hidden_out = keras.layers.Dense(hidden, activation="relu", name=f"{name}_hidden")(inputs)
    outputs = keras.layers.Dense(num_classes, activation=final_activation, name=f"{name}_logits")(
        hidden_out
    )
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture
def make_mlp():
    """Factory fixture: `make_mlp(name, hidden=16, num_classes=5, input_dim=8,
    final_activation=None)` builds a Functional MLP with layers
    `<name>_hidden` and `<name>_logits` (logits unless `final_activation`)."""
    return build_mlp


@pytest.fixture
def teacher():
    """A Functional teacher MLP (hidden width 32) outputting 5 logits."""
    return build_mlp("teacher", hidden=32)


@pytest.fixture
def student():
    """A Functional student MLP (hidden width 8) outputting 5 logits."""
    return build_mlp("student", hidden=8)


@pytest.fixture
def tiny_data():
    """`(x, y)`: 64 random float32 rows of 8 features, integer labels in [0, 5)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, INPUT_DIM)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=64).astype("int32")
    return x, y


@pytest.fixture(scope="session")
def digits():
    """sklearn's 8×8 digits: `(x_train, y_train, x_test, y_test)`.

    1,437 / 360 examples of 64 float32 features in [0, 1], labels 0–9.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return x[:split], y[:split], x[split:], y[split:]
