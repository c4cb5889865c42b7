"""Where a teacher cache's examples come from: arrays, DataSplits, pipelines.

A source becomes `Arrays`: flat NumPy leaves of inputs, labels and sample
weights, hashed for the cache's fingerprint. A `tf.data` pipeline is read
once (to disk when the cache is on disk), after `check_cacheable` has made
sure it gives the same view of an example every pass.
"""

import hashlib
import re
import time

import numpy as np

from tf_distill import data as data_lib
from tf_distill import taps
from tf_distill.backend import tf
from tf_distill.cache.store import Sink

HASH_CHUNK = 64 << 20

# Ops that draw random numbers. In a data pipeline's functions they mean each
# pass may give a different view of an example (augmentation, noise).
_RANDOM_OP = re.compile(
    r"Random(?!.*Dataset)|Multinomial|Categorical|TruncatedNormal|^Rng|"
    r"SampleDistortedBoundingBox|NonDeterministicInts|StatelessShuffle"
)
# Python called from the pipeline (`py_function`, `numpy_function`): its
# work is hidden from graph inspection, and may draw random numbers.
_PYTHON_OP = re.compile(r"PyFunc")
# Ops whose work is opaque to graph inspection (Python generators, py_func).
_OPAQUE_OP = re.compile(r"PyFunc|GeneratorDataset")
_SHUFFLE_OP = re.compile(r"Shuffle.*Dataset")


def online_advice():
    return (
        "Distill online instead: pass the pipeline itself to "
        "`distiller.fit`, so the teacher sees each augmented view."
    )


