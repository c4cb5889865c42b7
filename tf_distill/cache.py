"""Teacher-output caching: run the teacher once, distill for many epochs.

A frozen teacher in inference mode gives the same outputs for the same
example every epoch, so computing them once and reading them back saves one
teacher forward pass per step. `cache_teacher_outputs` returns a `tf.data`
pipeline yielding

    ({"inputs": x, "teacher_outputs": {"logits": ..., "<layer>": ...}}, y)

which `Distiller.fit` consumes without running the teacher (see
`tf_distill.distiller.INPUTS`). Every batch gathers inputs, labels and teacher
outputs with the same example indices, so they stay aligned however the
examples are shuffled.

A cache lives in memory or on disk. On disk it is a folder of `.npy` files,
each written atomically and read memory-mapped (never pickled), plus a
`manifest.json` mapping each output's key to its file (file names carry a
hash of the key, so no two keys share one) and holding a fingerprint of the
teacher (architecture and weights), the data and the tapped layers. A cache
whose fingerprint does not match the teacher and data at hand is stale: it
is rebuilt, never used. Disk caches are streamed batch by batch, so a data
set whose teacher outputs do not fit in memory can still be cached.

A pipeline with random augmentation cannot be cached faithfully: the teacher
must see the same view of an example as the student (Beyer et al. 2022,
"Knowledge distillation: A good teacher is patient and consistent"). Such
pipelines are refused; distill them online.
"""

import datetime
import hashlib
import json
import os
import re
import shutil
import time
import uuid

import numpy as np

from tf_distill import data as data_lib
from tf_distill import taps
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.distiller import INPUTS
from tf_distill.distiller import TEACHER_OUTPUTS
from tf_distill.distiller import Distiller
from tf_distill.distiller import _applies_softmax
from tf_distill.distiller import _as_logits
from tf_distill.distiller import _get_loss
from tf_distill.distiller import teacher_output_key
from tf_distill.files import atomic_write_json

MANIFEST = "manifest.json"
FORMAT = "tf_distill.teacher_cache"
FORMAT_VERSION = 1

# In-memory caches up to this size are gathered by TensorFlow ops from
# tensors; larger ones, and every memory-mapped one, by NumPy per batch
# (TensorFlow constants are limited to 2 GiB).
_TENSOR_GATHER_LIMIT = 1 << 30
_HASH_CHUNK = 64 << 20
_COPY_CHUNK = 16 << 20

# Ops that draw random numbers. In a data pipeline's functions they mean each
# pass may give a different view of an example (augmentation, noise).
_RANDOM_OP = re.compile(
    r"Random(?!.*Dataset)|Multinomial|Categorical|TruncatedNormal|^Rng|"
    r"SampleDistortedBoundingBox|NonDeterministicInts|StatelessShuffle"
)
# Ops whose work is opaque to graph inspection (Python generators, py_func).
_OPAQUE_OP = re.compile(r"PyFunc|GeneratorDataset")
_SHUFFLE_OP = re.compile(r"Shuffle.*Dataset")

_TEACHER_OUTPUT_KINDS = ("logits", "probabilities")
_ON_STALE = ("rebuild", "raise")


class StaleCacheError(ValueError):
    """A disk cache made from other teacher weights, data or layers."""


def _online_advice():
    return (
        "Distill online instead: pass the pipeline itself to "
        "`distiller.fit`, so the teacher sees each augmented view."
    )


# ----------------------------------------------------------------------
# Sources: arrays, DataSplits, tf.data pipelines.


