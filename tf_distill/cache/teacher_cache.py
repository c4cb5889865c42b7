"""`TeacherCache` and the functions that build it: the teacher runs once.

`build_teacher_cache` resolves the data, fingerprints teacher and data,
reuses a current disk cache or computes the outputs, and commits them;
`cache_teacher_outputs` returns the resulting `tf.data` pipeline.
"""

import os
import shutil
import time
import uuid

import numpy as np

from tf_distill import data as data_lib
from tf_distill import losses as losses_lib
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.batches import EXAMPLE_INDICES
from tf_distill.batches import INPUTS
from tf_distill.batches import TEACHER_OUTPUTS
from tf_distill.cache import store
from tf_distill.cache.fingerprint import TeacherSpec
from tf_distill.cache.fingerprint import combine
from tf_distill.cache.sources import Arrays
from tf_distill.cache.sources import dataset_batching
from tf_distill.cache.sources import resolve_source
from tf_distill.cache.store import StaleCacheError
from tf_distill.distillers.distiller import Distiller
from tf_distill.losses.base import call_arguments
from tf_distill.validation import check_choice
from tf_distill.validation import check_positive_integer

# In-memory caches up to this size are gathered by TensorFlow ops from
# tensors; larger ones, and every memory-mapped one, by NumPy per batch
# (TensorFlow constants are limited to 2 GiB).
_TENSOR_GATHER_LIMIT = 1 << 30
_ON_STALE = ("rebuild", "raise")


