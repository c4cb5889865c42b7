"""`DataSplits`: a data set's train, validation and test arrays, and its identity."""

import dataclasses
import hashlib

import numpy as np

from tf_distill.backend import tf
from tf_distill.batches import EXAMPLE_INDICES
from tf_distill.batches import INPUTS
from tf_distill.batches import with_example_indices

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "test": "test",
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
        fingerprint: A stable string that changes when the data does, for
            deciding whether a run's results still hold: the SHA-256 of the
            bytes of a `.npz` file or of an idx folder's files (as read),
            `"tfds:NAME:VERSION:train=...,test=..."` for TFDS,
            `"keras:NAME"` for keras.datasets, `"digits:scikit-learn-VERSION"`
            for the embedded digits, and a hash of the arrays
            (`fingerprint_arrays`) when none is given. It names the source,
            not the options that split it.

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
    fingerprint: str | None = None

    def __post_init__(self):
        if self.fingerprint is None:
            self.fingerprint = fingerprint_arrays(
                self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test
            )

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Returns `(x, y)` of `split` (`"train"`, `"validation"` or `"test"`)."""
        key = SPLIT_ALIASES.get(split) if isinstance(split, str) else None
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
        example_indices: bool = False,
        order=None,
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
            example_indices: Also carry each example's position in the split
                (`tf_distill.with_example_indices`, applied before
                shuffling), for losses with a memory bank
                (`losses.CRDistillation(num_examples=len(x))`).
            order: A `tf_distill.callbacks.EpochOrder` (also passed to
                `fit`): each epoch's order is a function of its seed and
                the epoch, so a `fit` resumed by `BackupAndRestore` sees the
                orders of one never interrupted. Replaces `seed`.

        Returns:
            A `tf.data.Dataset` yielding `(float32 [batch, *input_shape],
            int32 [batch])`; with `example_indices`, `({"inputs": x,
            "example_indices": int64 [batch]}, y)`.

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
            shuffle = SPLIT_ALIASES[split] == "train"
        if shuffle and order is not None:
            features, labels = tf.constant(x), tf.constant(y)

            def gather(index):
                batch = (tf.gather(features, index), tf.gather(labels, index))
                return (({INPUTS: batch[0], EXAMPLE_INDICES: index}, batch[1])
                        if example_indices else batch)

            dataset = order.indices(len(x))
            if repeat:
                dataset = dataset.repeat()
            dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
            dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            return dataset.prefetch(tf.data.AUTOTUNE)
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        if example_indices:
            dataset = with_example_indices(dataset)
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


def fingerprint_arrays(*arrays) -> str:
    """A stable content hash of NumPy arrays: `"arrays:sha256:<hex>"`.

    The dtype and shape of each array are hashed with its bytes, so equal
    bytes in another shape give another fingerprint.
    """
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.data)
    return f"arrays:sha256:{digest.hexdigest()}"