class _Arrays:
    """A source as flat NumPy leaves: inputs (a nest), labels, weights."""

    def __init__(self, x, y, sample_weight=None):
        self.x = x
        self.x_leaves = [_as_array(leaf, "inputs") for leaf in tf.nest.flatten(x)]
        self.y = None if y is None else _as_array(y, "labels")
        self.sample_weight = (
            None if sample_weight is None else _as_array(sample_weight, "sample_weight")
        )
        lengths = {len(leaf) for leaf in self.leaves()}
        if len(lengths) != 1:
            raise ValueError(
                "Inputs, labels and sample weights must hold the same number of "
                f"examples. Received lengths {sorted(lengths)}."
            )
        self.num_examples = lengths.pop()
        self.order_invariant = False
        if self.num_examples == 0:
            raise ValueError("Cannot cache teacher outputs for an empty data set.")

    def _digest_any_order(self):
        leaves = self.leaves()
        rows = max(1, _HASH_CHUNK // max(1, sum(leaf[:1].nbytes for leaf in leaves)))
        digests = []
        for start in range(0, self.num_examples, rows):
            chunks = [np.ascontiguousarray(leaf[start : start + rows]) for leaf in leaves]
            for index in range(len(chunks[0])):
                example = hashlib.sha256()
                for chunk in chunks:
                    example.update(chunk[index].data)
                digests.append(example.digest())
        digests.sort()
        digest = hashlib.sha256(b"any-order")
        for leaf in leaves:
            digest.update(f"{leaf.dtype.str}{tuple(leaf.shape)}".encode())
        digest.update(b"".join(digests))
        return digest.hexdigest()

    def leaves(self):
        extra = [a for a in (self.y, self.sample_weight) if a is not None]
        return self.x_leaves + extra

    def pack_inputs(self, leaves):
        return tf.nest.pack_sequence_as(self.x, leaves)

    def digest(self):
        """Hex digest of every byte of the examples, in order.

        A pipeline's examples are stored with their outputs, so their order
        does not matter: they are hashed one by one and the hashes sorted.
        Arrays given by the user are not stored, so the outputs must line up
        with them index by index: their order counts.
        """
        if self.order_invariant:
            return self._digest_any_order()
        digest = hashlib.sha256()
        for role, arrays in (
            ("inputs", self.x_leaves),
            ("labels", [self.y]),
            ("sample_weight", [self.sample_weight]),
        ):
            for array in arrays:
                digest.update(role.encode())
                _hash_array(digest, array)
        return digest.hexdigest()


def _as_array(value, role):
    if isinstance(value, np.ndarray):
        return value
    if tf.is_tensor(value):
        return value.numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"The {role} must be array-like. Received: {type(value).__name__}"
        ) from error
    if array.dtype == object:
        raise ValueError(
            f"The {role} must be a numeric array, not Python objects (caches never pickle)."
        )
    return array


