"""`from_arrays`: checks, converts and splits in-memory arrays; every loader ends here.

Splits carved here are stratified and seeded, so the same data and options
give the same examples in each split on every machine.
"""

import numpy as np

from tf_distill.data.splits import DataSplits

# Options every source accepts; each loader adds its own keyword arguments.
SPLIT_OPTIONS = ("validation_size", "test_size", "train_size", "seed", "num_classes")


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
    fingerprint: str | None = None,
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
        fingerprint: The data's identity, as the loaders give it (see
            `DataSplits.fingerprint`); `None` hashes the resulting splits.

    Returns:
        A `DataSplits`.

    Raises:
        ValueError: For empty data, mismatched lengths, NaN or infinite
            inputs, images of inconsistent shape, labels that are not
            integers in `[0, num_classes)`, or sizes that leave no training
            data.
    """
    check_split_options(
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
        fingerprint=fingerprint,
    )


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


def check_split_options(
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


def stratified_indices(labels, size, seed=0):
    """Indices `(chosen, rest)` of a stratified, seeded subset of `labels`.

    Args:
        labels: Integer class labels.
        size: A count, or a fraction in (0, 1) of `len(labels)`.
        seed: The random seed.

    Returns:
        Two sorted index arrays: the chosen examples (each class in its
        share) and the others.
    """
    labels = np.asarray(labels)
    count = _resolve_size(size, len(labels), "size")
    return _stratified_split(labels, count, np.random.default_rng(seed))


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