class TeacherCache:
    """Teacher outputs for a data set, aligned with its examples.

    Made by `build_teacher_cache`; `dataset()` turns it into the pipeline a
    `Distiller` trains on without a teacher forward pass.

    Attributes:
        fingerprint: Hex digest of the teacher, tapped layers and data.
        num_examples: Number of examples.
        outputs: `{"logits": array, "<layer>": array}`, `[num_examples, ...]`
            each; NumPy memory maps for a disk cache.
        inputs, labels, sample_weights: The examples (a nest of arrays,
            an array, an array or None).
        directory: The cache's folder, or None in memory.
        reused: Whether an existing disk cache was used as is.
    """

    def __init__(self, source, outputs, fingerprint, directory=None, reused=False):
        self._source = source
        self.outputs = outputs
        self.fingerprint = fingerprint
        self.directory = directory
        self.reused = reused
        self.num_examples = source.num_examples

    @property
    def inputs(self):
        return self._source.pack_inputs(self._source.x_leaves)

    @property
    def labels(self):
        return self._source.y

    @property
    def sample_weights(self):
        return self._source.sample_weight

    @property
    def nbytes(self):
        """Bytes of the teacher outputs."""
        return int(sum(array.nbytes for array in self.outputs.values()))

    @property
    def on_disk(self):
        return self.directory is not None

    def __len__(self):
        return self.num_examples

    def __repr__(self):
        where = f"directory={self.directory!r}" if self.on_disk else "in memory"
        return (
            f"TeacherCache({self.num_examples} examples, outputs={sorted(self.outputs)}, "
            f"{self.nbytes / 1e6:.1f} MB, {where})"
        )

    def dataset(
        self,
        batch_size=32,
        shuffle=True,
        seed=None,
        repeat=False,
        drop_remainder=False,
        example_indices=False,
        order=None,
    ):
        """The cached examples as a `tf.data` pipeline for `Distiller.fit`.

        Each batch gathers inputs, labels, teacher outputs (and sample
        weights) with one set of indices, so outputs stay aligned with their
        examples under shuffling. Memory-mapped arrays are read batch by
        batch, never whole.

        Args:
            batch_size: Examples per batch, > 0.
            shuffle: Shuffle the examples, in a new order each epoch.
            seed: Shuffling seed, for the same sequence of orders every run.
            repeat: Repeat forever (then pass `steps_per_epoch` to `fit`).
            drop_remainder: Drop the last batch if smaller than `batch_size`.
            example_indices: Also carry each example's position in the data
                under `"example_indices"`, for losses with a memory bank
                (`losses.CRDistillation(num_examples=cache.num_examples)`).
            order: A `tf_distill.callbacks.EpochOrder` (also passed to
                `fit`): each epoch's order is a function of its seed and the
                epoch, so a `fit` resumed by `BackupAndRestore` sees the
                orders of one never interrupted. Replaces `seed`.

        Returns:
            A `tf.data.Dataset` of `({"inputs": x, "teacher_outputs": {...}},
            y)` (and sample weights, if any).
        """
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size <= 0
        ):
            raise ValueError(
                f"`batch_size` must be an integer > 0. Received: batch_size={batch_size!r}"
            )
        source = self._source
        names = list(self.outputs)
        leaves = source.x_leaves + [self.outputs[name] for name in names]
        has_labels = source.y is not None
        has_weights = source.sample_weight is not None
        leaves += [a for a in (source.y, source.sample_weight) if a is not None]

        indices = tf.data.Dataset.range(self.num_examples)
        if shuffle and order is not None:
            indices = order.indices(self.num_examples)
        elif shuffle:
            indices = indices.shuffle(self.num_examples, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            indices = indices.repeat()
        batches = indices.batch(int(batch_size), drop_remainder=drop_remainder)

        in_memory = all(type(a) is np.ndarray for a in leaves)
        if in_memory and sum(a.nbytes for a in leaves) <= _TENSOR_GATHER_LIMIT:
            tensors = [tf.constant(a) for a in leaves]

            def gather(index):
                # Sorted as the memory-mapped path sorts: the same seed gives
                # the same batches from memory and from disk.
                index = tf.sort(index)
                return [tf.gather(t, index) for t in tensors]
        else:
            dtypes = [tf.as_dtype(a.dtype) for a in leaves]

            def take(index):
                # Sorted indices read a memory map in file order; the batch
                # holds the same examples, so alignment is unaffected.
                index = np.sort(index)
                return [np.ascontiguousarray(a[index]) for a in leaves]

            def gather(index):
                values = tf.numpy_function(take, [index], dtypes, stateful=False)
                for value, array in zip(values, leaves):
                    value.set_shape((None,) + tuple(array.shape[1:]))
                return values

        count = len(source.x_leaves)

        def arrange(index):
            # Sorted here, as `gather` reads, so the indices carried match.
            index = tf.sort(index)
            values = gather(index)
            x = {
                INPUTS: source.pack_inputs(values[:count]),
                TEACHER_OUTPUTS: dict(zip(names, values[count : count + len(names)])),
            }
            if example_indices:
                x[EXAMPLE_INDICES] = index
            rest = values[count + len(names) :]
            if not has_labels:
                return (x,)
            if has_weights:
                return x, rest[0], rest[1]
            return x, rest[0]

        dataset = batches.map(arrange, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.prefetch(tf.data.AUTOTUNE)


def build_teacher_cache(
    teacher,
    data,
    *,
    split="train",
    distillation_losses=None,
    teacher_outputs="logits",
    directory=None,
    on_stale="rebuild",
    inference_batch_size=256,
    deterministic=False,
    log=None,
    verbose=0,
):
    """Computes (or reuses) the teacher's outputs for every example of `data`.

    Args:
        teacher: The teacher `keras.Model`, or a `Distiller` (its teacher,
            tapped layers and `teacher_outputs` are used, so the cache's keys
            are exactly those its training step reads).
        data: `(x, y)` or `(x, y, sample_weight)` arrays (NumPy memory maps
            are read in chunks), a `DataSplits` (see `split`), or a finite
            `tf.data.Dataset` of such tuples, batched or not, without random
            augmentation (it is read once).
        split: The split of a `DataSplits` to cache.
        distillation_losses: With a teacher model: the losses (or names,
            configs) the cache will serve; the teacher layers they read are
            cached next to the logits.
        teacher_outputs: With a teacher model: `"logits"` or
            `"probabilities"` (as in `Distiller`).
        directory: A folder for a disk cache, or None to keep it in memory.
            A disk cache whose fingerprint matches is reused.
        on_stale: What to do when `directory` holds a cache of other teacher
            weights, data or layers: `"rebuild"` it (the default) or
            `"raise"` a `StaleCacheError`.
        inference_batch_size: Examples per teacher call while caching.
        deterministic: Declare that a pipeline calling Python
            (`tf.py_function`, `tf.numpy_function`) gives the same example
            every pass. tf_distill cannot look inside such functions, so it
            refuses them by default (see `check_cacheable`). **Risk:** if
            the function augments at random after all, the cache freezes one
            random view of each example and the teacher never sees the views
            the student would have trained on online.
        log: A `print`-like callable for progress messages, or None.
        verbose: As Keras's `verbose`: 0 (the default) is silent, 1 shows a
            `keras.utils.Progbar` of the examples run through the teacher,
            2 one line when they are done.

    Returns:
        A `TeacherCache`.

    Raises:
        ValueError: for an unsupported `data`, a pipeline with random
            augmentation, a softmax teacher given as logits, or unknown
            layer names.
        StaleCacheError: if `on_stale="raise"` and the disk cache is stale.

    Example:

    >>> cache = build_teacher_cache(distiller, (x_train, y_train))
    >>> distiller.fit(cache.dataset(batch_size=64, seed=0), epochs=10)
    """
    log = log or (lambda *args, **kwargs: None)
    check_choice("on_stale", on_stale, _ON_STALE)
    check_positive_integer("inference_batch_size", inference_batch_size)
    spec = TeacherSpec(teacher, distillation_losses, teacher_outputs)
    staging = None
    if directory is not None:
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        staging = os.path.join(directory, f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        source = resolve_source(
            data, split, staging, log, spec.model, inference_batch_size, deterministic
        )
        teacher_digest, data_digest = spec.digest(), source.digest()
        fingerprint = combine(teacher_digest, data_digest)
        if directory is None:
            start = time.perf_counter()
            outputs = _compute(spec, source, None, fingerprint, inference_batch_size, verbose)
            cache = TeacherCache(source, outputs, fingerprint)
            log(
                f"Cached the teacher's outputs {sorted(outputs)} for {cache.num_examples} "
                f"examples in memory ({cache.nbytes / 1e6:.1f} MB, "
                f"{time.perf_counter() - start:.1f} s)."
            )
            return cache
        manifest = store.read_manifest(directory)
        if manifest is not None and manifest.get("fingerprint") == fingerprint:
            reused = open_disk_cache(directory, manifest, source)
            if reused is not None:
                log(f"Reusing the teacher cache in {directory} (fingerprint {fingerprint[:12]}).")
                return reused
            log(
                f"The teacher cache in {directory} is incomplete or damaged (a file missing, "
                "cut short or changed): rebuilding it."
            )
        elif manifest is not None:
            changed = [
                what
                for what, key, value in (
                    (
                        "a different teacher (architecture, weights or tapped layers)",
                        "teacher_fingerprint",
                        teacher_digest,
                    ),
                    ("different data", "data_fingerprint", data_digest),
                )
                if manifest.get(key) != value
            ] or ["an older cache format"]
            message = f"The teacher cache in {directory} is stale: it was made with {' and '.join(changed)}"
            if on_stale == "raise":
                raise StaleCacheError(
                    f"{message}. Rebuild it (`on_stale='rebuild'`) or remove the folder."
                )
            log(f"{message}: rebuilding it.")
        start = time.perf_counter()
        outputs = _compute(spec, source, directory, fingerprint, inference_batch_size, verbose)
        written = store.commit(
            directory, source, outputs, fingerprint, teacher_digest, data_digest, spec, manifest
        )
        cache = open_disk_cache(directory, written, source)
        if cache is None:
            raise RuntimeError(
                f"The teacher cache just written in {directory} cannot be read back."
            )
        cache.reused = False
        log(
            f"Cached the teacher's outputs {sorted(outputs)} for {cache.num_examples} "
            f"examples in {directory} ({cache.nbytes / 1e6:.1f} MB, "
            f"{time.perf_counter() - start:.1f} s)."
        )
        return cache
    finally:
        if staging is not None and os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


def cache_teacher_outputs(
    teacher,
    data,
    *,
    batch_size=None,
    shuffle=None,
    seed=None,
    repeat=False,
    drop_remainder=None,
    split="train",
    distillation_losses=None,
    teacher_outputs="logits",
    directory=None,
    on_stale="rebuild",
    inference_batch_size=256,
    deterministic=False,
    log=None,
    example_indices=None,
    verbose=0,
):
    """Runs the teacher once; returns data a `Distiller` trains on without it.

    `distiller.fit(cache_teacher_outputs(distiller, (x, y)), epochs=...)`
    trains as `distiller.fit(x, y, ...)` would, with no teacher forward pass
    per step: the result is a `tf.data` pipeline of `({"inputs": x,
    "teacher_outputs": {...}}, y)` batches (see `TeacherCache.dataset`). The
    pipeline can be reused for any number of `fit` calls (e.g. every trial of
    a hyperparameter search).

    Args:
        teacher: The teacher `keras.Model`, or the `Distiller` that will
            train on the cache (recommended: its tapped layers are cached).
        data: `(x, y)`, `(x, y, sample_weight)`, a `DataSplits` or a finite
            `tf.data.Dataset` without random augmentation.
        batch_size: Examples per batch. Defaults to the batch size of a
            batched `tf.data.Dataset` (as Keras's `fit` never re-batches
            one), else 32. A `batch_size` that differs from the pipeline's
            is used, and `log` says so.
        shuffle: Shuffle each epoch. Defaults to True, except for the
            `"validation"` and `"test"` splits of a `DataSplits`.
        seed: Shuffling seed.
        repeat: Repeat forever.
        drop_remainder: Drop a last, smaller batch. Defaults to that of a
            batched `tf.data.Dataset` when `batch_size` is not given, else
            False.
        split, distillation_losses, teacher_outputs, directory, on_stale,
            inference_batch_size, deterministic, log, verbose: As in
            `build_teacher_cache` (`deterministic=True` carries a risk: read
            it there).
        example_indices: Whether batches carry example indices (see
            `TeacherCache.dataset`); by default, if a loss asks for them.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        ValueError: for a pipeline with random augmentation (distill it
            online), or as `build_teacher_cache`.

    Example:

    ```python
    distiller = tf_distill.Distiller(teacher, student, "kd")
    distiller.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    train = tf_distill.cache_teacher_outputs(distiller, (x_train, y_train),
                                             batch_size=64, seed=0)
    distiller.fit(train, epochs=10)
    ```
    """
    cache = build_teacher_cache(
        teacher,
        data,
        split=split,
        distillation_losses=distillation_losses,
        teacher_outputs=teacher_outputs,
        directory=directory,
        on_stale=on_stale,
        inference_batch_size=inference_batch_size,
        deterministic=deterministic,
        log=log,
        verbose=verbose,
    )
    if shuffle is None:
        shuffle = not (isinstance(data, data_lib.DataSplits) and split != "train")
    batching = None
    if isinstance(data, tf.data.Dataset):
        model = teacher.teacher if isinstance(teacher, Distiller) else teacher
        batching = dataset_batching(data, model)
    if batch_size is None:
        batch_size, kept_drop_remainder = batching or (32, False)
        drop_remainder = kept_drop_remainder if drop_remainder is None else drop_remainder
    elif batching is not None and batch_size != batching[0]:
        (log or (lambda *args, **kwargs: None))(
            f"Re-batching the cached pipeline into batches of {batch_size} "
            f"(`batch_size={batch_size}`); the pipeline given had batches of {batching[0]}."
        )
    if example_indices is None:
        example_indices = _asks_for_example_indices(teacher, distillation_losses)
    return cache.dataset(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        repeat=repeat,
        drop_remainder=bool(drop_remainder),
        example_indices=bool(example_indices),
    )


def _asks_for_example_indices(teacher, distillation_losses):
    if isinstance(teacher, Distiller):
        resolved = teacher.distillation_losses
    else:
        given = distillation_losses if isinstance(distillation_losses, (list, tuple)) else [
            distillation_losses
        ]
        resolved = [losses_lib.get(loss) for loss in given if loss is not None]
    return any(EXAMPLE_INDICES in call_arguments(loss) for loss in resolved)


def _compute(spec, source, directory, fingerprint, inference_batch_size, verbose):
    """Runs the teacher over the source in chunks; returns `{name: array}`."""
    outputs = {}
    progress = keras.utils.Progbar(source.num_examples, verbose=verbose, unit_name="example")
    try:
        return _compute_into(
            outputs, spec, source, directory, fingerprint, inference_batch_size, progress
        )
    except BaseException:
        for array in outputs.values():
            path = getattr(array, "filename", None)
            if path and os.path.exists(path):
                os.unlink(path)
        raise


def _compute_into(outputs, spec, source, directory, fingerprint, inference_batch_size,
                  progress):
    started = False
    total = source.num_examples
    for start in range(0, total, inference_batch_size):
        stop = min(total, start + inference_batch_size)
        x = source.pack_inputs([np.asarray(leaf[start:stop]) for leaf in source.x_leaves])
        batch = {name: np.asarray(value) for name, value in spec.forward(x).items()}
        if not started:
            started = True
            for name, value in batch.items():
                shape = (total,) + value.shape[1:]
                if directory is None:
                    outputs[name] = np.empty(shape, value.dtype)
                else:
                    path = os.path.join(
                        directory,
                        f".{store.file_stem('output', name, fingerprint)}.{uuid.uuid4().hex[:8]}.npy",
                    )
                    outputs[name] = np.lib.format.open_memmap(
                        path, mode="w+", dtype=value.dtype, shape=shape
                    )
        for name, value in batch.items():
            outputs[name][start:stop] = value
        progress.update(stop)
    return outputs


def open_disk_cache(directory, manifest, source):
    """The cache a manifest describes, memory-mapped; None if files are bad."""
    arrays = store.open_arrays(directory, manifest, source.num_examples)
    if arrays is None:
        return None
    outputs, stored = arrays
    if stored:
        # The pipeline's examples were staged anew only to be fingerprinted:
        # read the stored copy, whose bytes hash the same.
        leaves = [stored[f"inputs_{i}"] for i in range(len(source.x_leaves))]
        source = Arrays(source.pack_inputs(leaves), stored["labels"], stored.get("sample_weights"))
    return TeacherCache(source, outputs, manifest["fingerprint"], directory=directory, reused=True)
