"""What `tf-distill run` and `tf-distill tune` share, written once.

Loading the data, obtaining the teachers (loaded, reused or trained, and
checked against the data either way), building the student, training on the
labels alone, test metrics and the fingerprint of what a run depends on.
"""

import dataclasses
import hashlib
import importlib
import json
import math
import os
import sys
import time

import numpy as np

from tf_distill import architectures
from tf_distill import data as data_lib
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.callbacks import EpochLog
from tf_distill.callbacks import EpochOrder
from tf_distill.callbacks import TrainingDivergedError
from tf_distill.commands.config import ConfigError
from tf_distill.commands.config import teacher_sections
from tf_distill.commands.example_indices import with_num_examples
from tf_distill.comparison import counted
from tf_distill.distribute import shard_by_data
from tf_distill.files import atomic_write_json
from tf_distill.losses import crossentropy_from_logits
from tf_distill.losses.labels import UNLABELED
from tf_distill.optimizers import learning_rate_schedule
from tf_distill.optimizers import make_optimizer
from tf_distill.teachers import applies_softmax
from tf_distill.teachers import preprocessed_shape
from tf_distill.teachers import preprocessing_layers


def load_data(data_config):
    """Loads the data set a config's `data:` section names."""
    options = {
        key: data_config[key]
        for key in ("validation_size", "train_size", "test_size", "data_dir", "seed")
        if data_config.get(key) is not None
    }
    return data_lib.load(data_config["source"], **options)


def transfer_data(config, data):
    """The data the students learn from: `(labeled, for distillation)`.

    Without `data.transfer_size` both are `data`. With it, the students get a
    stratified subset of the training split (seeded by `data.seed`), the
    same for the student alone and distilled; with `data.unlabeled: rest`
    distillation also sees the other training examples, labeled -1 (no
    label: distilled, not scored). Validation and test splits are untouched.
    """
    section = config["data"]
    if section["transfer_size"] is None:
        return data, data
    chosen, rest = data_lib.stratified_indices(
        data.y_train, section["transfer_size"], seed=section["seed"]
    )
    identity = f"{data_identity(data)}:transfer={len(chosen)}"
    labeled = dataclasses.replace(
        data, x_train=data.x_train[chosen], y_train=data.y_train[chosen], fingerprint=identity
    )
    if section["unlabeled"] != "rest" or len(rest) == 0:
        return labeled, labeled
    order = np.concatenate([chosen, rest])
    y = np.concatenate([data.y_train[chosen], np.full(len(rest), UNLABELED, data.y_train.dtype)])
    distilled = dataclasses.replace(
        data, x_train=data.x_train[order], y_train=y, fingerprint=identity + f":unlabeled={len(rest)}"
    )
    return labeled, distilled


def data_identity(data):
    """What identifies the data's content (a hash of local files, or a name and version)."""
    return getattr(data, "fingerprint", None) or data.name


def fingerprint(record, data=None):
    """A short hash of `record` (a JSON-able mapping) and the data's identity."""
    record = dict(record)
    if data is not None:
        record["data_identity"] = data_identity(data)
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset(data, split, batch_size, shuffle=None, seed=None, example_indices=False,
            order=None):
    """`data`'s `split` as a dataset of global batches, sharded by data across
    workers; with `example_indices`, each batch carries its examples' indices;
    with `order` (a `callbacks.EpochOrder`), each epoch's order is a function
    of the seed and the epoch, as a resumed `fit` needs."""
    return shard_by_data(data.as_tf_dataset(split, batch_size, shuffle=shuffle, seed=seed,
                                            example_indices=example_indices, order=order))


