"""Training on several devices or machines: `TF_CONFIG`, roles, strategies.

`make_strategy("mirrored")` spreads training over the GPUs of one machine;
`make_strategy("multi_worker")` over processes or machines, each started with
its own `TF_CONFIG` (docs/DISTRIBUTED.md). Keras 3's `fit` fails across
workers (keras-team/keras#20585); `keras_multi_worker_fixes()` works around
it for the duration of a `with` block, on the Keras versions where the
workaround is known to hold (`MULTI_WORKER_KERAS_VERSIONS`).
"""

import contextlib
import hashlib
import importlib
import json
import os

from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras_version

# The strategies `make_strategy` makes: "mirrored" (the GPUs of one machine),
# "multi_worker" (processes or machines started with TF_CONFIG), or none.
STRATEGIES = ("none", "mirrored", "multi_worker")


class ClusterError(ValueError):
    """A multi-worker set-up that cannot run: `TF_CONFIG`, shared folders."""


# The Keras 3 releases (major, minor) on which `keras_multi_worker_fixes` was
# tested by tests/test_distribute.py. It replaces two private functions of
# Keras's TensorFlow trainer, so any other release is refused rather than left
# to fail in some unknown way.
MULTI_WORKER_KERAS_VERSIONS = ((3, 15),)


def check_multi_worker_keras(version=None):
    """Raises `ClusterError` unless multi-worker training is known to work.

    Args:
        version: A `(major, minor, patch)` tuple; defaults to the running Keras.
    """
    if LEGACY_KERAS:
        return
    version = tuple(version or keras_version())
    if version[:2] not in MULTI_WORKER_KERAS_VERSIONS:
        known = ", ".join(f"{major}.{minor}" for major, minor in MULTI_WORKER_KERAS_VERSIONS)
        raise ClusterError(
            "`training.distribute: multi_worker` relies on a workaround for "
            "keras-team/keras#20585 that is tested with Keras "
            f"{known} only. Received: Keras {'.'.join(map(str, version))}. Install a "
            "tested release (`pip install 'keras==3.15.*'`), or train on one worker."
        )


_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["machine-a:12345", "machine-b:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\' (index 1 on machine-b)'
)


def parse_tf_config(text):
    """Checks the `TF_CONFIG` a multi-worker job reads its cluster from.

    `TF_CONFIG` is JSON: the cluster (every worker's `host:port`, the same
    in every process) and this process's task (its type and index in the
    cluster). `MultiWorkerMirroredStrategy` supports the task types `chief`
    and `worker`.

    Args:
        text: The value of the environment variable, or `None` if unset.

    Returns:
        The parsed mapping, with keys `cluster` and `task`.

    Raises:
        ClusterError: If `text` is missing, not JSON, or not a cluster and a
            task of it, with an example of a valid value.

    Example:

    >>> parse_tf_config('{"cluster": {"worker": ["a:1", "b:1"]}, '
    ...                 '"task": {"type": "worker", "index": 1}}')["task"]
    {'type': 'worker', 'index': 1}
    """
    where = (
        "`training.distribute: multi_worker` reads the cluster from the "
        "environment variable TF_CONFIG"
    )
    if not text:
        raise ClusterError(
            f"{where}, which is not set. Set it in every worker process, e.g. "
            f"{_TF_CONFIG_EXAMPLE}. See docs/DISTRIBUTED.md."
        )

    def invalid(problem):
        return ClusterError(
            f"{where}: {problem}. Expected e.g. {_TF_CONFIG_EXAMPLE}. Received: TF_CONFIG={text!r}"
        )

    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise invalid(f"it is not valid JSON ({error})") from None
    if not isinstance(tf_config, dict):
        raise invalid("it must be a JSON object with keys 'cluster' and 'task'")
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise invalid("'cluster' must map task types to lists of 'host:port' addresses")
    for task_type, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(
            isinstance(address, str) and ":" in address for address in addresses
        ):
            raise invalid(
                f"cluster[{task_type!r}] must be a non-empty list of 'host:port' strings"
            )
    unsupported = sorted(set(cluster) - {"chief", "worker"})
    if unsupported:
        raise invalid(
            f"MultiWorkerMirroredStrategy runs only 'chief' and 'worker' tasks, "
            f"not {unsupported}"
        )
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise invalid(
            f"'task' must be {{'type': ..., 'index': ...}} with a type in {sorted(cluster)}"
        )
    index = task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(
        cluster[task["type"]]
    ):
        raise invalid(
            f"task index {index!r} is not in [0, {len(cluster[task['type']])}), "
            f"the number of {task['type']!r} addresses"
        )
    return tf_config


def is_chief(tf_config):
    """Whether the task of a parsed `TF_CONFIG` is the chief.

    The chief is the task of type `chief`, or worker 0 when the cluster has
    no chief, as in Keras's multi-worker saving guide.
    """
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task.get("index", 0) == 0


