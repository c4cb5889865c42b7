"""`tf-distill run`: a whole distillation job from a validated config.

Data → teachers (loaded, or trained from a named architecture) → for each
seed of `training.seeds`, the student trained alone (the baseline) and
distilled from the same initial weights → test metrics, saved students,
`metrics.json`, `report.md` with plots, and `config.yaml` (the config as run,
defaults filled in, which `tf-distill export RUN_DIR` reads). `metrics.json` holds
accuracy and error as fractions in [0, 1] (`test_accuracy`, `test_error`) beside
the raw counts (`test_errors` of `test_examples`); the tables show them in percent.
Each training phase writes its history (loss terms, schedule values,
metrics) with Keras's `TensorBoard` callback to `tensorboard/<phase>/`.

Nothing is written to the output folder until the config, the data and the
teachers have been checked against each other. A killed run resumes from its
last finished phase or epoch; a run of another config or other data in the
same folder is refused (or started afresh with `restart=True`).

`training.distribute` spreads every phase over devices: `mirrored` (the GPUs
of one machine) or `multi_worker` (several processes or machines, each
started with its own `TF_CONFIG`). With several workers, every worker runs
the same job, but only the chief writes the output folder; the others write
to a scratch folder that is removed at the end. See docs/DISTRIBUTED.md.
"""

import contextlib
import json
import os
import shutil
import tempfile
import time

import yaml

from tf_distill import distribute
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.callbacks import EpochLog
from tf_distill.callbacks import EpochOrder
from tf_distill.callbacks import KeepLastGoodModel
from tf_distill.callbacks import StopOnNonFiniteLoss
from tf_distill.callbacks import TrainingDivergedError
from tf_distill.commands import common
from tf_distill.commands import schemes
from tf_distill.commands.caching import cached_dataset
from tf_distill.commands.caching import should_cache
from tf_distill.commands.common import TENSORBOARD_FOLDER
from tf_distill.commands.config import ConfigError
from tf_distill.commands.example_indices import any_asks
from tf_distill.commands.report import seed_comparison
from tf_distill.commands.report import weak_teacher_warning
from tf_distill.commands.report import write_report
from tf_distill.commands.stages import check_chain
from tf_distill.commands.stages import run_stages
from tf_distill.commands.stages_config import stage_config
from tf_distill.comparison import counted
from tf_distill.files import atomic_write
from tf_distill.files import atomic_write_json

STATE_FILE = "run_state.json"
# Each epoch's logs of a phase, in its backup folder (the history of a resumed `fit`).
EPOCH_LOG = "epochs.jsonl"
# The validated config, as the run used it (defaults filled in).
CONFIG_FILE = "config.yaml"


# Folders a run derives from its teacher and data, removed by `--restart`.
DERIVED_FOLDERS = ("teacher_cache", "topk_cache")


def config_hash(config, data=None):
    """A fingerprint of everything in `config` (and the data) that changes the results."""
    return common.fingerprint({k: v for k, v in config.items() if k != "output"}, data)