def check_model_fits_data(model, role, data, preprocessing=None):
    """Raises `ConfigError` if `model`'s input shape or class count does not fit `data`.

    With `preprocessing` (a teacher's `teacher.preprocessing` steps), the
    model must fit the data's inputs as those steps make them.
    """
    inputs = getattr(model, "inputs", None)
    if inputs and len(inputs) == 1:
        shape = tuple(inputs[0].shape)[1:]
        expected = preprocessed_shape(
            preprocessing_layers(preprocessing, argument_name=f"{role}.preprocessing"),
            data.input_shape)
        if len(shape) != len(expected) or any(
            size is not None and size != want for size, want in zip(shape, expected)
        ):
            after = (f" after `teacher.preprocessing` (from {tuple(data.input_shape)})"
                     if preprocessing else "")
            hint = ("" if preprocessing or role == "student" else
                    " A teacher for other inputs reads them through `teacher.preprocessing` "
                    "steps (resize, repeat_channels, rescale).")
            raise ConfigError(
                f"The {role} takes inputs of shape {shape} but the data's inputs have "
                f"shape {expected}{after}. Received: {role} input shape "
                f"{tuple(inputs[0].shape)}.{hint}"
            )
    outputs = getattr(model, "outputs", None)
    shape = tuple(outputs[0].shape) if outputs else None
    if shape is not None and shape[-1] != data.num_classes:
        raise ConfigError(
            f"The {role} outputs {shape[-1]} classes but the data has "
            f"{data.num_classes}. Received: {role} output shape {shape}."
        )


def test_metrics(model, data, batch_size):
    """Test accuracy, error, loss and the raw count of errors of a logits model."""
    logits = model.predict(data.x_test, batch_size=batch_size, verbose=0)
    loss = float(np.mean(crossentropy_from_logits(data.y_test, logits).numpy()))
    wrong = int(np.sum(np.argmax(logits, axis=-1) != data.y_test))
    total = len(data.y_test)
    return {
        "test_accuracy": 1.0 - wrong / total,
        "test_error": wrong / total,
        "test_errors": wrong,
        "test_examples": total,
        "test_loss": loss,
    }


def validation_accuracy(model, data, batch_size):
    """A logits model's accuracy on the validation split."""
    logits = model.predict(data.x_val, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == data.y_val))


def without_training_state(model):
    """A copy of `model` without its optimizer, as it would be deployed."""
    # From its config, not `clone_model`, which also copies the compile state.
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def history_dict(history):
    """A Keras `History` as plain floats."""
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def check_finite(history, role):
    """Raises `TrainingDivergedError` if a history's loss is not finite."""
    losses = history.get("loss") or []
    if any(not np.isfinite(value) for value in losses):
        raise TrainingDivergedError(
            f"Training the {role} diverged: its loss became {losses[-1]}. Lower "
            "the learning rate, and check the data for extreme values."
        )


def jit_compile(config):
    """`training.jit_compile`, with Keras's `"auto"` for unset."""
    value = config["training"]["jit_compile"]
    return "auto" if value is None else value


def build_student(config, data, name="student", seed=None, width=None):
    """A new student as the config's `student:` section says.

    A built-in architecture, a model file (`path`: re-initialized from its
    config with `seed`, unless `keep_weights`) or a `builder` function.

    Args:
        width: A multiplier of the configured size (a search's `width`);
            only for a built-in architecture.

    Raises:
        ConfigError: for a builder without `unsafe`, a builder that does not
            return a model, or a `width` with a student of one's own.
    """
    section = config["student"]
    seed = config["training"]["seed"] if seed is None else seed
    own = section["path"] or section["builder"]
    if own and width is not None:
        raise ConfigError(
            "A search over the student's width needs a built-in `student.architecture`; "
            f"this student is given by {'`path`' if section['path'] else '`builder`'}. "
            "Received: tuning.tune_width=True"
        )
    if section["path"]:
        model = saving.load_model(section["path"], unsafe=config["unsafe"])
        return renewed(model, name, seed, keep_weights=section["keep_weights"])
    if section["builder"]:
        return call_builder(section["builder"], "student", data, seed, config["unsafe"])
    size = section["size"]
    if width is not None:
        size = architectures.SIZES[size] * float(width)
    return architectures.build(
        section["architecture"],
        data.input_shape,
        data.num_classes,
        size=size,
        seed=seed,
        name=name,
    )


def renewed(model, name, seed, keep_weights=False):
    """A new model of `model`'s architecture, named `name`: freshly initialized
    with `seed`, or with `model`'s weights when `keep_weights`."""
    model_config = model.get_config()
    if isinstance(model_config, dict) and "name" in model_config:
        model_config = {**model_config, "name": name}
    keras.utils.set_random_seed(seed)
    copy = type(model).from_config(model_config)
    if keep_weights:
        copy.set_weights(model.get_weights())
    return copy


