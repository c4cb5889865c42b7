import gzip
import hashlib
import importlib.util
import os

import numpy as np
import pytest

from tf_distill import data
from tf_distill.backend import keras

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _rows(x, y):
    """The examples as sortable rows, to compare data sets as multisets."""
    rows = np.concatenate([x.reshape(len(x), -1), y.reshape(-1, 1)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def _write_idx(path, array, magic=None):
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    content = header + array.tobytes()
    if str(path).endswith(".gz"):
        content = gzip.compress(content)
    with open(path, "wb") as handle:
        handle.write(content)


def _tiny_idx_folder(folder, gzipped=True, num_train=40, num_test=12):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gzipped else ""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (num_train, 6, 5)),
        "train-labels-idx1-ubyte": np.arange(num_train) % 4,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (num_test, 6, 5)),
        "t10k-labels-idx1-ubyte": np.arange(num_test) % 4,
    }
    os.makedirs(folder, exist_ok=True)
    for base, array in arrays.items():
        _write_idx(os.path.join(folder, base + suffix), array)
    return {base: np.asarray(array, np.uint8) for base, array in arrays.items()}


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


# --- digits -----------------------------------------------------------------


def test_digits_shapes_classes_and_scaling():
    splits = data.load("digits")
    assert splits.sizes == {"train": 1257, "validation": 270, "test": 270}
    assert splits.input_shape == (8, 8, 1)
    assert splits.num_classes == 10
    assert splits.name == "digits"
    for x, y in (splits.arrays(s) for s in data.SPLITS):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1:] == (8, 8, 1) and y.shape == (len(x),)
    everything = np.concatenate([splits.x_train, splits.x_val, splits.x_test])
    assert everything.min() == 0.0 and everything.max() == 1.0
    assert repr(splits) == (
        "DataSplits(name='digits', train=1257, validation=270, test=270, "
        "input_shape=(8, 8, 1), num_classes=10)"
    )


def test_digits_split_is_deterministic_disjoint_and_stratified():
    from sklearn.datasets import load_digits

    first, second = data.load("digits"), data.load("digits")
    for split in data.SPLITS:
        np.testing.assert_array_equal(first.arrays(split)[0], second.arrays(split)[0])
        np.testing.assert_array_equal(first.arrays(split)[1], second.arrays(split)[1])
    # The three splits partition the data set: nothing lost, nothing shared.
    digits = load_digits()
    original = _rows((digits.images / 16.0).astype("float32"), digits.target)
    combined = _rows(
        np.concatenate([first.x_train, first.x_val, first.x_test]),
        np.concatenate([first.y_train, first.y_val, first.y_test]),
    )
    np.testing.assert_array_equal(combined, original)
    class_counts = np.bincount(digits.target)
    for y in (first.y_val, first.y_test):
        expected = len(y) * class_counts / class_counts.sum()
        assert np.all(np.abs(np.bincount(y, minlength=10) - expected) < 1.0)
    other_seed = data.load("digits", seed=1)
    assert not np.array_equal(other_seed.y_val, first.y_val) or not np.array_equal(
        other_seed.x_val, first.x_val
    )


def test_digits_options_change_split_sizes():
    splits = data.load("digits", validation_size=100, test_size=0.2, train_size=500)
    assert splits.sizes == {"train": 500, "validation": 100, "test": 359}
    no_validation = data.load("digits", validation_size=0)
    assert no_validation.sizes["validation"] == 0
    assert no_validation.x_val.shape == (0, 8, 8, 1)


