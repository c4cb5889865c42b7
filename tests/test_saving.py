import json
import os
import zipfile

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


def _saved_members(tmp_path):
    """The members of a tiny saved `.keras` file, by name."""
    path = tmp_path / "good.keras"
    saving.save_model(_model(), path)
    with zipfile.ZipFile(path) as archive:
        return path, {name: archive.read(name) for name in archive.namelist()}


def _rewritten(tmp_path, name, **replaced):
    """A `.keras` archive like a saved one, with some members replaced."""
    _, members = _saved_members(tmp_path)
    members.update({member.replace("__", "."): data for member, data in replaced.items()})
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def _with_activation(tmp_path, name, activation):
    """A saved model whose Dense layer's activation is replaced in its config."""
    _, members = _saved_members(tmp_path)
    config = json.loads(members["config.json"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Dense":
            layer["config"]["activation"] = activation
    return _rewritten(tmp_path, name, config__json=json.dumps(config))


def _gadget_function(tmp_path):
    # `keras.utils.get_file` downloads a file: a known deserialization gadget.
    return _with_activation(tmp_path, "gadget.keras", {
        "module": "keras.utils", "class_name": "function",
        "config": "get_file", "registered_name": "get_file",
    })


def _missing_keras_path(tmp_path):
    return _with_activation(tmp_path, "missing_path.keras", {
        "module": "keras.no_such_module", "class_name": "function",
        "config": "nothing", "registered_name": "nothing",
    })


def _corrupted_member(tmp_path):
    path, members = _saved_members(tmp_path)
    data = bytearray(path.read_bytes())
    # Members are stored uncompressed: flip one byte inside config.json.
    offset = bytes(data).index(members["config.json"][:64]) + 20
    data[offset] ^= 0xFF
    target = tmp_path / "corrupted.keras"
    target.write_bytes(bytes(data))
    return target


def _junk_weights(tmp_path):
    return _rewritten(tmp_path, "junk_weights.keras", model__weights__h5=b"junk" * 64)


def _junk_hdf5_weights(tmp_path):
    # The HDF5 signature, then junk: h5py itself must refuse it.
    return _rewritten(
        tmp_path, "junk_hdf5.keras", model__weights__h5=b"\x89HDF\r\n\x1a\n" + b"junk" * 64
    )


def _junk_config(tmp_path):
    return _rewritten(tmp_path, "junk_config.keras", config__json=b"{not json")


def _truncated(tmp_path):
    path, _ = _saved_members(tmp_path)
    data = path.read_bytes()
    target = tmp_path / "truncated.keras"
    target.write_bytes(data[: len(data) // 2])
    return target


def _empty(tmp_path):
    target = tmp_path / "empty.keras"
    target.write_bytes(b"")
    return target


HOSTILE_FILES = [
    (_gadget_function, saving.UnsafeModelError, r"keras\.utils\.get_file.*not a modeling function"),
    (_missing_keras_path, saving.ModelFileError, r"keras\.no_such_module cannot be imported"),
    (_corrupted_member, saving.ModelFileError, r"damaged: its member 'config\.json' fails"),
    (_junk_weights, saving.ModelFileError, r"'model\.weights\.h5' is not an HDF5 file"),
    (_junk_hdf5_weights, saving.ModelFileError, r"could not build the model.*OSError"),
    (_junk_config, saving.ModelFileError, r"could not build the model.*JSONDecodeError"),
    (_truncated, saving.ModelFileError, r"not a valid `\.keras` archive.*truncated"),
    (_empty, saving.ModelFileError, r"not a valid `\.keras` archive.*truncated"),
]


@pytest.mark.parametrize(("build", "error", "message"), HOSTILE_FILES)
def test_a_model_file_that_cannot_load_raises_one_line_naming_it(
    tmp_path, build, error, message
):
    path = build(tmp_path)
    with pytest.raises(error, match=message) as raised:
        saving.load_model(path)
    text = str(raised.value)
    assert isinstance(raised.value, saving.ModelFileError)
    assert repr(str(path)) in text
    assert "\n" not in text and len(text) < 400


@pytest.mark.parametrize(("build", "error", "message"), HOSTILE_FILES)
def test_a_model_file_that_cannot_load_exits_2_with_one_line(
    tmp_path, capsys, build, error, message
):
    from tf_distill import cli

    path = build(tmp_path)
    assert cli.main(["export", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("tf-distill: error: ") and str(path) in err


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
    # Every command that imports Keras checks it before any work (listing or
    # describing the losses needs no Keras).
    assert cli.main(["export", "model.keras"]) == 2
    assert "Upgrade with `pip install -U keras`" in capsys.readouterr().err