def _hash_array(digest, array):
    if array is None:
        digest.update(b"none")
        return
    digest.update(f"{array.dtype.str}{tuple(array.shape)}".encode())
    rows = max(1, _HASH_CHUNK // max(1, array[:1].nbytes))
    for start in range(0, len(array), rows):
        digest.update(np.ascontiguousarray(array[start : start + rows]).data)


def _resolve_source(data, split, staging, log, model=None, inference_batch_size=256):
    """Returns `_Arrays` for any accepted `data`."""
    if isinstance(data, data_lib.DataSplits):
        x, y = data.arrays(split)
        return _Arrays(x, y)
    if isinstance(data, tf.data.Dataset):
        check_cacheable(data)
        if not _is_batched(data, model):
            data = data.batch(inference_batch_size)
        return _materialize(data, staging, log)
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        return _Arrays(*data)
    raise ValueError(
        "Invalid value for argument `data`. Expected `(x, y)`, `(x, y, "
        "sample_weight)`, a `tf_distill.data.DataSplits` or a finite "
        f"`tf.data.Dataset`. Received: data of type {type(data).__name__}"
    )


def _pipeline_ops(dataset):
    """The op types of `dataset`'s graph and functions, or None if opaque."""
    from tensorflow.core.framework import graph_pb2

    try:
        serialized = dataset._as_serialized_graph(  # noqa: SLF001 - no public API
            external_state_policy=tf.data.experimental.ExternalStatePolicy.IGNORE
        )
    except (tf.errors.OpError, TypeError, ValueError, AttributeError):
        return None
    graph = graph_pb2.GraphDef()
    graph.ParseFromString(serialized.numpy())
    found = {node.op for node in graph.node}
    for function in graph.library.function:
        found.update(node.op for node in function.node_def)
    return found


def check_cacheable(dataset):
    """Raises if `dataset` may give a different view of an example each pass.

    The pipeline's graph is searched for random ops (random flips, crops,
    noise, Keras random-augmentation layers, `tf.random.Generator` draws). A
    pipeline built on a Python generator or `py_function` cannot be inspected:
    its first element is drawn twice and compared instead (unless the
    pipeline shuffles).

    Args:
        dataset: A `tf.data.Dataset`.

    Raises:
        ValueError: if the pipeline draws random numbers or gives different
            elements on two passes; the message says to distill online.
    """
    ops = _pipeline_ops(dataset)
    if ops is not None:
        random_ops = sorted(op for op in ops if _RANDOM_OP.search(op))
        if random_ops:
            raise ValueError(
                "Cannot cache teacher outputs for a pipeline with random "
                f"augmentation (it runs the random ops {random_ops}): each "
                "epoch the student sees a new view of an example, and the "
                "teacher must see that same view (Beyer et al. 2022). " + _online_advice()
            )
    if ops is None or (
        any(_OPAQUE_OP.search(op) for op in ops) and not any(_SHUFFLE_OP.search(op) for op in ops)
    ):
        first = [next(iter(dataset.take(1))) for _ in range(2)]
        flat = [tf.nest.flatten(element) for element in first]
        for a, b in zip(*flat):
            if a.shape != b.shape or not np.array_equal(np.asarray(a), np.asarray(b)):
                raise ValueError(
                    "Cannot cache teacher outputs for this pipeline: two passes "
                    "over it give different first elements, so it augments or "
                    "samples at random and the teacher must see each view. " + _online_advice()
                )


def _is_batched(dataset, model):
    """Whether a pipeline yields batches (True) or single examples."""
    spec = dataset.element_spec
    if not isinstance(spec, (tuple, list)) or not spec:
        return True
    x_spec = tf.nest.flatten(spec[0])[0]
    rank = x_spec.shape.rank
    if model is not None and taps.is_symbolic(model) and rank is not None:
        return rank == len(model.inputs[0].shape)
    # Without a graph to compare with: `batch()` leaves the batch axis unknown.
    return rank is not None and rank > 0 and x_spec.shape[0] is None


def _split_element(element):
    if isinstance(element, (tuple, list)) and len(element) in (2, 3):
        return tuple(element) + (None,) * (3 - len(element))
    raise ValueError(
        "A pipeline to cache must yield `(x, y)` or `(x, y, sample_weight)`. "
        f"Received an element of type {type(element).__name__}"
    )


def _materialize(dataset, staging, log):
    """Reads a pipeline once into arrays, in memory or in `staging` on disk."""
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "Cannot cache an infinite pipeline (it repeats forever). Cache the "
            "pipeline before `.repeat()`."
        )
    structure = None
    sinks = None
    start = time.perf_counter()
    for element in dataset:
        x, y, sample_weight = _split_element(element)
        if structure is None:
            structure = (x, sample_weight is not None)
            names = [f"inputs_{i}" for i in range(len(tf.nest.flatten(x)))] + ["labels"]
            if sample_weight is not None:
                names.append("sample_weights")
            sinks = [_Sink(name, staging) for name in names]
        leaves = tf.nest.flatten(x) + [y] + ([sample_weight] if sample_weight is not None else [])
        for sink, leaf in zip(sinks, leaves):
            sink.append(np.asarray(leaf))
    if structure is None:
        raise ValueError("Cannot cache teacher outputs for an empty pipeline.")
    arrays = [sink.finish() for sink in sinks]
    x_structure, has_weights = structure
    count = len(tf.nest.flatten(x_structure))
    x = tf.nest.pack_sequence_as(x_structure, arrays[:count])
    source = _Arrays(x, arrays[count], arrays[count + 1] if has_weights else None)
    source.staged_files = {sink.name: sink.path for sink in sinks if sink.path}
    source.order_invariant = True
    log(
        f"Read {source.num_examples} examples from the pipeline in "
        f"{time.perf_counter() - start:.1f} s."
    )
    return source