# --- idx folders ------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [True, False])
def test_idx_folder(tmp_path, gzipped):
    written = _tiny_idx_folder(tmp_path / "tiny", gzipped=gzipped)
    splits = data.load(tmp_path / "tiny", validation_size=8)  # A pathlib.Path.
    assert splits.name == "tiny"
    assert splits.sizes == {"train": 32, "validation": 8, "test": 12}
    assert splits.input_shape == (6, 5, 1)
    assert splits.num_classes == 4
    np.testing.assert_array_equal(
        splits.x_test[..., 0], written["t10k-images-idx3-ubyte"].astype("float32") / 255
    )
    np.testing.assert_array_equal(splits.y_test, written["t10k-labels-idx1-ubyte"])
    # Validation is carved from train, stratified: 2 of each of the 4 classes.
    np.testing.assert_array_equal(np.bincount(splits.y_val), [2, 2, 2, 2])
    np.testing.assert_array_equal(
        _rows(
            np.concatenate([splits.x_train, splits.x_val])[..., 0],
            np.concatenate([splits.y_train, splits.y_val]),
        ),
        _rows(
            written["train-images-idx3-ubyte"].astype("float32") / 255,
            written["train-labels-idx1-ubyte"],
        ),
    )


def test_read_idx_values_and_header(tmp_path):
    array = np.arange(24).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    _write_idx(tmp_path / "b", array)
    for name in ("a.gz", "b"):
        result = data.read_idx(tmp_path / name, expected_magic=2051)
        assert result.dtype == np.uint8
        np.testing.assert_array_equal(result, array)


def test_idx_bad_magic_number(tmp_path):
    _tiny_idx_folder(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    _write_idx(bad, np.zeros((40, 6, 5)), magic=2049)
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte.gz' has magic number 2049, expected 2051"
    ):
        data.load(str(tmp_path))


def test_idx_corrupt_gzip(tmp_path):
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(ValueError, match=r"'.*broken.gz' is not a valid gzip file"):
        data.read_idx(tmp_path / "broken.gz")
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match=r"'.*tiny' is not an idx file: it has 2 bytes"):
        data.read_idx(tmp_path / "tiny")


