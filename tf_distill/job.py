"""A whole distillation job from a validated config: the `tf-distill run` command.

Data → teacher (loaded, or trained from a named architecture) → the student
trained alone (the baseline) and distilled from the same initial weights →
test metrics, saved student, `metrics.json` and `report.md` with plots.

`training.distribute` spreads every phase over devices: `mirrored` (the GPUs
of one machine) or `multi_worker` (several processes or machines, each
started with its own `TF_CONFIG`). With several workers, every worker runs
the same job, but only the chief writes the output folder; the others write
to a scratch folder that is removed at the end. See docs/DISTRIBUTED.md.
"""

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import tempfile
import time

import numpy as np
import yaml

from tf_distill import architectures
from tf_distill import data as data_lib
from tf_distill import saving
from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.callbacks import KeepLastGoodModel
from tf_distill.callbacks import StopOnNonFiniteLoss
from tf_distill.callbacks import TrainingDivergedError
from tf_distill.config import ConfigError
from tf_distill.distiller import Distiller
from tf_distill.files import atomic_write_json
from tf_distill.losses import crossentropy_from_logits
from tf_distill.report import write_report

_OPTIMIZERS = {
    "adam": lambda lr: keras.optimizers.Adam(lr),
    "adamw": lambda lr: keras.optimizers.AdamW(lr),
    "sgd": lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
    "rmsprop": lambda lr: keras.optimizers.RMSprop(lr),
}


def _optimizer(name, learning_rate):
    return _OPTIMIZERS[name](learning_rate)


def load_data(data_config):
    """Loads the data set a config's `data:` section names."""
    options = {
        key: data_config[key]
        for key in ("validation_size", "train_size", "test_size", "data_dir", "seed")
        if data_config.get(key) is not None
    }
    return data_lib.load(data_config["source"], **options)


def _dataset(data, split, batch_size, shuffle=None, seed=None):
    """`data`'s `split` as a dataset whose batches are global batches.

    Under a `tf.distribute` strategy Keras splits each batch over the
    replicas, so `batch_size` is the global batch. Across workers, each one
    builds the same seeded pipeline and keeps its part of every batch
    (`DATA` sharding): in-memory arrays have no files to shard by, and the
    default policy (`AUTO`) would only fall back to `DATA` with a warning.
    """
    return _shard(data.as_tf_dataset(split, batch_size, shuffle=shuffle, seed=seed))


def _shard(dataset):
    """Sets `DATA` sharding on `dataset` (see `_dataset`)."""
    from tf_distill.backend import tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _check_output_classes(model, role, num_classes):
    shape = tuple(model.outputs[0].shape) if getattr(model, "outputs", None) else None
    if shape is not None and shape[-1] != num_classes:
        raise ConfigError(
            f"The {role} outputs {shape[-1]} classes but the data has "
            f"{num_classes}. Received: {role} output shape {shape}."
        )


def _check_input_shape(model, role, input_shape):
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        return
    shape = tuple(inputs[0].shape)[1:]
    if len(shape) != len(input_shape) or any(
        size is not None and size != expected for size, expected in zip(shape, input_shape)
    ):
        raise ConfigError(
            f"The {role} takes inputs of shape {shape} but the data's inputs have shape "
            f"{tuple(input_shape)}. Received: {role} input shape {tuple(inputs[0].shape)}."
        )


def _evaluate(model, dataset, x_test, y_test, batch_size):
    logits = model.predict(x_test, batch_size=batch_size, verbose=0)
    loss = float(np.mean(crossentropy_from_logits(y_test, logits).numpy()))
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == y_test))
    return {"test_accuracy": accuracy, "test_error": 1.0 - accuracy, "test_loss": loss}


def _without_training_state(model):
    """A copy of `model` without its optimizer, as it would be deployed."""
    # From its config, not `clone_model`, which also copies the compile state.
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def _history(history):
    return {k: [float(v) for v in values] for k, values in history.history.items()}


STATE_FILE = "run_state.json"
# The file each finished phase leaves in the output folder.
_PHASE_FILES = {"teacher": "teacher.keras", "baseline": "student_alone.keras"}