class _Sink:
    """Collects chunks along the first axis, in memory or in a `.npy` file."""

    def __init__(self, name, folder):
        self.name = name
        self.folder = folder
        self.path = None
        self.chunks = []
        self.handle = None
        self.count = 0
        self.dtype = self.row_shape = None

    def append(self, chunk):
        if chunk.ndim == 0:
            raise ValueError(
                f"Pipeline element {self.name!r} is a scalar; a pipeline to cache "
                "yields examples, or batches of them, with a leading axis."
            )
        if self.dtype is None:
            self.dtype, self.row_shape = chunk.dtype, chunk.shape[1:]
            if self.folder is not None:
                os.makedirs(self.folder, exist_ok=True)
                self.raw = os.path.join(self.folder, f"{self.name}.raw")
                self.handle = open(self.raw, "wb")  # noqa: SIM115 - closed in finish
        if chunk.shape[1:] != self.row_shape or chunk.dtype != self.dtype:
            raise ValueError(
                f"Pipeline element {self.name!r} changes shape or dtype: "
                f"{self.dtype}{self.row_shape} then {chunk.dtype}{chunk.shape[1:]}."
            )
        self.count += len(chunk)
        if self.handle is None:
            self.chunks.append(chunk)
        else:
            self.handle.write(np.ascontiguousarray(chunk).data)

    def finish(self):
        if self.handle is None:
            return np.concatenate(self.chunks)
        self.handle.close()
        self.path = os.path.join(self.folder, f"{self.name}.npy")
        # The row count is known only now: write the header, then the rows.
        with open(self.path, "wb") as out, open(self.raw, "rb") as raw:
            np.lib.format.write_array_header_1_0(
                out,
                {
                    "descr": np.lib.format.dtype_to_descr(self.dtype),
                    "fortran_order": False,
                    "shape": (self.count,) + tuple(self.row_shape),
                },
            )
            shutil.copyfileobj(raw, out, _COPY_CHUNK)
        os.unlink(self.raw)
        return np.load(self.path, mmap_mode="r", allow_pickle=False)


# ----------------------------------------------------------------------
# The teacher's side: which outputs, computed how, fingerprinted how.


class _TeacherSpec:
    """What to compute: the teacher, its tapped layers and output kind."""

    def __init__(self, teacher, distillation_losses, teacher_outputs):
        if isinstance(teacher, Distiller):
            if distillation_losses is not None:
                raise ValueError(
                    "Pass `distillation_losses` with a teacher model, not with a "
                    "Distiller (whose losses name the layers to tap)."
                )
            self.model = teacher.teacher
            self.tap_names = tap_names(
                teacher.distillation_losses,
                list(teacher.teachers) if teacher.has_several_teachers else None,
            )
            self.teacher_outputs = teacher.teacher_outputs
            self.forward = tf.function(teacher.teacher_forward, reduce_retracing=True)
            return
        if not isinstance(teacher, keras.Model):
            raise ValueError(
                "`teacher` must be a keras.Model or a tf_distill.Distiller. "
                f"Received: teacher of type {type(teacher).__name__}"
            )
        if teacher_outputs not in _TEACHER_OUTPUT_KINDS:
            raise ValueError(
                "Invalid value for argument `teacher_outputs`. Expected one of "
                f"{list(_TEACHER_OUTPUT_KINDS)}. Received: "
                f"teacher_outputs={teacher_outputs!r}"
            )
        if teacher_outputs == "logits" and _applies_softmax(teacher):
            raise ValueError(
                f"The teacher {teacher.name!r} ends with a softmax: its outputs "
                "are probabilities. Remove the softmax, or pass "
                "`teacher_outputs='probabilities'`."
            )
        self.model = teacher
        self.tap_names = tap_names(distillation_losses)
        self.teacher_outputs = teacher_outputs
        tapped = taps.tap_model(teacher, self.tap_names, role="teacher")

        # The same computation as `Distiller.teacher_forward` with one teacher.
        def forward(x):
            if tapped is not None:
                outputs = dict(tapped(x, training=False))
            else:
                outputs = {taps.LOGITS: teacher(x, training=False)}
            outputs[taps.LOGITS] = _as_logits(outputs[taps.LOGITS], teacher_outputs)
            return outputs

        self.forward = tf.function(forward, reduce_retracing=True)

    def digest(self):
        digest = hashlib.sha256()
        digest.update(type(self.model).__name__.encode())
        try:
            config = json.dumps(self.model.get_config(), sort_keys=True, default=repr)
        except (NotImplementedError, TypeError, ValueError):
            config = ""
        digest.update(config.encode())
        for weight in self.model.weights:
            _hash_array(digest, np.asarray(weight.numpy()))
        digest.update(json.dumps([self.tap_names, self.teacher_outputs]).encode())
        return digest.hexdigest()