def call_builder(spec, role, data, seed, unsafe):
    """The model `package.module:function` builds for `data`, if `unsafe` allows it.

    Raises:
        ConfigError: without `unsafe` (importing a module runs its code), for
            a module or function that cannot be found, or a result that is
            not a Keras model.
    """
    if not unsafe:
        raise ConfigError(
            f"`{role}.builder` imports and runs Python code ({spec!r}): refused "
            "unless you trust it and pass --unsafe (or set `unsafe: true` in the config)."
        )
    module_name, function_name = spec.split(":")
    try:
        function = getattr(_import_from_current_folder(module_name), function_name)
    except ModuleNotFoundError as error:
        if not (module_name == error.name or module_name.startswith(f"{error.name}.")):
            raise ConfigError(  # The builder's module imports something missing.
                f"`{role}.builder`'s module cannot be imported: {error}. "
                f"Received: {role}.builder={spec!r}"
            ) from None
        raise ConfigError(
            f"`{role}.builder` cannot be found: {error}, looked for in the current "
            f"folder ({os.getcwd()}) and on the Python path; for a module in another "
            "folder (next to the config, say), run from there or put that folder on "
            f"PYTHONPATH. Received: {role}.builder={spec!r}"
        ) from None
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"`{role}.builder` cannot be found: {error}. Received: {role}.builder={spec!r}"
        ) from None
    keras.utils.set_random_seed(seed)
    model = function(tuple(data.input_shape), data.num_classes)
    if not isinstance(model, keras.Model):
        raise ConfigError(
            f"`{role}.builder` must return a keras.Model. Received: {type(model).__name__} "
            f"from {spec!r}"
        )
    return model


def _import_from_current_folder(module_name):
    """Imports `module_name`, searching the current folder first.

    As `python script.py` finds a module next to the script: a user runs
    `tf-distill` where their `my_models.py` is. The current folder, like the
    config's relative paths, and not the config file's folder: one rule for
    every path a config names. The folder is searched for this import only,
    not left on `sys.path`.
    """
    folder = os.getcwd()
    sys.path.insert(0, folder)
    importlib.invalidate_caches()  # A module written since the process started.
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(folder)


def training_optimizer(config, data, *, learning_rate, epochs):
    """The optimizer of one training phase, as the config's `training:` says.

    Its schedule (`constant`, or `cosine` after `warmup_epochs`), weight
    decay and gradient clipping; the cosine decay spans the phase's `epochs`.
    """
    training = config["training"]
    steps = math.ceil(len(data.x_train) / config["data"]["batch_size"])
    rate = learning_rate_schedule(
        learning_rate, training["schedule"], total_steps=steps * epochs,
        warmup_steps=steps * training["warmup_epochs"],
    )
    return make_optimizer(training["optimizer"], rate, weight_decay=training["weight_decay"],
                          clipnorm=training["clipnorm"])


# The TensorBoard logs of a run (`tensorboard/<phase>/{train,validation}`)
# or a search (`tensorboard/<trial>/execution0/`, with the trial's hparams).
TENSORBOARD_FOLDER = "tensorboard"


def tensorboard_callback(log_dir):
    """Keras's `TensorBoard` callback writing each epoch's logs to `log_dir`."""
    # No graph: a distiller's is its teacher's and student's, at a trace's cost.
    return keras.callbacks.TensorBoard(log_dir, write_graph=False)


def training_callbacks(config):
    """`training.early_stopping` as a Keras callback (the best weights restored), or none."""
    stopping = config["training"]["early_stopping"]
    if stopping is None:
        return []
    return [keras.callbacks.EarlyStopping(
        monitor=stopping["monitor"], patience=stopping["patience"], restore_best_weights=True,
    )]