def test_idx_truncated_file(tmp_path):
    _tiny_idx_folder(tmp_path, gzipped=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    content = path.read_bytes()
    path.write_bytes(content[:-7])
    with pytest.raises(
        ValueError, match=r"t10k-images-idx3-ubyte' has 353 bytes of data.*needs 360"
    ):
        data.load(str(tmp_path))


def test_idx_images_and_labels_counts_differ(tmp_path):
    _tiny_idx_folder(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(39))
    with pytest.raises(
        ValueError, match=r"holds 40 images but .*train-labels-idx1-ubyte.gz' holds 39 labels"
    ):
        data.load(str(tmp_path))


def test_idx_missing_files(tmp_path):
    _tiny_idx_folder(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match=r"has test images but no t10k-labels-idx1-ubyte"):
        data.load(str(tmp_path))
    os.remove(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(
        FileNotFoundError, match=r"no train images file: expected train-images-idx3-ubyte"
    ):
        data.load(str(tmp_path))


def test_idx_without_test_files_carves_a_test_split(tmp_path):
    _tiny_idx_folder(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    os.remove(tmp_path / "t10k-images-idx3-ubyte.gz")
    splits = data.load(str(tmp_path), validation_size=4, test_size=8)
    assert splits.sizes == {"train": 28, "validation": 4, "test": 8}


def test_idx_sha256sums_verified(tmp_path):
    _tiny_idx_folder(tmp_path)
    names = sorted(p for p in os.listdir(tmp_path) if p.endswith(".gz"))
    lines = [f"{_sha256(tmp_path / name)}  {name}" for name in names]
    (tmp_path / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    assert data.load(str(tmp_path)).sizes["test"] == 12

    wrong = "0" * 64
    lines[names.index("train-labels-idx1-ubyte.gz")] = f"{wrong} *train-labels-idx1-ubyte.gz"
    (tmp_path / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError,
        match=rf"Checksum mismatch for '.*train-labels-idx1-ubyte.gz': SHA256SUMS lists {wrong}",
    ):
        data.load(str(tmp_path))
    assert data.load(str(tmp_path), verify_checksums=False).sizes["test"] == 12

    (tmp_path / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(ValueError, match=r"SHA256SUMS' line 1 is not '<sha256>  <file name>'"):
        data.load(str(tmp_path))


@pytest.mark.slow
def test_real_mnist():
    if not os.path.isdir(MNIST_DIR):
        pytest.skip(f"MNIST is not available at {MNIST_DIR}")
    splits = data.load(MNIST_DIR)
    assert splits.name == "mnist"
    assert splits.input_shape == (28, 28, 1)
    assert splits.sizes == {"train": 54000, "validation": 6000, "test": 10000}
    train_counts = np.bincount(splits.y_train) + np.bincount(splits.y_val)
    np.testing.assert_array_equal(train_counts, MNIST_TRAIN_COUNTS)
    np.testing.assert_array_equal(np.bincount(splits.y_test), MNIST_TEST_COUNTS)
    assert splits.x_train.max() == 1.0 and splits.x_train.min() == 0.0

    subset = data.load(MNIST_DIR, train_size=3000, validation_size=500)
    assert subset.sizes == {"train": 3000, "validation": 500, "test": 10000}
    # Stratified: every class gets its share of the 3,000, to within one.
    expected = 3000 * (np.array(MNIST_TRAIN_COUNTS) - np.bincount(subset.y_val)) / 59500
    assert np.all(np.abs(np.bincount(subset.y_train) - expected) < 1.0)


# --- npz --------------------------------------------------------------------


def test_npz_with_and_without_given_splits(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (30, 4, 4), dtype=np.uint8)
    y = np.arange(30) % 3
    x_test = rng.random((9, 4, 4)).astype("float64")
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez(
        tmp_path / "full.npz",
        x_train=x,
        y_train=y,
        x_val=x[:6],
        y_val=y[:6],
        x_test=x_test,
        y_test=np.arange(9) % 3,
    )

    plain = data.load(str(tmp_path / "plain.npz"), validation_size=6, test_size=6)
    assert plain.name == "plain"
    assert plain.sizes == {"train": 18, "validation": 6, "test": 6}
    assert plain.input_shape == (4, 4, 1) and plain.num_classes == 3

    full = data.load({"path": str(tmp_path / "full.npz")})
    assert full.sizes == {"train": 30, "validation": 6, "test": 9}
    np.testing.assert_array_equal(full.x_train[..., 0], x.astype("float32") / 255)
    # Float inputs are kept as they are, not rescaled.
    np.testing.assert_allclose(full.x_test[..., 0], x_test.astype("float32"))
    np.testing.assert_array_equal(full.y_val, y[:6])


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "no_labels.npz", x=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"must hold arrays 'x' and 'y'.*Received arrays: \['x'\]"):
        data.load(str(tmp_path / "no_labels.npz"))
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((2, 2)), np.zeros((3, 3))
    np.savez(tmp_path / "ragged.npz", x=ragged, y=np.array([0, 1]))
    with pytest.raises(
        ValueError, match=r"Array 'x' in '.*ragged.npz' cannot be read without pickle"
    ):
        data.load(str(tmp_path / "ragged.npz"))
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"Cannot read '.*broken.npz' as a .npz file"):
        data.load(str(tmp_path / "broken.npz"))


# --- TFDS and keras.datasets ------------------------------------------------


def _write_tfds(tfds, data_dir, name, version, image_shape, num_classes, splits):
    """Writes a tiny prepared TFDS data set, as `download_and_prepare` would."""
    import tensorflow as tf

    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=image_shape),
            "label": tfds.features.ClassLabel(num_classes=num_classes),
        }
    )
    folder = os.path.join(data_dir, name, version)
    os.makedirs(folder)
    for split, (images, labels) in splits.items():
        path = os.path.join(folder, f"{name}-{split}.tfrecord-00000-of-00001")
        with tf.io.TFRecordWriter(path) as writer:
            for image, label in zip(images, labels):
                writer.write(features.serialize_example({"image": image, "label": label}))
    tfds.folder_dataset.write_metadata(
        data_dir=folder, features=features, supervised_keys=("image", "label")
    )


