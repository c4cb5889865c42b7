import os

import numpy as np
import pytest

from tf_distill import saving
from tf_distill.backend import keras


def _model(with_lambda=False):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="logits")(inputs)
    if with_lambda:
        x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    return keras.Model(inputs, x)


def test_save_and_load_round_trip(tmp_path):
    model = _model()
    path = tmp_path / "m.keras"
    size = saving.save_model(model, path)
    assert size == os.path.getsize(path) > 0
    loaded = saving.load_model(path)
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_lambda_layer_is_refused_unless_unsafe(tmp_path):
    path = tmp_path / "lambda.keras"
    saving.save_model(_model(with_lambda=True), path)
    with pytest.raises(saving.UnsafeModelError, match=r"Lambda.*--unsafe"):
        saving.load_model(path)
    assert saving.load_model(path, unsafe=True) is not None


def test_h5_is_refused_by_default(tmp_path):
    path = tmp_path / "legacy.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(saving.UnsafeModelError, match=r"legacy HDF5.*ignores safe mode"):
        saving.load_model(path)


def test_unknown_class_is_refused(tmp_path):
    @keras.saving.register_keras_serializable(package="test_saving_only")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    inputs = keras.Input((2,))
    path = tmp_path / "custom.keras"
    saving.save_model(keras.Model(inputs, Twice()(inputs)), path)
    keras.saving.get_custom_objects().pop("test_saving_only>Twice")
    with pytest.raises(saving.UnsafeModelError, match="not registered here"):
        saving.load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file"):
        saving.load_model(tmp_path / "nothing.keras")


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.keras"
    saving.save_model(_model(), path)
    before = path.read_bytes()
    model = _model()

    def broken_save(filepath, *args, **kwargs):
        with open(filepath, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        saving.save_model(model, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.keras"]


def test_keras_with_known_loading_vulnerabilities_is_refused(monkeypatch, capsys):
    from tf_distill import backend
    from tf_distill import cli

    monkeypatch.setattr(backend.keras, "__version__", "3.8.0")
    with pytest.raises(RuntimeError, match=r"refuses to load model files with Keras 3.8.0"):
        backend.check_safe_keras()
    assert cli.main(["losses"]) == 2
    assert "Upgrade with `pip install -U keras`" in capsys.readouterr().err