def train_plain(model, config, data, *, epochs, learning_rate, seed, verbose, callbacks=()):
    """Trains `model` on the labels alone; returns `(history dict, seconds)`.

    The history is `fit`'s, or that of an `EpochLog` in `callbacks` (every
    epoch of a `fit` resumed by `BackupAndRestore`). Each epoch's order is a
    function of `(seed, epoch)`, so a resumed `fit` trains as an
    uninterrupted one.

    Raises:
        TrainingDivergedError: if the loss turned NaN or infinite.
    """
    model.compile(
        optimizer=training_optimizer(config, data, learning_rate=learning_rate, epochs=epochs),
        loss=crossentropy_from_logits,
        metrics=["accuracy"],
        jit_compile=jit_compile(config),
    )
    batch = config["data"]["batch_size"]
    start = time.perf_counter()
    order = EpochOrder(seed)
    history = model.fit(
        dataset(data, "train", batch, shuffle=True, order=order),
        validation_data=dataset(data, "validation", batch),
        epochs=epochs,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles, seeded
        callbacks=[order, *callbacks, *training_callbacks(config),
                   keras.callbacks.TerminateOnNaN()],
    )
    logs = [callback for callback in callbacks if isinstance(callback, EpochLog)]
    return (logs[0].history if logs else history_dict(history)), time.perf_counter() - start


def teacher_file(name):
    """The file a trained teacher is saved to: `teacher.keras` or `teacher_NAME.keras`."""
    return "teacher.keras" if name == "teacher" else f"teacher_{name}.keras"


def _teacher_fingerprint(config, section, data):
    training = config["training"]
    # The teacher learns from the whole training split, whatever the students see.
    students_only = ("transfer_size", "unlabeled")
    record = {
        "data": {k: v for k, v in config["data"].items() if k not in students_only},
        "teacher": section,
        "seed": training["seed"],
        "optimizer": training["optimizer"],
        "jit_compile": training["jit_compile"],
    }
    # Keys added later count only when set, so a teacher trained before keeps its record.
    for key in ("schedule", "warmup_epochs", "weight_decay", "clipnorm", "early_stopping"):
        if training.get(key) not in (None, 0, "constant"):
            record[key] = training[key]
    return fingerprint(record, data)


class TeacherPlan:
    """One teacher of a config, before any training: loaded, reused or to train.

    `prepare_teachers` makes the plans and checks them against the data
    without writing anything; `train` then trains the ones that need it.

    Attributes:
        name: The teacher's name (`"teacher"` for a config with one).
        model: The loaded, reused or (still untrained) model.
        needs_training: Whether `train` will train it.
        history, seconds: Its training history and time (empty and 0 for a
            loaded teacher).
        source: `"path"`, `"reused"` or `"trained"`.
    """

    def __init__(self, name, section, model, source, history=None, seconds=0.0, digest=None):
        self.name = name
        self.section = section
        self.model = model
        self.source = source
        self.history = history or {}
        self.seconds = seconds
        self.digest = digest

    @property
    def needs_training(self):
        return self.source == "trained" and not self.history

    def reading_data(self):
        """The teacher as it reads the data: behind its `preprocessing` steps, if any."""
        steps = self.section.get("preprocessing")
        if not steps:
            return self.model
        return keras.Sequential([preprocessing_layers(steps), self.model])

    def train(self, config, data, write_folder, *, log, verbose, callbacks=()):
        """Trains the teacher, saves it (without optimizer state) and its record."""
        section = self.section
        log(
            f"Training the {self.name if self.name != 'teacher' else 'teacher'} "
            f"({section['builder'] or section['architecture'] + '/' + section['size']}, "
            f"{self.model.count_params():,} parameters, {counted(section['epochs'], 'epoch')})"
        )
        seed = config["training"]["seed"]
        # A Distiller built to check the set-up froze it.
        self.model.trainable = True
        self.history, self.seconds = train_plain(
            self.model, config, data, epochs=section["epochs"],
            learning_rate=section["learning_rate"], seed=seed, verbose=verbose,
            callbacks=callbacks,
        )
        check_finite(self.history, self.name)
        saving.save_model(
            without_training_state(self.model), os.path.join(write_folder, teacher_file(self.name))
        )
        atomic_write_json(
            os.path.join(write_folder, teacher_file(self.name) + ".json"),
            {"fingerprint": self.digest, "history": self.history, "seconds": self.seconds},
        )

    def file_bytes(self, folders):
        """The size of the saved teacher file, from the first folder holding it."""
        for folder in folders:
            path = os.path.join(folder, teacher_file(self.name))
            if os.path.exists(path):
                return os.path.getsize(path)
        return None