@pytest.mark.slow
def test_tfds_offline_from_data_dir(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    rng = np.random.default_rng(2)
    train = (rng.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8), np.arange(20) % 10)
    test = (rng.integers(0, 256, (10, 28, 28, 1), dtype=np.uint8), np.arange(10))
    # The registered `mnist` builder reads the files as if it had downloaded them.
    _write_tfds(
        tfds, str(tmp_path), "mnist", "3.0.1", (28, 28, 1), 10, {"train": train, "test": test}
    )
    splits = data.load("tfds:mnist", data_dir=str(tmp_path), download=False, validation_size=10)
    assert splits.name == "mnist" and splits.num_classes == 10
    assert splits.sizes == {"train": 10, "validation": 10, "test": 10}
    # TFDS may store examples in any order; compare as multisets.
    np.testing.assert_array_equal(
        _rows(splits.x_test, splits.y_test), _rows(test[0].astype("float32") / 255, test[1])
    )
    same = data.load(
        {"tfds": "mnist", "data_dir": str(tmp_path), "download": False, "validation_size": 10}
    )
    np.testing.assert_array_equal(same.x_val, splits.x_val)

    # A data set with its own validation split, 3 channels, 3 classes.
    shapes = {
        split: (rng.integers(0, 256, (n, 5, 5, 3), dtype=np.uint8), np.arange(n) % 3)
        for split, n in (("train", 12), ("validation", 6), ("test", 6))
    }
    _write_tfds(tfds, str(tmp_path), "tiny_shapes", "1.0.0", (5, 5, 3), 3, shapes)
    tiny = data.load(
        "tfds:tiny_shapes",
        data_dir=str(tmp_path),
        download=False,
        validation_split="validation",
        test_split=None,
        test_size=3,
    )
    assert tiny.sizes == {"train": 9, "validation": 6, "test": 3}
    # The TFDS version and splits read identify the data, not the split options.
    assert tiny.fingerprint == "tfds:tiny_shapes:1.0.0:train=train,validation=validation"
    assert tiny.input_shape == (5, 5, 3) and tiny.num_classes == 3
    np.testing.assert_array_equal(
        _rows(tiny.x_val, tiny.y_val),
        _rows(shapes["validation"][0].astype("float32") / 255, shapes["validation"][1]),
    )


