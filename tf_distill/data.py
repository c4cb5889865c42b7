"""Data sets for distillation: one `load(source)` for every format.

Every source ends as the same `DataSplits`: float32 images in `[0, 1]` with a
channel axis, int32 sparse labels, and fixed train/validation/test splits.
Splits carved by tf_distill are stratified and seeded, so the same source and
options give the same examples in each split on every machine, and teacher,
student and baseline are compared on the same validation and test sets.

Sources (`load(source, **options)`):

- `"digits"` (the default): scikit-learn's bundled 8×8 handwritten digits,
  1,797 images, no download. Split 70/15/15.
- A folder of MNIST-format idx files (`train-images-idx3-ubyte[.gz]`,
  `train-labels-idx1-ubyte[.gz]`, `t10k-...`), e.g. MNIST or Fashion-MNIST.
  A `SHA256SUMS` file in the folder is verified.
- A `.npz` file with arrays `x` and `y` (optionally `x_val`/`y_val`,
  `x_test`/`y_test`).
- `"tfds:NAME"` or `{"tfds": NAME, "data_dir": ...}`: a TensorFlow Datasets
  data set, through `tfds.load`.
- `"keras:NAME"`: `keras.datasets.NAME.load_data()` (mnist, fashion_mnist,
  cifar10, cifar100). Keras downloads these on first use, so this source
  needs the internet once; tf_distill's tests only check the dispatch.
"""

import dataclasses
import gzip
import hashlib
import inspect
import math
import os
import zipfile

import numpy as np

from tf_distill.backend import keras
from tf_distill.backend import tf

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "test": "test",
}

# Options every source accepts; each loader adds its own keyword arguments.
_SPLIT_OPTIONS = ("validation_size", "test_size", "train_size", "seed", "num_classes")
_COMMON_OPTIONS = _SPLIT_OPTIONS + ("name",)

_VALID_SOURCES = (
    "'digits', a folder of MNIST idx files, a '.npz' file, 'tfds:NAME', "
    "{'tfds': NAME, 'data_dir': ...} or 'keras:NAME'"
)

_KERAS_DATASETS = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}

