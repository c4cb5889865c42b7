"""Saving a Distiller (tf_distill.distiller_config): never the teachers'
optimizer state."""

import os
import zipfile

import h5py
import numpy as np
import pytest

from tf_distill import Distiller
from tf_distill import LogitsDistillation
from tf_distill.backend import keras


def mlp(name, hidden):
    inputs = keras.Input((8,))
    x = keras.layers.Dense(hidden, activation="relu", name=f"{name}_hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(5, name=f"{name}_logits")(x), name=name)


def saved_distiller(teacher, path, x, y):
    keras.utils.set_random_seed(1)
    distiller = Distiller(teacher, mlp("student", 4), LogitsDistillation(2.0))
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    distiller.save(path)
    return distiller


def weight_groups(path):
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as file:
        with h5py.File(file, "r") as weights:
            names = []
            weights.visit(names.append)
    return names


@pytest.mark.slow
@pytest.mark.filterwarnings("error::UserWarning")  # loading skips nothing
def test_a_saved_distiller_holds_no_teacher_optimizer_state(tiny_data, tmp_path):
    x, y = tiny_data
    # A wide teacher: its Adam state (2 × 8k values) would be most of the file.
    trained = mlp("teacher", 512)
    trained.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    trained.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert len(trained.optimizer.variables) > 2  # it has state to leak
    plain = mlp("teacher", 512)

    with_state = saved_distiller(trained, tmp_path / "trained.keras", x, y)
    saved_distiller(plain, tmp_path / "plain.keras", x, y)

    groups = weight_groups(tmp_path / "trained.keras")
    assert [g for g in groups if "optimizer" in g and not g.startswith("optimizer")] == []
    assert any(g.startswith("optimizer/vars") for g in groups)  # the student's is kept
    sizes = [os.path.getsize(tmp_path / name) for name in ("trained.keras", "plain.keras")]
    assert abs(sizes[0] - sizes[1]) <= 0.02 * sizes[1], sizes
    # The teacher keeps its optimizer, and the file resumes the distillation.
    assert trained.optimizer is not None and trained.optimizer.variables
    loaded = keras.saving.load_model(tmp_path / "trained.keras")
    np.testing.assert_allclose(loaded(x), with_state(x), rtol=1e-6)
    np.testing.assert_allclose(loaded.teacher(x), trained(x), rtol=1e-6)


def test_saved_weights_hold_no_teacher_optimizer_state(tiny_data, tmp_path):
    x, y = tiny_data
    trained = mlp("teacher", 32)
    trained.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    trained.fit(x, y, batch_size=32, epochs=1, verbose=0)
    distiller = Distiller(trained, mlp("student", 4), LogitsDistillation(2.0))
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "d.weights.h5"
    distiller.save_weights(path)
    with h5py.File(path, "r") as weights:
        groups = []
        weights.visit(groups.append)
    assert [g for g in groups if "optimizer" in g and not g.startswith("optimizer")] == []
