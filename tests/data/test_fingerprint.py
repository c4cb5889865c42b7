"""Tests for `DataSplits.fingerprint`: the data's identity, so that a run sees changed data."""

import hashlib
import os
import shutil

import numpy as np
import sklearn

from tf_distill import data


def _write_npz(path, seed):
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (30, 4, 4), dtype=np.uint8), y=np.arange(30) % 3)


def test_npz_fingerprint_is_the_file_content_hash(tmp_path):
    _write_npz(tmp_path / "a.npz", seed=0)
    _write_npz(tmp_path / "b.npz", seed=1)
    shutil.copy(tmp_path / "a.npz", tmp_path / "a_copy.npz")
    first = data.load(str(tmp_path / "a.npz"))
    other = data.load(str(tmp_path / "b.npz"))
    copy = data.load(str(tmp_path / "a_copy.npz"), validation_size=5, seed=3)

    digest = hashlib.sha256((tmp_path / "a.npz").read_bytes()).hexdigest()
    assert first.fingerprint == f"npz:sha256:{digest}"
    # Other examples under the same shapes: another fingerprint.
    assert other.fingerprint != first.fingerprint
    # The same bytes under another name and other split options: the same data.
    assert copy.fingerprint == first.fingerprint
    assert data.load(str(tmp_path / "a.npz")).fingerprint == first.fingerprint

    # Replacing the file's content in place is seen.
    _write_npz(tmp_path / "a.npz", seed=2)
    assert data.load(str(tmp_path / "a.npz")).fingerprint != first.fingerprint


def _write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def test_idx_folder_fingerprint_changes_with_any_file(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 3, 3))
    _write_idx(tmp_path / "train-images-idx3-ubyte", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(20) % 2)
    before = data.load(str(tmp_path)).fingerprint
    assert before.startswith("idx:sha256:") and len(before) == len("idx:sha256:") + 64
    assert data.load(str(tmp_path), validation_size=4).fingerprint == before

    changed = images.copy()
    changed[0, 0, 0] = (changed[0, 0, 0] + 1) % 256
    _write_idx(tmp_path / "train-images-idx3-ubyte", changed)
    assert data.load(str(tmp_path)).fingerprint != before

    # Adding a test split adds data: another fingerprint.
    _write_idx(tmp_path / "train-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:4])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(4) % 2)
    with_test = data.load(str(tmp_path)).fingerprint
    assert with_test != before
    os.remove(tmp_path / "t10k-images-idx3-ubyte")
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    assert data.load(str(tmp_path)).fingerprint == before


def test_digits_fingerprint_names_the_scikit_learn_version():
    splits = data.load("digits")
    assert splits.fingerprint == f"digits:scikit-learn-{sklearn.__version__}"


def test_arrays_fingerprint_hashes_the_splits():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20) % 2
    first = data.from_arrays(x, y, validation_size=4, test_size=4)
    again = data.from_arrays(x.copy(), y.copy(), validation_size=4, test_size=4)
    assert first.fingerprint.startswith("arrays:sha256:")
    assert again.fingerprint == first.fingerprint
    assert data.from_arrays(x, 1 - y, validation_size=4, test_size=4).fingerprint != (
        first.fingerprint
    )
    assert first.fingerprint == data.fingerprint_arrays(
        first.x_train, first.y_train, first.x_val, first.y_val, first.x_test, first.y_test
    )
    # A DataSplits built directly gets one too.
    direct = data.DataSplits(
        first.x_train,
        first.y_train,
        first.x_val,
        first.y_val,
        first.x_test,
        first.y_test,
        num_classes=2,
        input_shape=(2,),
    )
    assert direct.fingerprint == first.fingerprint
    # The same bytes in another shape are other data.
    assert data.fingerprint_arrays(x) != data.fingerprint_arrays(x.reshape(2, 20))