def tap_names(distillation_losses, teacher_names=None):
    """The teacher outputs, besides the logits, that distillation losses read.

    These are the keys a teacher cache holds next to `"logits"`, named as
    `Distiller.teacher_forward` names them: with one teacher, the tapped
    layers' names; with several, `"<teacher>/<layer>"` (see
    `tf_distill.distiller.teacher_output_key`), the teacher being the one a
    loss names (its `teacher` attribute, or the `"teacher"` key of a loss's
    config dict: a name or an index).

    Args:
        distillation_losses: Losses, registry names or configs (as for the
            `Distiller`), one or a list; `None` for logits only.
        teacher_names: `None` for one teacher (a loss may name it; the
            `Distiller` checks the name), or the names of several teachers,
            in order.

    Returns:
        A list of keys (without `"logits"`, always cached), in the order the
        losses first read them.

    Raises:
        ValueError: with several teachers, for a loss that reads a layer but
            names no teacher, or names one not in `teacher_names`.

    Example:

    >>> tap_names([{"name": "kd"},
    ...            {"name": "feature", "teacher": "t2", "loss": "mse",
    ...             "teacher_layer_name": "block_2",
    ...             "student_layer_name": "block_1"}], ["t1", "t2"])
    ['t2/block_2']
    """
    if distillation_losses is None:
        return []
    if not isinstance(distillation_losses, (list, tuple)):
        distillation_losses = [distillation_losses]
    names = []
    for index, identifier in enumerate(distillation_losses):
        loss = _get_loss(identifier)
        layer_name = loss.teacher_layer_name
        if layer_name is None:
            continue
        if teacher_names is None:
            names.append(layer_name)
            continue
        teachers = list(teacher_names)
        requested = getattr(loss, "teacher", None)
        where = f"distillation loss {index} ({type(loss).__name__})"
        if requested is None:
            raise ValueError(
                f"The {where} reads the teacher layer {layer_name!r} but does "
                f"not say of which teacher. Set its `teacher` to one of {teachers}."
            )
        found = None
        if isinstance(requested, str) and requested in teachers:
            found = requested
        elif (
            isinstance(requested, int)
            and not isinstance(requested, bool)
            and 0 <= requested < len(teachers)
        ):
            found = teachers[requested]
        if found is None:
            raise ValueError(
                f"Invalid `teacher` for the {where}. Expected a teacher's name "
                f"(one of {teachers}) or index (0 to {len(teachers) - 1}). "
                f"Received: teacher={requested!r}"
            )
        names.append(teacher_output_key(found, layer_name))
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------
# The cache.


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

    def dataset(self, batch_size=32, shuffle=True, seed=None, repeat=False, drop_remainder=False):
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
        if shuffle:
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
            values = gather(index)
            x = {
                INPUTS: source.pack_inputs(values[:count]),
                TEACHER_OUTPUTS: dict(zip(names, values[count : count + len(names)])),
            }
            rest = values[count + len(names) :]
            if not has_labels:
                return (x,)
            if has_weights:
                return x, rest[0], rest[1]
            return x, rest[0]

        dataset = batches.map(arrange, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.prefetch(tf.data.AUTOTUNE)


def cache_fingerprint(
    teacher, data, split="train", distillation_losses=None, teacher_outputs="logits"
):
    """The fingerprint a cache of `teacher` on `data` would carry.

    It hashes the teacher's class, config and weights, the tapped layers,
    the output kind and every byte of the data (inputs, labels, weights), so
    any change to them gives a new fingerprint.

    Returns:
        A hex string.
    """
    spec = _TeacherSpec(teacher, distillation_losses, teacher_outputs)
    source = _resolve_source(data, split, None, lambda *a, **k: None, spec.model)
    return _combine(spec.digest(), source.digest())


def _combine(teacher_digest, data_digest):
    return hashlib.sha256(f"{FORMAT_VERSION}:{teacher_digest}:{data_digest}".encode()).hexdigest()


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
    log=None,
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
        log: A `print`-like callable for progress messages, or None.

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
    if on_stale not in _ON_STALE:
        raise ValueError(
            f"Invalid value for argument `on_stale`. Expected one of {list(_ON_STALE)}. "
            f"Received: on_stale={on_stale!r}"
        )
    if (
        isinstance(inference_batch_size, bool)
        or not isinstance(inference_batch_size, int)
        or inference_batch_size <= 0
    ):
        raise ValueError(
            "`inference_batch_size` must be an integer > 0. Received: "
            f"inference_batch_size={inference_batch_size!r}"
        )
    spec = _TeacherSpec(teacher, distillation_losses, teacher_outputs)
    staging = None
    if directory is not None:
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        staging = os.path.join(directory, f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        source = _resolve_source(data, split, staging, log, spec.model, inference_batch_size)
        teacher_digest, data_digest = spec.digest(), source.digest()
        fingerprint = _combine(teacher_digest, data_digest)
        if directory is None:
            start = time.perf_counter()
            outputs = _compute(spec, source, None, fingerprint, inference_batch_size)
            cache = TeacherCache(source, outputs, fingerprint)
            log(
                f"Cached the teacher's outputs {sorted(outputs)} for {cache.num_examples} "
                f"examples in memory ({cache.nbytes / 1e6:.1f} MB, "
                f"{time.perf_counter() - start:.1f} s)."
            )
            return cache
        manifest = _read_manifest(directory)
        if manifest is not None and manifest.get("fingerprint") == fingerprint:
            reused = _open_disk_cache(directory, manifest, source)
            if reused is not None:
                log(f"Reusing the teacher cache in {directory} (fingerprint {fingerprint[:12]}).")
                return reused
            log(f"The teacher cache in {directory} is incomplete: rebuilding it.")
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
        outputs = _compute(spec, source, directory, fingerprint, inference_batch_size)
        cache = _commit(
            directory, source, outputs, fingerprint, teacher_digest, data_digest, spec, manifest
        )
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
    batch_size=32,
    shuffle=None,
    seed=None,
    repeat=False,
    drop_remainder=False,
    split="train",
    distillation_losses=None,
    teacher_outputs="logits",
    directory=None,
    on_stale="rebuild",
    inference_batch_size=256,
    log=None,
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
        batch_size: Examples per batch.
        shuffle: Shuffle each epoch. Defaults to True, except for the
            `"validation"` and `"test"` splits of a `DataSplits`.
        seed: Shuffling seed.
        repeat: Repeat forever.
        drop_remainder: Drop a last, smaller batch.
        split, distillation_losses, teacher_outputs, directory, on_stale,
            inference_batch_size, log: As in `build_teacher_cache`.

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
        log=log,
    )
    if shuffle is None:
        shuffle = not (isinstance(data, data_lib.DataSplits) and split != "train")
    return cache.dataset(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        repeat=repeat,
        drop_remainder=drop_remainder,
    )


def _compute(spec, source, directory, fingerprint, inference_batch_size):
    """Runs the teacher over the source in chunks; returns `{name: array}`."""
    outputs = {}
    try:
        return _compute_into(outputs, spec, source, directory, fingerprint, inference_batch_size)
    except BaseException:
        for array in outputs.values():
            path = getattr(array, "filename", None)
            if path and os.path.exists(path):
                os.unlink(path)
        raise


def _compute_into(outputs, spec, source, directory, fingerprint, inference_batch_size):
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
                        f".{_file_stem('output', name, fingerprint)}.{uuid.uuid4().hex[:8]}.npy",
                    )
                    outputs[name] = np.lib.format.open_memmap(
                        path, mode="w+", dtype=value.dtype, shape=shape
                    )
        for name, value in batch.items():
            outputs[name][start:stop] = value
    return outputs


