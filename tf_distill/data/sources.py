"""`load(source)`: every source (digits, idx folder, `.npz`, TFDS, keras.datasets) as `DataSplits`."""

import hashlib
import inspect
import io
import os
import zipfile

import numpy as np

from tf_distill.backend import keras
from tf_distill.data.arrays import SPLIT_OPTIONS
from tf_distill.data.arrays import check_split_options
from tf_distill.data.arrays import from_arrays
from tf_distill.data.idx import read_idx_folder
from tf_distill.data.splits import DataSplits

_COMMON_OPTIONS = SPLIT_OPTIONS + ("name",)

_VALID_SOURCES = (
    "'digits', a folder of MNIST idx files, a '.npz' file, 'tfds:NAME', "
    "{'tfds': NAME, 'data_dir': ...} or 'keras:NAME'"
)

_KERAS_DATASETS = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}


def load(source: str | os.PathLike | dict = "digits", **options) -> DataSplits:
    """Loads a data set from any supported source as `DataSplits`.

    The `data:` section of a tf_distill config is passed here, either as a
    source string with options or as one mapping (`{"source": "digits",
    "validation_size": 0.2}`, `{"tfds": "mnist", "data_dir": "~/tfds"}`).
    Options are checked before anything is read.

    Args:
        source: `"digits"`, a folder of MNIST idx files, a `.npz` file,
            `"tfds:NAME"`, `"keras:NAME"`, or a mapping with one of the keys
            `source`, `path`, `tfds`, `keras` plus options.
        **options: Options of every source:
            - `validation_size`, `test_size`: size of the validation and test
              splits, as a count (int) or a fraction (float in [0, 1)).
              A split the source lacks is carved from the training data,
              stratified, and a fraction counts all the training data (the
              default is 0.1, 0.15 for digits); a split the source provides is
              kept whole by default, or reduced to a stratified subset of that
              size (a fraction of that split).
            - `train_size`: keep a stratified subset of the training examples
              left after carving (count or fraction), e.g. for fast runs. The
              validation and test sets do not depend on it.
            - `seed`: seed of carving and subsets (default 0).
            - `num_classes`: number of classes, if not `max(label) + 1`.
            - `name`: the data set's name in reports.
            Idx folders also take `verify_checksums` (default True); TFDS
            takes `data_dir`, `download`, `train_split`, `validation_split`,
            `test_split`.

    Returns:
        A `DataSplits`, whose `fingerprint` identifies the source's content.

    Raises:
        ValueError: For an unknown source or option, invalid option values,
            or invalid data (bad labels, NaN, inconsistent shapes, a corrupt
            or mismatching file, an empty data set).
        FileNotFoundError: If a path does not exist or a required file is
            missing.

    Example:

    >>> tf_distill.data.load("digits").sizes
    {'train': 1257, 'validation': 270, 'test': 270}
    >>> tf_distill.data.load("../shared/data/mnist", train_size=3000)
    DataSplits(name='mnist', train=3000, validation=6000, test=10000, ...)
    """
    source, options = _normalize_source(source, options)
    loader, argument = _resolve_source(source)
    loader_options = [
        parameter.name
        for parameter in list(inspect.signature(loader).parameters.values())[1:]
        if parameter.kind == inspect.Parameter.KEYWORD_ONLY
    ]
    valid = sorted(set(_COMMON_OPTIONS) | set(loader_options))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for data source {source!r}. Valid "
            f"options: {valid}. Received: options={options!r}"
        )
    check_split_options(**{k: v for k, v in options.items() if k in SPLIT_OPTIONS})
    return loader(argument, **options)


def _normalize_source(source, options):
    """Turns the mapping form of a source into `(source, options)`."""
    if not isinstance(source, dict):
        return source, dict(options)
    config = dict(source)
    forms = [key for key in ("source", "path", "tfds", "keras") if key in config]
    if len(forms) != 1:
        raise ValueError(
            "A data source mapping needs exactly one of the keys 'source', "
            f"'path', 'tfds' or 'keras'. Received: source={source!r}"
        )
    form = forms[0]
    value = config.pop(form)
    if form in ("tfds", "keras"):
        value = f"{form}:{value}"
    config.update(options)
    return value, config