# MNIST's own file names, then the dotted variant some mirrors use.
_IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
# The third byte of an idx magic number is the element type.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclasses.dataclass(eq=False, repr=False)
class DataSplits:
    """A data set split into train, validation and test arrays.

    Images are float32 with a channel axis (`[n, height, width, channels]`),
    or `[n, features]` for flat inputs; labels are int32 class indices
    (sparse, not one-hot). A split may be empty (`validation_size=0`).

    Attributes:
        x_train, y_train: Training inputs and labels.
        x_val, y_val: Validation inputs and labels.
        x_test, y_test: Test inputs and labels.
        num_classes: Number of classes; every label is in
            `[0, num_classes)`.
        input_shape: Shape of one input, without the batch axis.
        name: A short name of the data set (`"digits"`, `"mnist"`).

    Example:

    >>> splits = tf_distill.data.load("digits")
    >>> splits.x_train.shape, splits.num_classes
    ((1257, 8, 8, 1), 10)
    >>> train = splits.as_tf_dataset("train", batch_size=64, seed=0)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple
    name: str = "data"

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Returns `(x, y)` of `split` (`"train"`, `"validation"` or `"test"`)."""
        key = _SPLIT_ALIASES.get(split) if isinstance(split, str) else None
        if key is None:
            raise ValueError(
                f"Invalid value for argument `split`. Expected one of {SPLITS}. "
                f"Received: split={split!r}"
            )
        if key == "train":
            return self.x_train, self.y_train
        if key == "validation":
            return self.x_val, self.y_val
        return self.x_test, self.y_test

    def as_tf_dataset(
        self,
        split: str,
        batch_size: int = 32,
        shuffle: bool | None = None,
        seed: int | None = None,
        repeat: bool = False,
        drop_remainder: bool = False,
    ) -> "tf.data.Dataset":
        """A batched, prefetched `tf.data.Dataset` of `(x, y)` pairs.

        The whole split is shuffled (the buffer holds every example), in a new
        order each epoch; with a `seed` the sequence of orders is the same on
        every run.

        Args:
            split: `"train"`, `"validation"` (or `"val"`) or `"test"`.
            batch_size: Examples per batch, > 0.
            shuffle: Whether to shuffle. Defaults to `True` for `"train"` and
                `False` for the others, so evaluation order is stable.
            seed: Shuffling seed (int) or `None` for a random order.
            repeat: Repeat forever (then pass `steps_per_epoch` to `fit`).
            drop_remainder: Drop the last batch if smaller than `batch_size`.

        Returns:
            A `tf.data.Dataset` yielding `(float32 [batch, *input_shape],
            int32 [batch])`.

        Raises:
            ValueError: If `split` is unknown or empty, or `batch_size` is
                not a positive integer.
        """
        x, y = self.arrays(split)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise ValueError(
                f"`batch_size` must be an integer > 0. Received: batch_size={batch_size!r}"
            )
        if batch_size <= 0:
            raise ValueError(f"`batch_size` must be > 0. Received: batch_size={batch_size!r}")
        if len(x) == 0:
            raise ValueError(
                f"The {split!r} split of data set {self.name!r} is empty, so it "
                f"cannot be batched. Received: split={split!r}"
            )
        if shuffle is None:
            shuffle = _SPLIT_ALIASES[split] == "train"
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            dataset = dataset.repeat()
        dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
        return dataset.prefetch(tf.data.AUTOTUNE)

    @property
    def sizes(self) -> dict[str, int]:
        """`{"train": n, "validation": n, "test": n}`."""
        return {
            "train": len(self.y_train),
            "validation": len(self.y_val),
            "test": len(self.y_test),
        }

    def __repr__(self):
        sizes = self.sizes
        return (
            f"DataSplits(name={self.name!r}, train={sizes['train']}, "
            f"validation={sizes['validation']}, test={sizes['test']}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


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
        A `DataSplits`.

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
    _check_split_options(**{k: v for k, v in options.items() if k in _SPLIT_OPTIONS})
    return loader(argument, **options)


def from_arrays(
    x_train,
    y_train,
    x_val=None,
    y_val=None,
    x_test=None,
    y_test=None,
    *,
    validation_size: int | float | None = None,
    test_size: int | float | None = None,
    train_size: int | float | None = None,
    seed: int | None = 0,
    num_classes: int | None = None,
    name: str = "arrays",
    default_size: float = 0.1,
) -> DataSplits:
    """Checks, converts and splits in-memory arrays into `DataSplits`.

    Every loader ends here. Images of shape `[n, h, w]` get a channel axis;
    uint8 inputs are scaled to `[0, 1]` by 1/255, other dtypes are cast to
    float32 unchanged. Labels become int32.

    Args:
        x_train, y_train: Training inputs (array-like, `[n, ...]`) and
            integer labels (`[n]` or `[n, 1]`).
        x_val, y_val, x_test, y_test: Optional given splits; a missing one is
            carved from the training data.
        validation_size, test_size, train_size, seed, num_classes, name: As
            in `load`.
        default_size: The fraction carved for a missing split whose size is
            `None`.

    Returns:
        A `DataSplits`.

    Raises:
        ValueError: For empty data, mismatched lengths, NaN or infinite
            inputs, images of inconsistent shape, labels that are not
            integers in `[0, num_classes)`, or sizes that leave no training
            data.
    """
    _check_split_options(
        validation_size=validation_size,
        test_size=test_size,
        train_size=train_size,
        seed=seed,
        num_classes=num_classes,
    )
    given = {"train": (x_train, y_train)}
    for split, x, y in (("validation", x_val, y_val), ("test", x_test, y_test)):
        if (x is None) != (y is None):
            raise ValueError(
                f"The {split} split needs both inputs and labels; only "
                f"{'labels' if x is None else 'inputs'} were given "
                f"(data set {name!r})."
            )
        if x is not None:
            given[split] = (x, y)
    arrays = {
        split: (_as_inputs(x, split, name), _as_labels(y, split, name))
        for split, (x, y) in given.items()
    }
    for split, (x, y) in arrays.items():
        if len(x) != len(y):
            raise ValueError(
                f"The {split} split of data set {name!r} has {len(x)} inputs but {len(y)} labels."
            )
    if len(arrays["train"][0]) == 0:
        raise ValueError(f"Data set {name!r} is empty: it has no training examples.")
    shapes = {split: x.shape[1:] for split, (x, _) in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(
            f"Images of inconsistent shape in data set {name!r}: "
            + ", ".join(f"{split} has {tuple(shape)}" for split, shape in shapes.items())
            + "."
        )
    largest = max(int(y.max()) for _, y in arrays.values() if len(y))
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(
            f"Label {largest} in data set {name!r} is outside [0, {num_classes}). "
            f"Received: num_classes={num_classes}"
        )

    rng = np.random.default_rng(seed)
    x_pool, y_pool = arrays["train"]
    pool_size = len(y_pool)
    carved = {}
    for split, size in (("test", test_size), ("validation", validation_size)):
        if split in arrays:
            continue
        count = _resolve_size(
            default_size if size is None else size, pool_size, _size_argument(split)
        )
        carved[split] = count
    if sum(carved.values()) >= pool_size:
        raise ValueError(
            f"Carving {carved} examples from the {pool_size} training examples of "
            f"data set {name!r} leaves none for training. Received: "
            f"validation_size={validation_size!r}, test_size={test_size!r}"
        )
    for split, count in carved.items():
        chosen, rest = _stratified_split(y_pool, count, rng)
        arrays[split] = (x_pool[chosen], y_pool[chosen])
        x_pool, y_pool = x_pool[rest], y_pool[rest]
    for split, size in (("test", test_size), ("validation", validation_size)):
        if split in carved or size is None:
            continue
        x, y = arrays[split]
        count = _resolve_size(size, len(y), _size_argument(split))
        chosen, _ = _stratified_split(y, count, rng)
        arrays[split] = (x[chosen], y[chosen])
    if train_size is not None:
        count = _resolve_size(train_size, len(y_pool), "train_size")
        if count == 0:
            raise ValueError(
                f"`train_size` leaves no training examples. Received: train_size={train_size!r}"
            )
        chosen, _ = _stratified_split(y_pool, count, rng)
        x_pool, y_pool = x_pool[chosen], y_pool[chosen]

    return DataSplits(
        x_train=x_pool,
        y_train=y_pool,
        x_val=arrays["validation"][0],
        y_val=arrays["validation"][1],
        x_test=arrays["test"][0],
        y_test=arrays["test"][1],
        num_classes=int(num_classes),
        input_shape=tuple(int(d) for d in x_pool.shape[1:]),
        name=name,
    )


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Reads one idx file (MNIST's format), gzipped or not, as a NumPy array.

    The header is big-endian: a magic number whose third byte is the element
    type and fourth the number of dimensions (2051 for uint8 images
    `[n, rows, cols]`, 2049 for uint8 labels `[n]`), then one uint32 per
    dimension, then the raw elements.

    Args:
        path: The file; gzip is detected from its content, not its name.
        expected_magic: If given, the magic number the file must have.

    Returns:
        An array in native byte order with the header's shape.

    Raises:
        ValueError: If the file is not a valid idx file, has the wrong magic
            number, or its size disagrees with its header.
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as handle:
            content = handle.read()
    except (OSError, EOFError) as error:
        if not compressed:
            raise
        raise ValueError(f"'{path}' is not a valid gzip file: {error}") from error
    if len(content) < 4:
        raise ValueError(
            f"'{path}' is not an idx file: it has {len(content)} bytes, "
            "fewer than the 4-byte magic number."
        )
    magic = int.from_bytes(content[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"'{path}' has magic number {magic}, expected {expected_magic} "
            f"({'images' if expected_magic == IDX_IMAGES_MAGIC else 'labels'}). "
            "Is it the right file, or corrupt?"
        )
    type_code, rank = content[2], content[3]
    if content[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or rank == 0:
        raise ValueError(f"'{path}' is not an idx file: invalid magic number {magic}.")
    header_size = 4 + 4 * rank
    if len(content) < header_size:
        raise ValueError(f"'{path}' is truncated: its header is incomplete.")
    shape = tuple(int(d) for d in np.frombuffer(content, ">u4", count=rank, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected_bytes = math.prod(shape) * dtype.itemsize
    if len(content) - header_size != expected_bytes:
        raise ValueError(
            f"'{path}' has {len(content) - header_size} bytes of data, but its "
            f"header announces shape {shape}, which needs {expected_bytes}. "
            "The file is truncated or corrupt."
        )
    array = np.frombuffer(content, dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


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
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixels of the digits data set are counts 0..16 of the 4×4 blocks set.
    images = (digits.images / 16.0).astype("float32")
    split_options.setdefault("name", "digits")
    return from_arrays(images, digits.target, default_size=0.15, **split_options)


def _load_idx_folder(folder, *, verify_checksums=True, **split_options):
    checksums = _read_checksums(folder) if verify_checksums else {}
    paths = {}
    for role, names in _IDX_FILES.items():
        candidates = [
            os.path.join(folder, base + suffix) for base in names for suffix in ("", ".gz")
        ]
        existing = [path for path in candidates if os.path.isfile(path)]
        # Prefer the file SHA256SUMS vouches for when both forms are present.
        existing.sort(key=lambda path: os.path.basename(path) not in checksums)
        paths[role] = existing[0] if existing else None
    for role in ("train_images", "train_labels"):
        if paths[role] is None:
            raise FileNotFoundError(
                f"Folder '{folder}' has no {role.replace('_', ' ')} file: expected "
                f"{_IDX_FILES[role][0]} or {_IDX_FILES[role][0]}.gz."
            )
    if (paths["test_images"] is None) != (paths["test_labels"] is None):
        missing = "test_images" if paths["test_images"] is None else "test_labels"
        raise FileNotFoundError(
            f"Folder '{folder}' has test {'labels' if missing == 'test_images' else 'images'}"
            f" but no {_IDX_FILES[missing][0]}[.gz]."
        )
    for path in paths.values():
        if path is not None and os.path.basename(path) in checksums:
            _verify_checksum(path, checksums[os.path.basename(path)])

    def read_pair(images_role, labels_role):
        images = read_idx(paths[images_role], IDX_IMAGES_MAGIC)
        labels = read_idx(paths[labels_role], IDX_LABELS_MAGIC)
        if len(images) != len(labels):
            raise ValueError(
                f"'{paths[images_role]}' holds {len(images)} images but "
                f"'{paths[labels_role]}' holds {len(labels)} labels."
            )
        return images, labels

    x_train, y_train = read_pair("train_images", "train_labels")
    x_test = y_test = None
    if paths["test_images"] is not None:
        x_test, y_test = read_pair("test_images", "test_labels")
    split_options.setdefault("name", os.path.basename(os.path.normpath(os.path.abspath(folder))))
    return from_arrays(x_train, y_train, x_test=x_test, y_test=y_test, **split_options)


def _read_checksums(folder):
    """`{file name: sha256 hex}` from `folder/SHA256SUMS`, or `{}` if absent."""
    path = os.path.join(folder, "SHA256SUMS")
    if not os.path.isfile(path):
        return {}
    checksums = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(maxsplit=1)
            digest = parts[0].lower()
            if (
                len(parts) != 2
                or len(digest) != 64
                or any(ch not in "0123456789abcdef" for ch in digest)
            ):
                raise ValueError(
                    f"'{path}' line {number} is not '<sha256>  <file name>'. Received: {line!r}"
                )
            # `sha256sum` marks binary mode with a leading '*'.
            checksums[parts[1].strip().lstrip("*")] = digest
    return checksums


def _verify_checksum(path, expected):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"Checksum mismatch for '{path}': SHA256SUMS lists {expected}, the file "
            f"has {digest.hexdigest()}. The file is corrupt or was changed; "
            "download it again."
        )


def _load_npz(path, **split_options):
    try:
        archive = np.load(path, allow_pickle=False)
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
    return from_arrays(
        *arrays["train"],
        *arrays.get("validation", (None, None)),
        *arrays.get("test", (None, None)),
        **split_options,
    )


def _load_keras(dataset_name, **split_options):
    module = getattr(keras.datasets, dataset_name)
    (x_train, y_train), (x_test, y_test) = module.load_data()
    if split_options.get("num_classes") is None:
        split_options["num_classes"] = _KERAS_DATASETS[dataset_name]
    split_options.setdefault("name", dataset_name)
    return from_arrays(x_train, y_train, x_test=x_test, y_test=y_test, **split_options)


def _as_inputs(x, split, name):
    """Float32 inputs with a channel axis; raises on ragged, empty-shaped or NaN."""
    try:
        x = np.asarray(x)
    except ValueError as error:
        raise ValueError(
            f"Images of inconsistent shape in the {split} split of data set {name!r}: {error}"
        ) from error
    if x.dtype == object:
        raise ValueError(
            f"Images of inconsistent shape in the {split} split of data set "
            f"{name!r}: the inputs do not form one numeric array."
        )
    if x.ndim < 2:
        raise ValueError(
            f"Inputs of the {split} split of data set {name!r} must have shape "
            f"[examples, ...] with at least one feature. Received shape {x.shape}."
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(
            f"Inputs of the {split} split of data set {name!r} must be numeric. "
            f"Received dtype {x.dtype}."
        )
    if x.dtype == np.uint8:
        x = x.astype("float32") / 255.0
    else:
        x = x.astype("float32")
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite.reshape(len(x), -1).all(axis=1)).ravel()
        raise ValueError(
            f"The {split} split of data set {name!r} has NaN or infinite inputs "
            f"in {len(bad)} example(s), the first at index {int(bad[0])}."
        )
    if x.ndim == 3:
        # Grayscale images `[n, h, w]`: convolutions need a channel axis.
        x = x[..., np.newaxis]
    return x


def _as_labels(y, split, name):
    """Int32 class indices `[n]`; raises on one-hot, fractional or negative labels."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"Labels of the {split} split of data set {name!r} must be class "
            f"indices of shape [examples] (not one-hot). Received shape {y.shape}."
        )
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(
            f"Labels of the {split} split of data set {name!r} must be integers. "
            f"Received dtype {y.dtype}."
        )
    if np.issubdtype(y.dtype, np.floating):
        fractional = ~np.isfinite(y) | (y != np.round(y))
        if fractional.any():
            raise ValueError(
                f"Labels of the {split} split of data set {name!r} must be "
                f"integers. Received label {y[fractional][0].item()!r}."
            )
    if len(y) and y.min() < 0:
        raise ValueError(
            f"Label {y.min()} in the {split} split of data set {name!r} is "
            "negative; labels must be in [0, num_classes)."
        )
    if len(y) and y.max() > np.iinfo(np.int32).max:
        raise ValueError(f"Label {y.max()} in data set {name!r} does not fit int32.")
    return y.astype("int32")


def _size_argument(split):
    return "validation_size" if split == "validation" else f"{split}_size"


def _check_split_options(
    validation_size=None, test_size=None, train_size=None, seed=0, num_classes=None
):
    """Checks the options' types and ranges, before any data is read."""
    for argument, value in (
        ("validation_size", validation_size),
        ("test_size", test_size),
        ("train_size", train_size),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer)):
            raise ValueError(
                f"`{argument}` must be a count (int >= 0) or a fraction (float in "
                f"[0, 1)). Received: {argument}={value!r}"
            )
        if isinstance(value, float) and not 0.0 <= value < 1.0:
            raise ValueError(
                f"`{argument}` as a fraction must be in [0, 1). Received: {argument}={value!r}"
            )
        if value < 0:
            raise ValueError(f"`{argument}` must be >= 0. Received: {argument}={value!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"`seed` must be an integer. Received: seed={seed!r}")
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(
            f"`num_classes` must be an integer >= 1. Received: num_classes={num_classes!r}"
        )


def _resolve_size(size, total, argument):
    """A count from an int count or a float fraction of `total`."""
    if isinstance(size, float):
        return int(round(size * total))
    if size > total:
        raise ValueError(
            f"`{argument}` asks for {size} examples, but only {total} are "
            f"available. Received: {argument}={size!r}"
        )
    return int(size)


def _stratified_split(labels, count, rng):
    """Indices `(chosen, rest)`, both sorted, with `count` chosen per class share.

    Each class gets `count · n_class / n` examples, rounded so that the total
    is exactly `count` (largest remainders first), chosen at random by `rng`.
    """
    total = len(labels)
    if count == 0:
        return np.zeros(0, dtype=np.int64), np.arange(total)
    if count >= total:
        return np.arange(total), np.zeros(0, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = count * counts / total
    takes = np.floor(quotas).astype(np.int64)
    shortfall = count - int(takes.sum())
    order = np.argsort(-(quotas - takes), kind="stable")
    takes[order[:shortfall]] += 1
    chosen = []
    for label, take in zip(classes, takes):
        members = np.flatnonzero(labels == label)
        chosen.append(rng.permutation(members)[:take])
    chosen = np.sort(np.concatenate(chosen))
    mask = np.ones(total, dtype=bool)
    mask[chosen] = False
    return chosen, np.flatnonzero(mask)