def _file_stem(kind, name, fingerprint):
    """The stem of the file holding one array of a cache.

    Output keys can be any string (`"t2/block_1"`), so the readable part
    alone could collide (`"a/b_c"` and `"a_b/c"` both read `a_b_c`, and
    `"Dense"` and `"dense"` are one file on a case-insensitive disk): a hash
    of the exact kind and name makes each stem unique. The manifest maps
    each name to its file.

    Args:
        kind: `"output"` (a teacher output) or `"example"` (a stored input,
            label or weight array), so an output and an example array of
            one name never share a file.
        name: The output's key or the example array's role.
        fingerprint: The cache's fingerprint.
    """
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:48]
    key = hashlib.sha256(f"{kind}\0{name}".encode()).hexdigest()[:12]
    return f"{kind}-{readable}-{key}-{fingerprint[:16]}"


def _commit(
    directory, source, outputs, fingerprint, teacher_digest, data_digest, spec, old_manifest
):
    """Moves the new files into place; the manifest is written last.

    File names carry the fingerprint, so a manifest never points at files of
    another cache, whatever the moment a crash or a concurrent writer hits.
    """
    entries = {}
    for name, array in outputs.items():
        temporary = array.filename
        array.flush()
        del array
        final = f"{_file_stem('output', name, fingerprint)}.npy"
        os.replace(temporary, os.path.join(directory, final))
        entries[name] = final
    stored = {}
    for role, path in getattr(source, "staged_files", {}).items():
        final = f"{_file_stem('example', role, fingerprint)}.npy"
        os.replace(path, os.path.join(directory, final))
        stored[role] = final
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "teacher_fingerprint": teacher_digest,
        "data_fingerprint": data_digest,
        "num_examples": source.num_examples,
        "outputs": entries,
        "stored_examples": stored,
        "tap_names": spec.tap_names,
        "teacher_outputs": spec.teacher_outputs,
        "teacher": spec.model.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(os.path.join(directory, MANIFEST), manifest)
    _remove_files(directory, old_manifest, set(entries.values()) | set(stored.values()))
    cache = _open_disk_cache(directory, manifest, source)
    if cache is None:
        raise RuntimeError(f"The teacher cache just written in {directory} cannot be read back.")
    cache.reused = False
    return cache