def config_hash(config):
    """A fingerprint of everything in `config` that changes the results."""
    relevant = {k: v for k, v in config.items() if k not in ("output",)}
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Job:
    """Runs one config. `Job(config).run()` returns the metrics dict.

    Files are read from the output folder (`_shared`: a run to resume, a
    teacher trained before an interruption) and written to this process's
    folder (`_path`): the output folder on the chief, a scratch folder on the
    other workers of a `multi_worker` run.
    """

    def __init__(self, config, verbose=1, log=print):
        self.config = config
        self.verbose = verbose
        self.log = log if verbose else (lambda *args, **kwargs: None)
        self.output = config["output"]
        # Where this process writes: a scratch folder on the workers of a
        # multi-worker run other than the chief.
        self.folder = self.output
        self.is_chief = True
        self.hash = config_hash(config)
        self.state = {"config_hash": self.hash, "phases": {}}

    def _path(self, *names):
        return os.path.join(self.folder, *names)

    def _shared(self, *names):
        return os.path.join(self.output, *names)

    def _load_state(self):
        """Reads the state of an interrupted run; refuses another config's."""
        path = self._shared(STATE_FILE)
        if not os.path.exists(path):
            # Written first, so that even a backup of an interrupted first
            # phase is tied to this config.
            atomic_write_json(self._path(STATE_FILE), self.state)
            return
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        if state.get("config_hash") != self.hash:
            raise ConfigError(
                f"The output folder {self.output!r} holds a run of a different "
                f"config (fingerprint {state.get('config_hash')} there, "
                f"{self.hash} now). Resuming with a changed config would mix "
                "results: use another `--output`, or delete the folder to start over."
            )
        self.state = state
        if self.is_chief:  # it speaks for every worker
            done = ", ".join(state["phases"]) or "nothing"
            self.log(f"Resuming the run in {self.output} (done: {done})")

    def _resume_point(self):
        """What this process would resume: finished phases, backed-up epochs."""
        backups = {}
        for phase in ("teacher", "baseline", "distill"):
            metadata = self._shared(".backup", phase, "training_metadata.json")
            if os.path.exists(metadata):
                with open(metadata, encoding="utf-8") as handle:
                    backups[phase] = handle.read()
        phases = sorted(
            phase for phase, filename in _PHASE_FILES.items() if self._done(phase, filename)
        )
        return json.dumps({"phases": phases, "backups": backups}, sort_keys=True)

    def _save_phase(self, phase, **values):
        self.state["phases"][phase] = values
        atomic_write_json(self._path(STATE_FILE), self.state)

    def _done(self, phase, filename):
        return phase in self.state["phases"] and os.path.exists(self._shared(filename))

    def _file_bytes(self, filename):
        # A worker that reused a file read it from the shared output folder.
        path = self._path(filename)
        return os.path.getsize(path if os.path.exists(path) else self._shared(filename))

    def _backup(self, phase):
        """Restores the last finished epoch of an interrupted phase.

        Keras's `BackupAndRestore` reads and writes one folder. A worker
        other than the chief restores from a copy of the chief's backup (on
        a file system every worker shares) and saves into its scratch
        folder, so the chief's backup has one writer.
        """
        shared = self._shared(".backup", phase)
        own = self._path(".backup", phase)
        if own != shared and os.path.isdir(shared):
            shutil.copytree(shared, own, dirs_exist_ok=True)
        return keras.callbacks.BackupAndRestore(own, double_checkpoint=True)

    def _fit_plain(self, model, data, epochs, learning_rate, optimizer, seed, phase):
        model.compile(
            optimizer=_optimizer(optimizer, learning_rate),
            loss=crossentropy_from_logits,
            metrics=["accuracy"],
            jit_compile=self._jit(),
        )
        batch = self.config["data"]["batch_size"]
        start = time.perf_counter()
        history = model.fit(
            _dataset(data, "train", batch, shuffle=True, seed=seed),
            validation_data=_dataset(data, "validation", batch),
            epochs=epochs,
            verbose=self.verbose,
            shuffle=False,  # the pipeline shuffles, seeded
            callbacks=[self._backup(phase), keras.callbacks.TerminateOnNaN()],
        )
        return _history(history), time.perf_counter() - start

    def _jit(self):
        value = self.config["training"]["jit_compile"]
        return "auto" if value is None else value

    def teacher(self, data):
        """Loads or trains the teacher; returns `(model, history, seconds)`."""
        config = self.config["teacher"]
        if config["path"]:
            self.log(f"Loading the teacher from {config['path']}")
            model = saving.load_model(config["path"], unsafe=self.config["unsafe"])
            _check_input_shape(model, "teacher", data.input_shape)
            _check_output_classes(model, "teacher", data.num_classes)
            return model, {}, 0.0
        if self._done("teacher", "teacher.keras"):
            phase = self.state["phases"]["teacher"]
            self.log("Reusing the teacher trained before the interruption")
            model = saving.load_model(self._shared("teacher.keras"))
            return model, phase["history"], phase["seconds"]
        model = architectures.build(
            config["architecture"],
            data.input_shape,
            data.num_classes,
            size=config["size"],
            seed=self.config["training"]["seed"],
            name="teacher",
        )
        self.log(
            f"Training the teacher ({config['architecture']}/{config['size']}, "
            f"{model.count_params():,} parameters, {config['epochs']} epochs)"
        )
        history, seconds = self._fit_plain(
            model, data, config["epochs"], config["learning_rate"],
            self.config["training"]["optimizer"], self.config["training"]["seed"], "teacher",
        )
        _check_finite(history, "teacher")
        saving.save_model(_without_training_state(model), self._path("teacher.keras"))
        self._save_phase("teacher", history=history, seconds=seconds)
        return model, history, seconds

    def baseline(self, data, initial_weights):
        """Trains the student alone from `initial_weights`."""
        training = self.config["training"]
        if self._done("baseline", "student_alone.keras"):
            phase = self.state["phases"]["baseline"]
            self.log("Reusing the student trained alone before the interruption")
            model = saving.load_model(self._shared("student_alone.keras"))
            return model, phase["history"], phase["seconds"]
        model = self._student(data, "student_alone")
        model.set_weights(initial_weights)
        self.log(
            f"Training the student alone ({model.count_params():,} parameters, "
            f"{training['epochs']} epochs)"
        )
        history, seconds = self._fit_plain(
            model, data, training["epochs"], training["learning_rate"],
            training["optimizer"], training["seed"], "baseline",
        )
        _check_finite(history, "student trained alone")
        saving.save_model(_without_training_state(model), self._path("student_alone.keras"))
        self._save_phase("baseline", history=history, seconds=seconds)
        return model, history, seconds

    def _student(self, data, name):
        config = self.config["student"]
        return architectures.build(
            config["architecture"],
            data.input_shape,
            data.num_classes,
            size=config["size"],
            seed=self.config["training"]["seed"],
            name=name,
        )

    def distill(self, teacher, student, data):
        """Distills into `student`; returns `(distiller, history, seconds)`."""
        config = self.config["distillation"]
        training = self.config["training"]
        distiller = Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=config["losses"],
            distillation_loss_weights=config["loss_weights"],
            student_loss_weight=config["student_loss_weight"],
            teacher_outputs=self.config["teacher"]["teacher_outputs"],
        )
        distiller.compile(
            optimizer=_optimizer(training["optimizer"], training["learning_rate"]),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=self._jit(),
        )
        batch = self.config["data"]["batch_size"]
        diverged = StopOnNonFiniteLoss()
        last_good = self._path("student_last_good.keras")
        start = time.perf_counter()  # a cache build counts in the distillation time
        train, validation = self._distillation_data(distiller, data, batch)
        history = distiller.fit(
            train,
            validation_data=validation,
            epochs=training["epochs"],
            verbose=self.verbose,
            shuffle=False,  # the pipeline shuffles, seeded
            callbacks=[diverged, KeepLastGoodModel(student, last_good), self._backup("distill")],
        )
        if diverged.diverged_at is not None:
            epoch, step, loss = diverged.diverged_at
            kept = (
                f"The last good student is kept at {last_good}."
                if os.path.exists(last_good)
                else "No epoch finished with a finite loss, so no student was saved."
            )
            raise TrainingDivergedError(
                f"Distillation diverged: the loss became {loss} at epoch {epoch}, "
                f"step {step}. {kept} Lower `training.learning_rate` or the "
                "temperature, and check the data for extreme values."
            )
        return distiller, _history(history), time.perf_counter() - start

    def _distillation_data(self, distiller, data, batch):
        """Train and validation pipelines, with the teacher's outputs cached
        when that is safe (`training.cache`)."""
        from tf_distill.commands import caching as cache_lib

        mode, reason = cache_lib.should_cache(self.config, data)
        self.log(reason)
        seed = self.config["training"]["seed"]
        if mode == "off":
            return (
                _dataset(data, "train", batch, shuffle=True, seed=seed),
                _dataset(data, "validation", batch),
            )
        directory = self._path("teacher_cache")
        return tuple(
            _shard(
                cache_lib.cached_dataset(
                    distiller, data, split, batch, mode=mode, directory=directory,
                    seed=seed if split == "train" else None, log=self.log,
                )
            )
            for split in ("train", "validation")
        )

    def run(self):
        """Runs the job; writes the output folder; returns the metrics.

        With `training.distribute: multi_worker`, call it in every worker
        before any other TensorFlow code of the process (see
        docs/DISTRIBUTED.md).
        """
        # First: a multi-worker strategy must exist before any TensorFlow op.
        strategy = _strategy(self.config["training"]["distribute"])
        task = _other_worker(strategy)
        if task is not None:
            # Keras's multi-worker saving pattern: every worker saves (saving
            # may read variables synchronized across workers), only the
            # chief where it stays.
            task_type, task_index = task
            self.is_chief = False
            self.folder = tempfile.mkdtemp(prefix=f"tf_distill_{task_type}_{task_index}_")
            self.log(
                f"Worker {task_type}:{task_index}: the chief writes {self.output}; "
                f"this worker's files go to {self.folder}, removed at the end"
            )
        fixes = contextlib.nullcontext()
        if _is_multi_worker(strategy):
            fixes = _keras_multi_worker_fixes()
        try:
            with fixes, strategy.scope():
                return self._run(strategy)
        finally:
            if task is not None:
                shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, strategy):
        os.makedirs(self.folder, exist_ok=True)
        self._load_state()
        _check_workers_agree(strategy, self._resume_point(), self.output)
        training = self.config["training"]
        keras.utils.set_random_seed(training["seed"])
        data = load_data(self.config["data"])
        batch = self.config["data"]["batch_size"]
        self.log(
            f"Data: {data.name}: {len(data.x_train)} train, {len(data.x_val)} validation, "
            f"{len(data.x_test)} test, {data.num_classes} classes, input {data.input_shape}"
        )
        teacher, teacher_history, teacher_seconds = self.teacher(data)
        # Validate the distillation set-up before spending time on a baseline.
        student = self._student(data, "student")
        _check_output_classes(student, "student", data.num_classes)
        Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=self.config["distillation"]["losses"],
            distillation_loss_weights=self.config["distillation"]["loss_weights"],
            student_loss_weight=self.config["distillation"]["student_loss_weight"],
            teacher_outputs=self.config["teacher"]["teacher_outputs"],
        )
        histories, rows = {}, []
        row = {"model": "teacher", "parameters": int(teacher.count_params()),
               "train_seconds": teacher_seconds}
        row.update(_evaluate(teacher, None, data.x_test, data.y_test, batch))
        if not self.config["teacher"]["path"]:
            row["file_bytes"] = self._file_bytes("teacher.keras")
        rows.append(row)

        initial_weights = student.get_weights()
        if training["baseline"]:
            baseline, history, seconds = self.baseline(data, initial_weights)
            histories["student alone"] = history
            row = {"model": "student alone", "parameters": int(baseline.count_params()),
                   "train_seconds": seconds}
            row.update(_evaluate(baseline, None, data.x_test, data.y_test, batch))
            row["file_bytes"] = self._file_bytes("student_alone.keras")
            rows.append(row)

        self.log(f"Distilling into the student ({training['epochs']} epochs)")
        distiller, history, seconds = self.distill(teacher, student, data)
        histories["distilled student"] = history
        row = {"model": "distilled student", "parameters": int(student.count_params()),
               "train_seconds": seconds}
        row.update(_evaluate(student, None, data.x_test, data.y_test, batch))
        row["file_bytes"] = saving.save_model(student, self._path("student.keras"))
        rows.append(row)
        if os.path.exists(self._path("student_last_good.keras")):
            os.remove(self._path("student_last_good.keras"))

        results = {
            "data": {
                "name": data.name,
                "train": len(data.x_train),
                "validation": len(data.x_val),
                "test": len(data.x_test),
                "num_classes": data.num_classes,
            },
            "models": rows,
            "histories": {"teacher": teacher_history, **histories},
        }
        results["summary"] = _summary(rows)
        if self.config.get("export"):
            results["export"] = self.export(student, data)
        atomic_write_json(self._path("metrics.json"), results)
        write_report(
            self.folder, results, histories,
            config_text=yaml.safe_dump(self.config, sort_keys=False),
        )
        return results

    def export(self, student, data):
        """Exports the distilled student to LiteRT as the `export:` section says."""
        from tf_distill.export import export_litert

        config = self.config["export"]
        size = config["representative_size"]
        path = self._path(f"student_{config['quantization']}.tflite")
        self.log(f"Exporting the student to LiteRT ({config['quantization']}): {path}")
        report = export_litert(
            student,
            path,
            quantization=config["quantization"],
            representative_data=data.x_train[:size],
            validation_data=(data.x_test, data.y_test),
            max_accuracy_drop=config["max_accuracy_drop"],
            int8_io=config["int8_io"],
            allow_tf_ops=config["allow_tf_ops"],
            latency_runs=config["latency_runs"],
            per_channel=config["per_channel"],
            report_path=self._path("export.md"),
        )
        result = report.to_dict()
        result["markdown"] = report.to_markdown()
        return result


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
        ConfigError: If `text` is missing, not JSON, or not a cluster and a
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
        raise ConfigError(
            f"{where}, which is not set. Set it in every worker process, e.g. "
            f"{_TF_CONFIG_EXAMPLE}. See docs/DISTRIBUTED.md."
        )

    def invalid(problem):
        return ConfigError(
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


def _strategy(name):
    """The `tf.distribute` strategy a config's `training.distribute` names."""
    from tf_distill.backend import tf

    if name == "mirrored":
        # Every local GPU (or the CPU): the loss is averaged over the global batch.
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
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
                "`tf_distill.job.run` before any other TensorFlow code."
            ) from None
    return tf.distribute.get_strategy()