class Arrays:
    """A source as flat NumPy leaves: inputs (a nest), labels, weights."""

    def __init__(self, x, y, sample_weight=None):
        self.x = x
        self.x_leaves = [as_array(leaf, "inputs") for leaf in tf.nest.flatten(x)]
        self.y = None if y is None else as_array(y, "labels")
        self.sample_weight = (
            None if sample_weight is None else as_array(sample_weight, "sample_weight")
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
        rows = max(1, HASH_CHUNK // max(1, sum(leaf[:1].nbytes for leaf in leaves)))
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
                hash_array(digest, array)
        return digest.hexdigest()


def as_array(value, role):
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


def hash_array(digest, array):
    if array is None:
        digest.update(b"none")
        return
    digest.update(f"{array.dtype.str}{tuple(array.shape)}".encode())
    rows = max(1, HASH_CHUNK // max(1, array[:1].nbytes))
    for start in range(0, len(array), rows):
        digest.update(np.ascontiguousarray(array[start : start + rows]).data)


def resolve_source(
    data, split, staging, log, model=None, inference_batch_size=256, deterministic=False
):
    """Returns `Arrays` for any accepted `data` (see `build_teacher_cache`)."""
    if isinstance(data, data_lib.DataSplits):
        x, y = data.arrays(split)
        return Arrays(x, y)
    if isinstance(data, tf.data.Dataset):
        check_cacheable(data, deterministic=deterministic)
        if not is_batched(data, model):
            data = data.batch(inference_batch_size)
        return materialize(data, staging, log)
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        return Arrays(*data)
    raise ValueError(
        "Invalid value for argument `data`. Expected `(x, y)`, `(x, y, "
        "sample_weight)`, a `tf_distill.data.DataSplits` or a finite "
        f"`tf.data.Dataset`. Received: data of type {type(data).__name__}"
    )


def pipeline_ops(dataset):
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


def check_cacheable(dataset, deterministic=False):
    """Raises if `dataset` may give a different view of an example each pass.

    The pipeline's graph is searched for random ops (random flips, crops,
    noise, Keras random-augmentation layers, `tf.random.Generator` draws).
    Python called from the pipeline (`tf.py_function`, `tf.numpy_function`)
    cannot be inspected, and may draw random numbers of its own: such a
    pipeline is refused unless `deterministic=True`. A pipeline built on a
    Python generator, or one declared deterministic, has its first element
    drawn twice and compared (unless the pipeline shuffles).

    Args:
        dataset: A `tf.data.Dataset`.
        deterministic: Declare that the pipeline's Python functions give the
            same example every pass. **Risk:** if one augments at random
            after all, a cache freezes one random view of each example, and
            the teacher never sees the views the student would have seen.

    Raises:
        ValueError: if the pipeline draws random numbers, calls Python and is
            not declared deterministic, or gives different elements on two
            passes; the message says to distill online.
    """
    ops = pipeline_ops(dataset)
    if ops is not None:
        random_ops = sorted(op for op in ops if _RANDOM_OP.search(op))
        if random_ops:
            raise ValueError(
                "Cannot cache teacher outputs for a pipeline with random "
                f"augmentation (it runs the random ops {random_ops}): each "
                "epoch the student sees a new view of an example, and the "
                "teacher must see that same view (Beyer et al. 2022). " + online_advice()
            )
        python_ops = sorted(op for op in ops if _PYTHON_OP.search(op))
        if python_ops and not deterministic:
            raise ValueError(
                "Cannot cache teacher outputs for a pipeline that calls Python "
                f"(it runs {python_ops}, from `tf.py_function` or "
                "`tf.numpy_function`): tf_distill cannot see whether it augments "
                "at random. If it gives the same example every pass, pass "
                "`deterministic=True`. " + online_advice()
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
                    "samples at random and the teacher must see each view. " + online_advice()
                )


def is_batched(dataset, model):
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


def dataset_batching(dataset, model=None):
    """`(batch_size, drop_remainder)` of a batched pipeline, or None.

    A pipeline batched with `drop_remainder=True` has a static batch axis;
    otherwise its batch size is read from its first batch (the only one
    that can be smaller is the last).

    Args:
        dataset: A `tf.data.Dataset`.
        model: The model it feeds (see `is_batched`), or None.

    Returns:
        `(batch_size, drop_remainder)`, or None for a pipeline of single
        examples (or an empty one).
    """
    if not is_batched(dataset, model):
        return None
    spec = dataset.element_spec
    x_spec = tf.nest.flatten(spec[0] if isinstance(spec, (tuple, list)) else spec)[0]
    if x_spec.shape.rank and x_spec.shape[0] is not None:
        return int(x_spec.shape[0]), True
    for element in dataset.take(1):
        first = tf.nest.flatten(element[0] if isinstance(element, (tuple, list)) else element)
        return int(tf.shape(first[0])[0]), False
    return None


def split_element(element):
    if isinstance(element, (tuple, list)) and len(element) in (2, 3):
        return tuple(element) + (None,) * (3 - len(element))
    raise ValueError(
        "A pipeline to cache must yield `(x, y)` or `(x, y, sample_weight)`. "
        f"Received an element of type {type(element).__name__}"
    )


def materialize(dataset, staging, log):
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
        x, y, sample_weight = split_element(element)
        if structure is None:
            structure = (x, sample_weight is not None)
            names = [f"inputs_{i}" for i in range(len(tf.nest.flatten(x)))] + ["labels"]
            if sample_weight is not None:
                names.append("sample_weights")
            sinks = [Sink(name, staging) for name in names]
        leaves = tf.nest.flatten(x) + [y] + ([sample_weight] if sample_weight is not None else [])
        for sink, leaf in zip(sinks, leaves):
            sink.append(np.asarray(leaf))
    if structure is None:
        raise ValueError("Cannot cache teacher outputs for an empty pipeline.")
    arrays = [sink.finish() for sink in sinks]
    x_structure, has_weights = structure
    count = len(tf.nest.flatten(x_structure))
    x = tf.nest.pack_sequence_as(x_structure, arrays[:count])
    source = Arrays(x, arrays[count], arrays[count + 1] if has_weights else None)
    source.staged_files = {sink.name: sink.path for sink in sinks if sink.path}
    source.order_invariant = True
    log(
        f"Read {source.num_examples} examples from the pipeline in "
        f"{time.perf_counter() - start:.1f} s."
    )
    return source