def test_tfds_missing_importlib_resources_is_explained(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    if importlib.util.find_spec("importlib_resources") is not None:
        pytest.skip("importlib_resources is installed; preparing would download")
    # tensorflow/datasets#11212: preparing fails before any download without it.
    with pytest.raises(ImportError, match=r"needs `importlib_resources` to prepare 'mnist'"):
        data.load("tfds:mnist", data_dir=str(tmp_path))


def test_keras_datasets_dispatch(monkeypatch):
    calls = []

    def fake_mnist():
        calls.append("mnist")
        x = np.full((20, 3, 3), 255, dtype=np.uint8)
        return (x, np.arange(20) % 4), (x[:5], np.arange(5) % 4)

    def fake_cifar10():
        calls.append("cifar10")
        x = np.zeros((20, 2, 2, 3), dtype=np.uint8)
        labels = (np.arange(20) % 2).reshape(-1, 1)  # CIFAR's labels are [n, 1].
        return (x, labels), (x[:4], labels[:4])

    monkeypatch.setattr(keras.datasets.mnist, "load_data", fake_mnist)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", fake_cifar10)
    mnist = data.load("keras:mnist", validation_size=4)
    assert calls == ["mnist"]
    assert mnist.name == "mnist" and mnist.num_classes == 10  # Known, not max + 1.
    assert mnist.sizes == {"train": 16, "validation": 4, "test": 5}
    assert np.all(mnist.x_train == 1.0) and mnist.input_shape == (3, 3, 1)
    cifar = data.load({"keras": "cifar10"}, validation_size=2)
    assert calls == ["mnist", "cifar10"]
    assert cifar.y_train.shape == (18,) and cifar.input_shape == (2, 2, 3)
    assert (mnist.fingerprint, cifar.fingerprint) == ("keras:mnist", "keras:cifar10")


# --- errors -----------------------------------------------------------------


def test_unknown_sources():
    with pytest.raises(
        ValueError,
        match=r"Unknown data source\. Expected 'digits'.*Did you mean 'tfds:mnist' or 'keras:mnist'\? Received: source='mnist'",
    ):
        data.load("mnist")
    with pytest.raises(ValueError, match=r"Unknown data source.*Received: source=42"):
        data.load(42)
    with pytest.raises(
        ValueError,
        match=r"Unknown keras.datasets image data set\. Expected one of \['cifar10', 'cifar100', 'fashion_mnist', 'mnist'\]\. Received: source='keras:imdb'",
    ):
        data.load("keras:imdb")
    with pytest.raises(
        ValueError, match=r"A 'tfds:' source needs a data set name.*Received: source='tfds:'"
    ):
        data.load("tfds:")
    with pytest.raises(
        ValueError, match=r"exactly one of the keys 'source', 'path', 'tfds' or 'keras'"
    ):
        data.load({"tfds": "mnist", "keras": "mnist"})


def test_missing_and_unsupported_paths(tmp_path):
    missing = str(tmp_path / "nowhere" / "mnist")
    with pytest.raises(FileNotFoundError, match=rf"Data source path '{missing}' does not exist"):
        data.load(missing)
    with pytest.raises(FileNotFoundError, match=r"'absent.npz' does not exist"):
        data.load("absent.npz")
    (tmp_path / "table.csv").write_text("1,2\n")
    with pytest.raises(
        ValueError, match=r"Unsupported data file '.*table.csv': expected a '.npz' file"
    ):
        data.load(str(tmp_path / "table.csv"))


def test_unknown_option_lists_valid_ones(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"Unknown option\(s\) \['data_dir'\] for data source 'digits'\. Valid options: \['name', 'num_classes', 'seed', 'test_size', 'train_size', 'validation_size'\]",
    ):
        data.load("digits", data_dir="/tmp")
    # Checked before the (empty) folder is read.
    with pytest.raises(
        ValueError, match=r"Unknown option\(s\) \['validaton_size'\].*'verify_checksums'"
    ):
        data.load({"source": str(tmp_path), "validaton_size": 5})


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"validation_size": 1.5},
            r"`validation_size` as a fraction must be in \[0, 1\)\. Received: validation_size=1\.5",
        ),
        ({"test_size": -3}, r"`test_size` must be >= 0\. Received: test_size=-3"),
        ({"train_size": "all"}, r"`train_size` must be a count .* Received: train_size='all'"),
        ({"validation_size": True}, r"Received: validation_size=True"),
        ({"seed": 1.5}, r"`seed` must be an integer\. Received: seed=1\.5"),
        ({"num_classes": 0}, r"`num_classes` must be an integer >= 1\. Received: num_classes=0"),
        (
            {"validation_size": 0.6, "test_size": 0.4},
            r"Carving {.test.: 719, .validation.: 1078} examples from the 1797 training examples of data set .digits. leaves none for training",
        ),
        ({"train_size": 5000}, r"`train_size` asks for 5000 examples, but only 1257 are available"),
        (
            {"num_classes": 5},
            r"Label 9 in data set 'digits' is outside \[0, 5\)\. Received: num_classes=5",
        ),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        data.load("digits", **options)