class Job:
    """Runs one config. `Job(config).run()` returns the metrics dict.

    Files are read from the output folder (`shared_path`: a run to resume, a
    teacher trained before an interruption) and written to this process's
    folder (`path`): the output folder on the chief, a scratch folder on the
    other workers of a `multi_worker` run.

    Args:
        config: A validated config (`tf_distill.commands.config`).
        verbose: 0 (no progress bars), 1 (bars) or 2 (a line per epoch).
        log: A `print`-like callable for the phase lines.
        restart: Start afresh in a folder that holds a run of another
            config or other data, instead of refusing.
    """

    def __init__(self, config, verbose=1, log=print, restart=False):
        self.given = config  # as written; `config` with a scheme's implied sections
        self.config = schemes.effective_config(config)
        self.hops = None  # each stage's and the student's Distiller arguments, resolved once
        self.verbose = verbose
        self.log = log
        self.restart = restart
        self.output = config["output"]
        self.folder = self.output
        self.is_chief = True
        self.hash = None
        self.state = {"phases": {}}
        self.claimed = False
        self.taught_by = None  # the student's teacher, when `stages` put one between
        self.teacher_accuracy = {}  # each teacher's validation accuracy, by name
        self.resumed = {}  # the 1-based epoch each resumed training went on from, by model

    def path(self, *names):
        """A path in the folder this process writes."""
        return os.path.join(self.folder, *names)

    def shared_path(self, *names):
        """A path in the run's output folder (what every worker reads)."""
        return os.path.join(self.output, *names)

    # ------------------------------------------------------------------
    # The run's state: what is done, for which config and data.

    def read_state(self):
        """Reads the state of an interrupted run; refuses another config's.

        A folder that holds only the state of a run that never finished a
        phase nor an epoch (say, one refused before training) does not block.
        """
        path = self.shared_path(STATE_FILE)
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        started = state.get("phases") or os.path.isdir(self.shared_path(".backup"))
        if state.get("config_hash") != self.hash and started:
            if not self.restart:
                raise ConfigError(
                    f"The output folder {self.output!r} holds a run of a different "
                    f"config or data (fingerprint {state.get('config_hash')} there, "
                    f"{self.hash} now). Resuming with a change would mix results: use "
                    "another `--output`, pass `--restart` to start over in it, or "
                    "delete the folder."
                )
            self.log(f"Starting over in {self.output} (--restart)")
            # Over completely: the backups, the TensorBoard logs and every
            # cache of the old run's teacher and data go (a cache of the old
            # text would be refused).
            for name in os.listdir(self.shared_path()):
                if name in (".backup", TENSORBOARD_FOLDER) or name.startswith(DERIVED_FOLDERS):
                    shutil.rmtree(self.shared_path(name), ignore_errors=True)
            return
        if state.get("config_hash") != self.hash:
            return
        self.state = state
        if self.is_chief and state["phases"]:  # it speaks for every worker
            self.log(f"Resuming the run in {self.output} (done: {', '.join(state['phases'])})")

    def claim(self):
        """Writes the state file before the first training, tying backups to this run."""
        if not self.claimed:
            os.makedirs(self.folder, exist_ok=True)
            atomic_write_json(self.path(STATE_FILE), self.state)
            self.claimed = True

    def save_phase(self, phase, **values):
        self.state["phases"][phase] = values
        self.claim()
        atomic_write_json(self.path(STATE_FILE), self.state)

    def done(self, phase, filename):
        return phase in self.state["phases"] and os.path.exists(self.shared_path(filename))

    def resume_point(self):
        """What this process would resume: finished phases, backed-up epochs."""
        backups = {}
        folder = self.shared_path(".backup")
        for phase in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
            metadata = os.path.join(folder, phase, "training_metadata.json")
            if os.path.exists(metadata):
                with open(metadata, encoding="utf-8") as handle:
                    backups[phase] = handle.read()
        return json.dumps({"phases": sorted(self.state["phases"]), "backups": backups},
                          sort_keys=True)

    def backup(self, phase):
        """A `BackupAndRestore` callback resuming an interrupted `phase`.

        Keras's `BackupAndRestore` reads and writes one folder. A worker
        other than the chief restores from a copy of the chief's backup (on
        a file system every worker shares) and saves into its scratch
        folder, so the chief's backup has one writer.
        """
        shared = self.shared_path(".backup", phase)
        own = self.path(".backup", phase)
        metadata = os.path.join(shared, "training_metadata.json")
        if os.path.exists(metadata) and not _is_json(metadata):
            # Keras writes this file in place: a kill mid-write leaves it
            # truncated, and the backup cannot be trusted. Redo the phase.
            self.log(f"The backup of {phase} was cut off mid-write; that phase starts over")
            shutil.rmtree(shared, ignore_errors=True)
        if own != shared and os.path.isdir(shared):
            shutil.copytree(shared, own, dirs_exist_ok=True)
        return keras.callbacks.BackupAndRestore(own, double_checkpoint=True)

    def phase_callbacks(self, phase):
        """The callbacks every training `phase` has: its backup, and Keras's
        `TensorBoard` writing its history (losses, schedules, metrics) to
        `tensorboard/<phase>/` in the folder this process writes."""
        return [self.backup(phase),
                common.tensorboard_callback(self.path(TENSORBOARD_FOLDER, phase))]

    def resumable(self, phase):
        """The callbacks that resume an interrupted `phase` with its whole
        history: an `EpochLog` (first, so that an epoch is logged before it
        is backed up), then `phase_callbacks(phase)`; `fit` must shuffle
        with an `EpochOrder`."""
        callbacks = self.phase_callbacks(phase)  # the backup is made first
        return [EpochLog(os.path.join(self.path(".backup", phase), EPOCH_LOG)), *callbacks]

    def note_resumed(self, name, callbacks):
        """Records (for the report) that `name`'s training resumed, and at which epoch."""
        for callback in callbacks:
            if isinstance(callback, EpochLog) and callback.resumed_at is not None:
                self.resumed[name] = callback.resumed_at + 1
                self.log(f"{name[0].upper()}{name[1:]} resumed at epoch {callback.resumed_at + 1} "
                         "(epochs before it restored from the backup)")

    def file_bytes(self, filename):
        # A worker that reused a file read it from the shared output folder.
        path = self.path(filename)
        return os.path.getsize(path if os.path.exists(path) else self.shared_path(filename))

    # ------------------------------------------------------------------
    # The phases.

    def seeds(self):
        training = self.config["training"]
        return training["seeds"] or [training["seed"]]

    def suffix(self, seed):
        return "" if self.config["training"]["seeds"] is None else f"_seed{seed}"

    def baseline(self, data, initial_weights, seed):
        """Trains the student alone from `initial_weights`; returns `(model, history, s)`."""
        training = self.config["training"]
        phase, filename = f"baseline{self.suffix(seed)}", f"student_alone{self.suffix(seed)}.keras"
        if self.done(phase, filename):
            self.log(f"Reusing the student trained alone{self.seed_text(seed)} before")
            values = self.state["phases"][phase]
            return saving.load_model(self.shared_path(filename)), values["history"], values[
                "seconds"]
        model = self.build_student(data, "student_alone", seed)
        model.set_weights(initial_weights)
        self.log(
            f"Training the student alone{self.seed_text(seed)} "
            f"({model.count_params():,} parameters, {counted(training['epochs'], 'epoch')})"
        )
        self.claim()
        history, seconds = self.train_alone(model, data, seed, phase)
        saving.save_model(common.without_training_state(model), self.path(filename))
        self.save_phase(phase, history=history, seconds=seconds)
        return model, history, seconds

    def seed_text(self, seed):
        return "" if self.config["training"]["seeds"] is None else f" (seed {seed})"

    def distill(self, teacher, student, data, seed):
        """Distills into `student` from the last stage (or the teacher); returns
        `(history, seconds)`. The stages before run in `commands.stages`."""
        config = stage_config(self.config, len(self.hops) - 1)
        distiller = schemes.distillation_model(config, schemes.fresh(self.hops[-1]), teacher,
                                               student, data, seed)
        distiller.compile(**self.compile_arguments(config, data))
        batch = self.config["data"]["batch_size"]
        self.claim()
        start = time.perf_counter()  # a cache build counts in the distillation time
        order = EpochOrder(seed)
        train, validation = self.distillation_data(distiller, data, batch, seed, order=order)
        callbacks = self.distillation_callbacks(config, student, f"distill{self.suffix(seed)}")
        history = distiller.fit(
            train,
            validation_data=validation,
            epochs=config["training"]["epochs"],
            verbose=self.verbose,
            shuffle=False,  # the pipeline shuffles, seeded
            callbacks=[order, *callbacks],
        )
        self.note_resumed(f"distilled student{self.seed_text(seed)}", callbacks)
        return self.distilled_history(config, history, callbacks), time.perf_counter() - start

    def compile_arguments(self, config, data):
        """`compile`'s arguments for distilling as a (stage's) config says, a new optimizer."""
        training = config["training"]
        return {
            "optimizer": common.training_optimizer(
                config, data, learning_rate=training["learning_rate"], epochs=training["epochs"],
            ),
            "loss": "sparse_categorical_crossentropy",
            "metrics": ["accuracy"],
            "jit_compile": common.jit_compile(config),
        }

    def distillation_callbacks(self, config, student, phase):
        """The callbacks of one distillation into `student`: the first, a
        `StopOnNonFiniteLoss`, and the `EpochLog` go to `distilled_history`
        after `fit`."""
        return [StopOnNonFiniteLoss(), KeepLastGoodModel(student, self.path("student_last_good.keras")),
                *self.resumable(phase), *common.training_callbacks(config)]

    def distilled_history(self, config, history, callbacks):
        """The history of a finished distillation (every epoch, those before a
        resumption included), as a dict of the student's metrics.

        Raises:
            TrainingDivergedError: if the loss became NaN or infinite.
        """
        diverged = callbacks[0]
        if diverged.diverged_at is not None:
            epoch, step, loss = diverged.diverged_at
            last_good = self.path("student_last_good.keras")
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
        logs = [callback.history for callback in callbacks if isinstance(callback, EpochLog)]
        return schemes.student_history(config, logs[0] if logs else common.history_dict(history))

    def distillation_data(self, distiller, data, batch, seed, phase=None, order=None):
        """Train and validation pipelines, with the teacher's outputs cached
        when that is safe (`training.cache`); the training pipeline in
        `order`'s order (a `callbacks.EpochOrder`), if given."""
        mode, reason = should_cache(self.config, data)
        if not schemes.has_teacher(self.config):
            mode, reason = "off", "Distilling online: this scheme's teachers change every step."
        self.log(reason)
        indices = any_asks(getattr(distiller, "distillation_losses", ()))
        if mode == "off":
            return (
                common.dataset(data, "train", batch, shuffle=True, seed=seed,
                               example_indices=indices, order=order),
                common.dataset(data, "validation", batch),
            )
        directory = self.path("teacher_cache" + (f"_{phase}" if phase else ""))
        return tuple(
            distribute.shard_by_data(
                cached_dataset(
                    distiller, data, split, batch, mode=mode, directory=directory,
                    seed=seed if split == "train" else None, log=self.log,
                    example_indices=indices and split == "train", verbose=self.verbose,
                    order=order if split == "train" else None,
                )
            )
            for split in ("train", "validation")
        )

    # ------------------------------------------------------------------
    # The whole run.

    def run(self):
        """Runs the job; writes the output folder; returns the metrics.

        With `training.distribute: multi_worker`, call it in every worker
        before any other TensorFlow code of the process (see
        docs/DISTRIBUTED.md).
        """
        common.check_output_folder(self.output)
        # First: a multi-worker strategy must exist before any TensorFlow op.
        # A config without `training.distribute` (`task: language`) runs on one device.
        strategy = distribute.make_strategy(self.config["training"].get("distribute", "none"))
        task = distribute.other_worker(strategy)
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
        if distribute.is_multi_worker(strategy):
            fixes = distribute.keras_multi_worker_fixes()
        try:
            with fixes, strategy.scope():
                return self.run_in(strategy)
        finally:
            if task is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
            elif os.path.isdir(self.path(".backup")) and not os.listdir(self.path(".backup")):
                os.rmdir(self.path(".backup"))

    def run_in(self, strategy):
        training = self.config["training"]
        keras.utils.set_random_seed(training["seed"])
        data = self.load_data()
        self.hash = config_hash(self.given, data)
        self.state = {"config_hash": self.hash, "phases": {}}
        self.read_state()
        distribute.check_workers_agree(strategy, self.resume_point(), self.output)
        self.log(self.describe_data(data))
        histories, rows, warnings = {}, [], []
        teacher, students_data = self.teachers(data, rows, histories)
        for seed in self.seeds():
            rows += self.run_seed(teacher, students_data, seed, histories, warnings)
        if os.path.exists(self.path("student_last_good.keras")):
            os.remove(self.path("student_last_good.keras"))
        for warning in self.weak_teacher_warnings(rows):
            self.log(f"Warning: {warning}")
            warnings.append(warning)

        results = {
            # A classifier's validated config has no `task`.
            **({"task": self.config["task"]} if "task" in self.config else {}),
            "data": self.data_summary(data),
            "seeds": self.seeds(),
            "models": rows,
            "histories": histories,
            # The 1-based epoch each training resumed at, by model (`{}`: none was interrupted).
            "resumed": self.resumed,
            "warnings": warnings,
        }
        results["comparison"] = self.compare(rows)
        results["summary"] = results["comparison"]["sentence"] if results["comparison"] else None
        if self.config.get("export"):
            # The first seed's distilled student, as trained and saved (the
            # `student` built in `teachers` was only built to check the set-up).
            results["export"] = self.export(saving.load_model(self.path(
                f"student{self.suffix(self.seeds()[0])}.keras")), data)
        atomic_write_json(self.path("metrics.json"), results)
        # `tf-distill export RUN_DIR` reads the data back from it.
        config_text = yaml.safe_dump(self.given, sort_keys=False)
        atomic_write(self.path(CONFIG_FILE), config_text)
        results["files"] = self.write_report(results, histories, config_text)
        return results

    def run_seed(self, teacher, students_data, seed, histories, warnings):
        """The student alone and distilled, from the same initial weights, for one seed."""
        training = self.config["training"]
        suffix = self.suffix(seed)
        rows = []
        data = students_data[0]  # its validation and test splits are the run's
        student = self.build_student(data, "student", seed)
        initial_weights = student.get_weights()
        if training["baseline"]:
            baseline, history, seconds = self.baseline(data, initial_weights, seed)
            histories[f"student alone{self.seed_text(seed)}"] = history
            rows.append(self.model_row("student alone", seed, baseline, seconds, data, teacher,
                                       f"student_alone{suffix}.keras"))
            warning = self.weak_teacher_warning(baseline, data, seed)
            if warning:
                self.log(f"Warning: {warning}")
                warnings.append(warning)
        self.log(f"Distilling into the student{self.seed_text(seed)} "
                 f"({counted(training['epochs'], 'epoch')})")
        keras.utils.set_random_seed(seed)
        history, seconds = self.distill(teacher, student, students_data[1], seed)
        histories[f"distilled student{self.seed_text(seed)}"] = history
        filename = f"student{suffix}.keras"
        self.save_student(student, filename)
        rows.append(self.model_row("distilled student", seed, student, seconds, data, teacher,
                                   filename,
                                   **({"taught_by": self.taught_by} if self.taught_by else {})))
        return rows

    def model_row(self, name, seed, model, seconds, data, teacher, filename, **labels):
        """A trained model's row of the report: its name, size, time and `score`."""
        return {"model": name, "seed": seed, **labels,
                "parameters": int(model.count_params()), "train_seconds": seconds,
                **self.score(model, data, seed=seed, teacher=teacher, seconds=seconds,
                             filename=filename)}

    # ------------------------------------------------------------------
    # Hooks: what a task's job changes (`commands.language_run.LanguageJob`):
    # the data, the models, the metric and the report.

    def load_data(self):
        """The data the `data:` section names."""
        return common.load_data(self.config["data"])

    def describe_data(self, data):
        """The line the run logs about its data."""
        return (
            f"Data: {data.name}: {len(data.x_train)} train, {len(data.x_val)} validation, "
            f"{len(data.x_test)} test, {data.num_classes} classes, input {data.input_shape}"
        )

    def data_summary(self, data):
        """What `metrics.json` says of the data."""
        return {
            "name": data.name,
            "identity": common.data_identity(data),
            "train": len(data.x_train),
            "validation": len(data.x_val),
            "test": len(data.x_test),
            "num_classes": data.num_classes,
        }

    def teachers(self, data, rows, histories):
        """Obtains the teachers and checks the whole set-up before any training.

        Teachers are loaded, reused from an interrupted run or trained; then
        the `stages:`, if any, are distilled. Each adds its row to `rows`
        and its training history to `histories`.

        Returns:
            `(teacher, students_data)`: what the student distills from, and
            the students' `(labeled, distilled)` data (the transfer set).
        """
        batch = self.config["data"]["batch_size"]
        unsafe = self.config["unsafe"]
        plans = common.prepare_teachers(self.config, data, self.output, log=self.log,
                                        unsafe=unsafe) if schemes.has_teacher(self.config) else []
        # Validate the distillation set-up before anything is trained or written.
        students_data = common.transfer_data(self.config, data)
        self.hops = schemes.resolve(self.config, num_examples=len(students_data[1].x_train))
        student = self.build_student(data, "student")
        common.check_model_fits_data(student, "student", data)
        check_chain(self, data, common.teacher_argument(plans) if plans else None, student)
        for plan in plans:
            if plan.needs_training:
                self.claim()
                callbacks = self.resumable(plan.name)
                plan.train(self.config, data, self.folder, log=self.log, verbose=self.verbose,
                           callbacks=callbacks)
                self.note_resumed(plan.name, callbacks)
                self.save_phase(plan.name, seconds=plan.seconds)
        teacher = common.teacher_argument(plans)
        for plan in plans:
            row = {"model": plan.name, "seed": None,
                   "parameters": int(plan.model.count_params()), "train_seconds": plan.seconds}
            row.update(common.test_metrics(plan.reading_data(), data, batch))
            if plan.source != "path":
                row["file_bytes"] = plan.file_bytes([self.folder, self.output])
            rows.append(row)
            if plan.history:
                histories[plan.name] = plan.history
        self.teacher_accuracy = {
            plan.name: common.validation_accuracy(plan.reading_data(), data, batch)
            for plan in plans
        }
        if students_data[0] is not data:
            labeled, distilled = students_data
            unlabeled = len(distilled.x_train) - len(labeled.x_train)
            self.log(
                f"Transfer set: the students learn from {len(labeled.x_train)} labeled "
                f"training examples (the teacher from {len(data.x_train)})"
                + (f", distillation also from {unlabeled} without labels" if unlabeled else "")
            )
        teacher, self.taught_by = run_stages(self, teacher, students_data[1], data, rows,
                                             histories)
        return teacher, students_data

    def build_student(self, data, name, seed=None):
        """A new student (seeded), as the `student:` section says."""
        return common.build_student(self.config, data, name, seed=seed)

    def train_alone(self, model, data, seed, phase):
        """Trains the student alone (the baseline `phase`); returns `(history, seconds)`."""
        training = self.config["training"]
        callbacks = self.resumable(phase)
        history, seconds = common.train_plain(
            model, self.config, data, epochs=training["epochs"],
            learning_rate=training["learning_rate"], seed=seed, verbose=self.verbose,
            callbacks=callbacks,
        )
        self.note_resumed(f"student alone{self.seed_text(seed)}", callbacks)
        common.check_finite(history, "student trained alone")
        return history, seconds

    def save_student(self, student, filename):
        """Saves the distilled student, as trained."""
        saving.save_model(student, self.path(filename))

    def score(self, model, data, *, seed, teacher, seconds, filename):
        """A trained model's numbers: test accuracy and errors, and its file's size."""
        batch = self.config["data"]["batch_size"]
        return {**common.test_metrics(model, data, batch), "file_bytes": self.file_bytes(filename)}

    def weak_teacher_warning(self, baseline, data, seed):
        """A warning when no teacher beats this seed's student alone on validation data."""
        batch = self.config["data"]["batch_size"]
        return self.teacher_accuracy and weak_teacher_warning(
            self.teacher_accuracy, common.validation_accuracy(baseline, data, batch),
            self.seed_text(seed),
        )

    def weak_teacher_warnings(self, rows):
        """Warnings drawn from every seed's rows (none here: each seed's is warned of)."""
        return []

    def compare(self, rows):
        """The distilled students against the students alone, seed by seed."""
        return seed_comparison(rows, self.config["distillation"]["losses"])

    def write_report(self, results, histories, config_text):
        """Writes `report.md` and its plots; returns the names of the files written."""
        return write_report(self.folder, results, histories, config_text=config_text)

    def export(self, student, data):
        """Exports the distilled student to LiteRT as the `export:` section says."""
        from tf_distill.export import export_litert

        config = self.config["export"]
        size = config["representative_size"]
        path = self.path(f"student_{config['quantization']}.tflite")
        self.log(f"Exporting the student to LiteRT ({config['quantization']}): {path}")
        options = ("quantization", "max_accuracy_drop", "int8_io", "allow_tf_ops",
                   "latency_runs", "per_channel")
        report = export_litert(
            student, path, representative_data=data.x_train[:size],
            validation_data=(data.x_test, data.y_test), report_path=self.path("export.md"),
            verbose=self.verbose, **{key: config[key] for key in options},
        )
        result = report.to_dict()
        result["markdown"] = report.to_markdown()
        return result


def _is_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            json.load(handle)
    except (OSError, ValueError):
        return False
    return True


def interrupted_message(output):
    """What the user reads when a run into `output` is interrupted (Ctrl-C).

    A run resumes only once it has claimed its folder (written its state
    file, before its first training); the same config then resumes there,
    `--restart` or not (that flag starts over only a folder of another config).
    """
    if not os.path.exists(os.path.join(output, STATE_FILE)):
        return "interrupted; nothing was written"
    return (f"interrupted. Run the same command again to resume from the last finished "
            f"epoch (the output folder {output} keeps it); delete that folder to start over.")


def run(config, verbose=1, log=print, restart=False):
    """Runs a validated config (see `tf_distill.commands.config`); returns the metrics."""
    return Job(config, verbose=verbose, log=log, restart=restart).run()
