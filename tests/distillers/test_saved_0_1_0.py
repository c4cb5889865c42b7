"""Distillers saved by tf_distill 0.1.0 (before the one-engine split) still load.

`tests/fixtures/make_saved_0_1_0.py`, run on that release, wrote the files: a
`Distiller` (logits and a FitNets hint, compiled, one epoch) and a
`MutualDistiller`, with a batch, the students' predictions and the loss terms
on it.
"""

import json
import os

import numpy as np
import pytest

from tf_distill import distillers  # noqa: F401 (registers the distillers' classes)
from tf_distill import saving
from tf_distill.backend import keras

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


@pytest.fixture(scope="module")
def saved():
    batch = np.load(os.path.join(FIXTURES, "saved_0.1.0_batch.npz"))
    with open(os.path.join(FIXTURES, "saved_0.1.0_terms.json")) as file:
        terms = json.load(file)
    return batch, terms


@pytest.mark.parametrize(
    "name, logits_key",
    [("distiller", "student_logits"), ("mutual", "mutual_logits")],
)
def test_a_distiller_saved_before_the_engine_loads_and_gives_the_same_numbers(
    saved, name, logits_key
):
    batch, terms = saved
    path = os.path.join(FIXTURES, f"{name}_0.1.0.keras")
    x, y = batch["x"], batch["y"]
    # Safely (nothing compiled), as `tf-distill` loads models.
    safely = saving.load_model(path)
    np.testing.assert_allclose(safely.predict(x, verbose=0), batch[logits_key], atol=1e-6)
    # With its compile config, as Keras loads it.
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), batch[logits_key], atol=1e-6)
    restored = {key: float(value) for key, value in loaded.compute_loss_terms(x, y).items()}
    assert set(restored) == set(terms[name])
    for key, value in terms[name].items():
        np.testing.assert_allclose(restored[key], value, rtol=1e-5, err_msg=key)
    # Compiled as saved: training goes on from the saved optimizer.
    assert loaded.get_compile_config()["loss"] == "sparse_categorical_crossentropy"
    history = loaded.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