def _remove_files(directory, manifest, keep):
    """Deletes the files an old manifest lists, except those in `keep`."""
    if not manifest:
        return
    listed = list((manifest.get("outputs") or {}).values())
    listed += list((manifest.get("stored_examples") or {}).values())
    for file_name in listed:
        if not isinstance(file_name, str) or file_name in keep or os.sep in file_name:
            continue
        try:
            os.unlink(os.path.join(directory, file_name))
        except OSError:
            pass


def _read_manifest(directory):
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return {}
    return manifest


def _open_disk_cache(directory, manifest, source):
    """The cache a manifest describes, memory-mapped; None if files are bad."""
    try:
        outputs = {}
        for name, file_name in manifest["outputs"].items():
            outputs[name] = np.load(
                os.path.join(directory, file_name), mmap_mode="r", allow_pickle=False
            )
        stored = {
            role: np.load(os.path.join(directory, file_name), mmap_mode="r", allow_pickle=False)
            for role, file_name in manifest.get("stored_examples", {}).items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if any(
        len(array) != source.num_examples
        for array in list(outputs.values()) + list(stored.values())
    ):
        return None
    if stored:
        # The pipeline's examples were staged anew only to be fingerprinted:
        # read the stored copy, whose bytes hash the same.
        leaves = [stored[f"inputs_{i}"] for i in range(len(source.x_leaves))]
        source = _Arrays(source.pack_inputs(leaves), stored["labels"], stored.get("sample_weights"))
    return TeacherCache(source, outputs, manifest["fingerprint"], directory=directory, reused=True)


# ----------------------------------------------------------------------
# For `tf-distill run` and `tf-distill tune`.

CACHE_MODES = ("auto", "memory", "disk", "off")
# `auto` keeps teacher outputs up to this size in memory, larger on disk.
AUTO_MEMORY_LIMIT = 512 << 20


def should_cache(config, data=None):
    """Whether a job should cache the teacher's outputs, and why.

    Caching is safe when the training examples are fixed arrays (every
    `tf_distill.data` source) and the pipeline adds no random augmentation
    (a `data.augmentation` key, if a config has one, turns caching off).

    Args:
        config: A validated job config. `training.cache` (or a top-level
            `cache`), one of `"auto"` (default), `"memory"`, `"disk"` or
            `"off"`, is read if present.
        data: The `DataSplits` (unused today; any source it loads is fixed).

    Returns:
        `(mode, reason)`: mode is `"memory"`, `"disk"` or `"off"`; reason is
        a sentence for the log.
    """
    mode = (config.get("training") or {}).get("cache", config.get("cache", "auto"))
    if mode is None or mode is False:
        mode = "off"
    if mode is True:
        mode = "auto"
    if mode not in CACHE_MODES:
        raise ValueError(
            f"Invalid value for `cache`. Expected one of {list(CACHE_MODES)}. Received: cache={mode!r}"
        )
    augmentation = (config.get("data") or {}).get("augmentation")
    if augmentation:
        if mode in ("memory", "disk"):
            raise ValueError(
                "`cache` cannot be used with `data.augmentation`: the teacher "
                "must see each augmented view. Set `cache: off` to distill online."
            )
        return (
            "off",
            "Distilling online: the pipeline augments at random, so teacher outputs cannot be cached.",
        )
    if mode == "off":
        return "off", "Distilling online (teacher-output caching is off)."
    if mode == "auto" and data is not None:
        mode = "disk" if _estimated_bytes(config, data) > AUTO_MEMORY_LIMIT else "memory"
    elif mode == "auto":
        mode = "memory"
    return mode, (
        f"Caching the teacher's outputs ({mode}): the teacher runs once over the "
        "data instead of at every training step."
    )


def _estimated_bytes(config, data):
    classes = getattr(data, "num_classes", 10)
    examples = sum(getattr(data, "sizes", {}).values()) if hasattr(data, "sizes") else 0
    # Tapped features are unknown before a model is built: count logits, and
    # a generous 64 floats per example per tapped layer.
    layers = len(tap_names((config.get("distillation") or {}).get("losses")))
    return examples * 4 * (classes + 64 * layers)


def cached_dataset(
    distiller,
    data,
    split,
    batch_size,
    *,
    mode="memory",
    directory=None,
    shuffle=None,
    seed=None,
    log=None,
):
    """A job's pipeline for one split: cached (memory or disk) or plain.

    Args:
        distiller: The `Distiller` that will train on it.
        data: A `DataSplits`.
        split: `"train"`, `"validation"` or `"test"`.
        batch_size: Examples per batch.
        mode: `"memory"`, `"disk"` (under `directory/<split>`) or `"off"`.
        directory: The folder of disk caches.
        shuffle: Defaults to True for `"train"` only.
        seed: Shuffling seed.
        log: A `print`-like callable.

    Returns:
        A `tf.data.Dataset` for `distiller.fit` / `evaluate`.
    """
    if shuffle is None:
        shuffle = split == "train"
    if mode == "off":
        return data.as_tf_dataset(split, batch_size, shuffle=shuffle, seed=seed)
    if mode == "disk" and directory is None:
        raise ValueError("A disk cache needs a `directory`. Received: directory=None")
    cache = build_teacher_cache(
        distiller,
        data,
        split=split,
        directory=None if mode == "memory" else os.path.join(directory, split),
        log=log,
    )
    return cache.dataset(batch_size=batch_size, shuffle=shuffle, seed=seed)