def prepare_teachers(config, data, read_folder, *, log, unsafe=False):
    """Plans every teacher of a config: load it, reuse it, or build it to train.

    A teacher given by `path` is loaded; one trained before for the same
    config and data (its record in `read_folder` matches) is reused; any
    other is built untrained. Each is checked against the data's input shape
    and class count before anything is trained or written.

    Returns:
        A list of `TeacherPlan`.

    Raises:
        ConfigError: for a teacher that does not fit the data.
        saving.ModelFileError / UnsafeModelError: for a model file that
            cannot be loaded safely.
    """
    plans = []
    for name, section in teacher_sections(config):
        role = "teacher" if name == "teacher" else f"teacher {name!r}"
        if section["path"]:
            log(f"Loading the {role} from {section['path']}")
            model = saving.load_model(section["path"], unsafe=unsafe)
            plan = TeacherPlan(name, section, model, "path")
        else:
            digest = _teacher_fingerprint(config, section, data)
            saved = os.path.join(read_folder, teacher_file(name))
            record = _read_record(saved + ".json")
            if record.get("fingerprint") == digest and os.path.isfile(saved):
                log(f"Reusing the {role} trained earlier: {saved}")
                model = saving.load_model(saved)
                plan = TeacherPlan(
                    name, section, model, "reused", record.get("history"),
                    record.get("seconds", 0.0), digest,
                )
            elif section["builder"]:
                model = call_builder(section["builder"], "teacher", data,
                                     config["training"]["seed"], unsafe)
                plan = TeacherPlan(name, section, model, "trained", digest=digest)
            else:
                model = architectures.build(
                    section["architecture"],
                    data.input_shape,
                    data.num_classes,
                    size=section["size"],
                    seed=config["training"]["seed"],
                    name=name,
                )
                plan = TeacherPlan(name, section, model, "trained", digest=digest)
        check_model_fits_data(plan.model, role, data, section.get("preprocessing"))
        check_not_softmax(plan.model, role, section)
        plans.append(plan)
    return plans


def check_not_softmax(model, role, section):
    """Refuses a teacher that ends with a softmax but is read as logits, in
    the config's words (the library's error names the Python argument)."""
    if section["teacher_outputs"] == "logits" and applies_softmax(model):
        raise ConfigError(
            f"The {role} ends with a softmax: its outputs are probabilities, and "
            "distilling them as logits would be wrong. Remove the softmax, or set "
            "`teacher_outputs: probabilities` in the config's `teacher` section."
        )


def _read_record(path):
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def teacher_argument(plans):
    """The `teacher` argument of a `Distiller`: one model, or `{name: model}`."""
    if len(plans) == 1 and plans[0].name == "teacher":
        return plans[0].model
    return {plan.name: plan.model for plan in plans}


def distiller_arguments(config, num_examples=None):
    """The `Distiller` keyword arguments a config's `distillation:` section gives,
    its losses resolved into loss objects (`tf_distill.losses.get`).

    Args:
        num_examples: The training examples distilled on: a loss with a
            memory bank (CRD) that the config gave none gets it.

    Raises:
        ConfigError: for a loss the training split is too small for.
    """
    section = config["distillation"]
    arguments = {
        "distillation_losses": with_num_examples(section["losses"], num_examples),
        "distillation_loss_weights": section["loss_weights"],
        "student_loss_weight": section["student_loss_weight"],
        "teacher_outputs": teacher_sections(config)[0][1]["teacher_outputs"],
    }
    preprocessing = teacher_sections(config)[0][1].get("preprocessing")
    if preprocessing:
        arguments["teacher_preprocessing"] = preprocessing_layers(preprocessing)
    if isinstance(config["teacher"], list):
        arguments["teacher_weights"] = section["teacher_weights"]
        arguments["ensemble"] = section["ensemble"]
    return arguments


def check_output_folder(folder):
    """Raises `ConfigError` unless `folder` is (or can become) a writable folder.

    Checked before any training, so that a run never fails at its end.
    """
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(
            f"The output folder {folder!r} is an existing file. Choose another `--output`."
        )
    probe = folder
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(os.path.abspath(probe)) if probe != os.path.dirname(probe) else ""
    probe = probe or "."
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == folder else f" (its nearest existing parent {probe!r} is not)"
        raise ConfigError(
            f"The output folder {folder!r} is not writable{where}. Choose another `--output`."
        )