def _is_multi_worker(strategy):
    from tf_distill.backend import tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


@contextlib.contextmanager
def _keras_multi_worker_fixes():
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
        if reduction not in ("auto", "mean") or not _is_multi_worker(strategy):
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


def _other_worker(strategy):
    """`(task_type, task_index)` of a worker that is not the chief, else `None`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    tf_config = {
        "cluster": resolver.cluster_spec().as_dict(),
        "task": {"type": resolver.task_type, "index": resolver.task_id},
    }
    return None if is_chief(tf_config) else (resolver.task_type, resolver.task_id)


def _check_workers_agree(strategy, resume_point, output):
    """Fails on every worker if the workers would resume at different points.

    Workers that run different phases wait for each other's collective
    operations forever. They disagree when a worker cannot see the chief's
    output folder, i.e. when it is not on a file system they all share.
    """
    from tf_distill.backend import tf

    if strategy.num_replicas_in_sync == 1 or not _is_multi_worker(strategy):
        return
    digest = int(hashlib.sha256(resume_point.encode()).hexdigest()[:7], 16)
    local = tf.constant([digest], tf.int32)
    digests = strategy.gather(strategy.run(lambda: local), axis=0)
    _check_same_resume_point(digests.numpy().tolist(), output)


def _check_same_resume_point(digests, output):
    """Raises if the workers' resume points (one digest each) differ."""
    if len(set(digests)) > 1:
        raise ConfigError(
            f"The workers see different states of the output folder {output!r} "
            "(finished phases, backups), so they would resume at different points. "
            "Put `output` on a file system every worker shares, or delete the "
            "folder on every machine to start over."
        )


def _check_finite(history, role):
    losses = history.get("loss") or []
    if any(not np.isfinite(value) for value in losses):
        raise TrainingDivergedError(
            f"Training the {role} diverged: its loss became {losses[-1]}. Lower "
            "the learning rate, and check the data for extreme values."
        )


def _summary(rows):
    by_model = {row["model"]: row for row in rows}
    distilled = by_model.get("distilled student")
    alone = by_model.get("student alone")
    if not distilled or not alone:
        return None
    change = (alone["test_error"] - distilled["test_error"]) * 100
    direction = "fewer" if change >= 0 else "more"
    return (
        f"The distilled student makes {abs(change):.2f} points {direction} test errors "
        f"than the same student trained alone ({distilled['test_error']:.4f} vs "
        f"{alone['test_error']:.4f}), with "
        f"{by_model['teacher']['parameters'] / distilled['parameters']:.1f}× fewer "
        "parameters than the teacher."
    )


def run(config, verbose=1, log=print):
    """Runs a validated config (see `tf_distill.config`); returns the metrics."""
    return Job(config, verbose=verbose, log=log).run()