def test_invalid_arrays():
    x = np.zeros((6, 3, 3), dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(
        ValueError, match=r"Label -1 in the train split of data set 'arrays' is negative"
    ):
        data.from_arrays(x, np.array([0, 1, -1, 0, 1, 2]))
    with pytest.raises(ValueError, match=r"Label 7 in data set 'arrays' is outside \[0, 3\)"):
        data.from_arrays(x, y, x_test=x, y_test=y + 5, num_classes=3)
    with pytest.raises(ValueError, match=r"must be integers\. Received label 0\.5"):
        data.from_arrays(x, np.array([0, 0.5, 1, 1, 2, 2]))
    with pytest.raises(
        ValueError,
        match=r"class indices of shape \[examples\] \(not one-hot\)\. Received shape \(6, 3\)",
    ):
        data.from_arrays(x, np.eye(3)[y])
    with pytest.raises(ValueError, match=r"Data set 'arrays' is empty"):
        data.from_arrays(np.zeros((0, 3, 3)), np.zeros(0, dtype=int))
    nan_x = x.copy()
    nan_x[4, 1, 1] = np.nan
    with pytest.raises(
        ValueError, match=r"NaN or infinite inputs in 1 example\(s\), the first at index 4"
    ):
        data.from_arrays(nan_x, y)
    ragged = [np.zeros((3, 3))] * 5 + [np.zeros((4, 4))]
    with pytest.raises(ValueError, match=r"Images of inconsistent shape in the train split"):
        data.from_arrays(ragged, y)
    with pytest.raises(
        ValueError,
        match=r"Images of inconsistent shape in data set 'arrays': train has \(3, 3, 1\), test has \(4, 4, 1\)",
    ):
        data.from_arrays(x, y, x_test=np.zeros((2, 4, 4)), y_test=[0, 1])
    with pytest.raises(
        ValueError, match=r"train split of data set 'arrays' has 6 inputs but 5 labels"
    ):
        data.from_arrays(x, y[:5])
    with pytest.raises(
        ValueError, match=r"The test split needs both inputs and labels; only inputs were given"
    ):
        data.from_arrays(x, y, x_test=x)


# --- tf.data ----------------------------------------------------------------


def _epoch_labels(dataset):
    return np.concatenate([y.numpy() for _, y in dataset])


def test_as_tf_dataset_batches_and_shapes():
    splits = data.load("digits")
    train = splits.as_tf_dataset("train", batch_size=500, seed=0)
    batches = list(train)
    assert [tuple(x.shape) for x, _ in batches] == [(500, 8, 8, 1), (500, 8, 8, 1), (257, 8, 8, 1)]
    assert batches[0][0].dtype.name == "float32" and batches[0][1].dtype.name == "int32"
    # One epoch holds every training example exactly once.
    np.testing.assert_array_equal(np.sort(_epoch_labels(train)), np.sort(splits.y_train))
    dropped = splits.as_tf_dataset("train", batch_size=500, drop_remainder=True)
    assert len(list(dropped)) == 2
    # Evaluation splits keep their order by default.
    np.testing.assert_array_equal(_epoch_labels(splits.as_tf_dataset("val", 64)), splits.y_val)
    repeated = splits.as_tf_dataset("test", batch_size=100, repeat=True)
    assert len(list(repeated.take(7))) == 7  # More batches than one epoch's 3.


def test_as_tf_dataset_shuffling_is_seeded():
    splits = data.load("digits")
    first = splits.as_tf_dataset("train", batch_size=256, seed=7)
    second = splits.as_tf_dataset("train", batch_size=256, seed=7)
    other = splits.as_tf_dataset("train", batch_size=256, seed=8)
    epoch_one, epoch_two = _epoch_labels(first), _epoch_labels(first)
    np.testing.assert_array_equal(epoch_one, _epoch_labels(second))
    assert not np.array_equal(epoch_one, splits.y_train)  # Shuffled ...
    assert not np.array_equal(epoch_one, epoch_two)  # ... anew each epoch.
    np.testing.assert_array_equal(epoch_two, _epoch_labels(second))
    assert not np.array_equal(epoch_one, _epoch_labels(other))


def test_as_tf_dataset_errors():
    splits = data.load("digits", validation_size=0)
    with pytest.raises(
        ValueError,
        match=r"Invalid value for argument `split`\. Expected one of \('train', 'validation', 'test'\)\. Received: split='dev'",
    ):
        splits.as_tf_dataset("dev")
    with pytest.raises(ValueError, match=r"`batch_size` must be > 0\. Received: batch_size=0"):
        splits.as_tf_dataset("train", batch_size=0)
    with pytest.raises(
        ValueError, match=r"`batch_size` must be an integer > 0\. Received: batch_size=2\.5"
    ):
        splits.as_tf_dataset("train", batch_size=2.5)
    with pytest.raises(ValueError, match=r"The 'validation' split of data set 'digits' is empty"):
        splits.as_tf_dataset("validation")