def make_strategy(name):
    """The `tf.distribute` strategy a config's `training.distribute` names.

    Args:
        name: One of `STRATEGIES`.
    """
    from tf_distill.backend import tf

    if name == "mirrored":
        # Every local GPU (or the CPU): the loss is averaged over the global batch.
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        check_multi_worker_keras()
        parse_tf_config(os.environ.get("TF_CONFIG"))
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            if "program startup" not in str(error):
                raise
            # Collective ops are configured when TensorFlow's runtime starts.
            raise RuntimeError(
                "`training.distribute: multi_worker` must create its strategy before "
                "TensorFlow runs anything in the process, but TensorFlow had already "
                "started. Run the job in a fresh process (`tf-distill run`), or call "
                "`tf_distill.commands.run.run` before any other TensorFlow code."
            ) from None
    return tf.distribute.get_strategy()


def is_multi_worker(strategy):
    from tf_distill.backend import tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


@contextlib.contextmanager
def keras_multi_worker_fixes():
    """Lets Keras 3's `fit` run on several workers, for the job's duration.

    Keras 3's TensorFlow trainer fails with more than one worker
    (keras-team/keras#20585, tensorflow/tensorflow#72388), in two places:

    - `_maybe_symbolic_build` averages the first batch over the replicas
      with `strategy.reduce`, which across workers takes one tensor, not an
      `(x, y)` structure ("Attempt to convert a value (PerReplica...)").
      Building only needs the batch's shapes: this worker's part serves.
    - `reduce_per_replica` averages the step's logs with
      `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars
      ("Invalid reduction dimension 0 for input with 0 dimensions"). The
      mean over replicas is `axis=None`; every worker then sees the same
      logs, so they stop together on a non-finite loss.

    Both are replaced while the job runs and restored afterwards; with
    tf_keras, or a Keras without these functions, nothing is changed.
    """
    if LEGACY_KERAS:
        yield
        return
    from tf_distill.backend import tf

    trainer = importlib.import_module("keras.src.backend.tensorflow.trainer")
    trainer_class = getattr(trainer, "TensorFlowTrainer", None)
    build = getattr(trainer_class, "_maybe_symbolic_build", None)
    reduce_per_replica = getattr(trainer, "reduce_per_replica", None)
    if build is None or reduce_per_replica is None:
        yield
        return

    def symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and strategy is not None:

            def local_part(value):
                if isinstance(value, tf.distribute.DistributedValues):
                    return strategy.experimental_local_results(value)[0]
                return value

            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local_part, next(batches))
                break
        return build(self, data_batch=data_batch)

    def mean_over_workers(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not is_multi_worker(strategy):
            return reduce_per_replica(values, strategy, reduction)

        def mean(value):
            # With one device per worker, a replica's value is a plain tensor.
            if isinstance(value, (tf.Tensor, tf.distribute.DistributedValues)):
                return strategy.reduce("MEAN", value, axis=None)
            return value

        return tf.nest.map_structure(mean, values)

    trainer_class._maybe_symbolic_build = symbolic_build
    trainer.reduce_per_replica = mean_over_workers
    try:
        yield
    finally:
        trainer_class._maybe_symbolic_build = build
        trainer.reduce_per_replica = reduce_per_replica


def other_worker(strategy):
    """`(task_type, task_index)` of a worker that is not the chief, else `None`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    tf_config = {
        "cluster": resolver.cluster_spec().as_dict(),
        "task": {"type": resolver.task_type, "index": resolver.task_id},
    }
    return None if is_chief(tf_config) else (resolver.task_type, resolver.task_id)


def check_workers_agree(strategy, resume_point, output):
    """Fails on every worker if the workers would resume at different points.

    Workers that run different phases wait for each other's collective
    operations forever. They disagree when a worker cannot see the chief's
    output folder, i.e. when it is not on a file system they all share.
    """
    from tf_distill.backend import tf

    if strategy.num_replicas_in_sync == 1 or not is_multi_worker(strategy):
        return
    digest = int(hashlib.sha256(resume_point.encode()).hexdigest()[:7], 16)
    local = tf.constant([digest], tf.int32)
    digests = strategy.gather(strategy.run(lambda: local), axis=0)
    check_same_resume_point(digests.numpy().tolist(), output)


def check_same_resume_point(digests, output):
    """Raises if the workers' resume points (one digest each) differ."""
    if len(set(digests)) > 1:
        raise ClusterError(
            f"The workers see different states of the output folder {output!r} "
            "(finished phases, backups), so they would resume at different points. "
            "Put `output` on a file system every worker shares, or delete the "
            "folder on every machine to start over."
        )


def shard_by_data(dataset):
    """`dataset` with `DATA` sharding: each worker keeps its part of every batch.

    Across workers, each one builds the same seeded pipeline; in-memory arrays
    have no files to shard by, and the default policy (`AUTO`) would only fall
    back to `DATA` with a warning.
    """
    from tf_distill.backend import tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