def _resolve_source(source):
    """Returns `(loader, argument)` for `source`, or raises before any work."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or not source.strip():
        raise ValueError(
            f"Unknown data source. Expected {_VALID_SOURCES}. Received: source={source!r}"
        )
    if source == "digits":
        return _load_digits, None
    for prefix, loader in (("tfds:", _load_tfds), ("keras:", _load_keras)):
        if source.startswith(prefix):
            dataset_name = source[len(prefix) :].strip()
            if not dataset_name:
                raise ValueError(
                    f"A '{prefix}' source needs a data set name, as in "
                    f"'{prefix}mnist'. Received: source={source!r}"
                )
            if loader is _load_keras and dataset_name not in _KERAS_DATASETS:
                raise ValueError(
                    "Unknown keras.datasets image data set. Expected one of "
                    f"{sorted(_KERAS_DATASETS)}. Received: source={source!r}"
                )
            return loader, dataset_name
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        return _load_idx_folder, path
    if os.path.isfile(path):
        if path.lower().endswith(".npz"):
            return _load_npz, path
        raise ValueError(
            f"Unsupported data file '{path}': expected a '.npz' file or a folder "
            f"of MNIST idx files. Received: source={source!r}"
        )
    if os.sep in source or "/" in source or source.lower().endswith(".npz"):
        raise FileNotFoundError(
            f"Data source path '{path}' does not exist. Received: source={source!r}"
        )
    hint = ""
    if source in _KERAS_DATASETS:
        hint = f" Did you mean 'tfds:{source}' or 'keras:{source}'?"
    raise ValueError(
        f"Unknown data source. Expected {_VALID_SOURCES}.{hint} Received: source={source!r}"
    )


def _load_digits(_, **split_options):
    import sklearn
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixels of the digits data set are counts 0..16 of the 4×4 blocks set.
    images = (digits.images / 16.0).astype("float32")
    split_options.setdefault("name", "digits")
    return from_arrays(
        images,
        digits.target,
        default_size=0.15,
        fingerprint=f"digits:scikit-learn-{sklearn.__version__}",
        **split_options,
    )


def _load_idx_folder(folder, *, verify_checksums=True, **split_options):
    arrays, fingerprint = read_idx_folder(folder, verify_checksums=verify_checksums)
    x_test, y_test = arrays.get("test", (None, None))
    split_options.setdefault("name", os.path.basename(os.path.normpath(os.path.abspath(folder))))
    return from_arrays(
        *arrays["train"], x_test=x_test, y_test=y_test, fingerprint=fingerprint, **split_options
    )


def _load_npz(path, **split_options):
    try:
        # Read once: the bytes hashed are the bytes loaded.
        with open(path, "rb") as handle:
            content = handle.read()
        archive = np.load(io.BytesIO(content), allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise ValueError(f"Cannot read '{path}' as a .npz file: {error}") from error
    with archive:
        keys = set(archive.files)
        aliases = {
            "x": ("x", "x_train"),
            "y": ("y", "y_train"),
            "x_val": ("x_val", "x_validation"),
            "y_val": ("y_val", "y_validation"),
            "x_test": ("x_test",),
            "y_test": ("y_test",),
        }
        found = {}
        for role, names in aliases.items():
            present = [name for name in names if name in keys]
            if len(present) > 1:
                raise ValueError(f"'{path}' has both {present[0]!r} and {present[1]!r}.")
            if present:
                try:
                    found[role] = archive[present[0]]
                except ValueError as error:
                    # Ragged images are saved as object arrays, which need pickle.
                    raise ValueError(
                        f"Array {present[0]!r} in '{path}' cannot be read without "
                        "pickle; it is an object array (images of inconsistent "
                        f"shape?). {error}"
                    ) from error
    if "x" not in found or "y" not in found:
        raise ValueError(
            f"'{path}' must hold arrays 'x' and 'y' (or 'x_train' and 'y_train'). "
            f"Received arrays: {sorted(keys)}"
        )
    split_options.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return from_arrays(
        found["x"],
        found["y"],
        x_val=found.get("x_val"),
        y_val=found.get("y_val"),
        x_test=found.get("x_test"),
        y_test=found.get("y_test"),
        fingerprint=f"npz:sha256:{hashlib.sha256(content).hexdigest()}",
        **split_options,
    )


def _load_tfds(
    dataset_name,
    *,
    data_dir=None,
    download=True,
    train_split="train",
    validation_split=None,
    test_split="test",
    **split_options,
):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "A 'tfds:' data source needs TensorFlow Datasets: `pip install tensorflow-datasets`."
        ) from error
    if not train_split:
        raise ValueError(
            f"`train_split` must name a split of {dataset_name!r}. "
            f"Received: train_split={train_split!r}"
        )
    # A split set to None is carved from the training split instead.
    wanted = [
        (role, split)
        for role, split in (
            ("train", train_split),
            ("validation", validation_split),
            ("test", test_split),
        )
        if split
    ]
    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
    try:
        loaded, info = tfds.load(
            dataset_name,
            split=[split for _, split in wanted],
            data_dir=data_dir,
            download=download,
            as_supervised=True,
            batch_size=-1,
            with_info=True,
        )
    except ModuleNotFoundError as error:
        if error.name != "importlib_resources":
            raise
        # tensorflow/datasets#11212: TFDS needs this package on Python >= 3.9
        # to download and prepare, but declares it only for older Pythons.
        raise ImportError(
            f"TensorFlow Datasets needs `importlib_resources` to prepare "
            f"{dataset_name!r}: `pip install importlib_resources`."
        ) from error
    arrays = {role: tfds.as_numpy(pair) for (role, _), pair in zip(wanted, loaded)}
    if split_options.get("num_classes") is None and info.supervised_keys:
        label_feature = info.features[info.supervised_keys[1]]
        if getattr(label_feature, "num_classes", None):
            split_options["num_classes"] = int(label_feature.num_classes)
    split_options.setdefault("name", info.name)
    splits = ",".join(f"{role}={split}" for role, split in wanted)
    return from_arrays(
        *arrays["train"],
        *arrays.get("validation", (None, None)),
        *arrays.get("test", (None, None)),
        fingerprint=f"tfds:{info.name}:{info.version}:{splits}",
        **split_options,
    )


def _load_keras(dataset_name, **split_options):
    module = getattr(keras.datasets, dataset_name)
    (x_train, y_train), (x_test, y_test) = module.load_data()
    if split_options.get("num_classes") is None:
        split_options["num_classes"] = _KERAS_DATASETS[dataset_name]
    split_options.setdefault("name", dataset_name)
    # keras.datasets checks each download against a fixed hash: the name
    # identifies the data.
    return from_arrays(
        x_train,
        y_train,
        x_test=x_test,
        y_test=y_test,
        fingerprint=f"keras:{dataset_name}",
        **split_options,
    )
