"""`tf-distill run` with `stages:`: teacher → assistants → student.

The chain runs in the library (`tf_distill.distillers.stages`: a `Stage`
per stage, `distill_stages`); each stage trains as the run distills its
student (`Job.compile_arguments`, `Job.distillation_callbacks`: divergence
checks, backups, early stopping; `Job.distillation_data`: teacher-output
caching), from the teacher for the first stage and from the stage before
for the others; the last stage then teaches the run's student on every
seed. Stages are trained once, like teachers, saved as
`assistant_<name>.keras`, and reused when a killed run resumes. The report
shows each stage's test metrics and who taught it (`taught_by`).
"""

import functools
import time

from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.callbacks import EpochOrder
from tf_distill.commands import common
from tf_distill.commands.schemes import distillation_model
from tf_distill.commands.stages_config import stage_config
from tf_distill.comparison import counted
from tf_distill.distillers.stages import Stage
from tf_distill.distillers.stages import check_stages
from tf_distill.distillers.stages import distill_stages


def stage_file(name):
    """The file a trained stage is saved to."""
    return f"assistant_{name}.keras"


def check_chain(job, data, teacher, student):
    """Builds every stage's untrained model and the Distiller of each hop.

    Run before anything is trained or written, so that a stage that does
    not fit the data or a loss that does not fit its two models is refused
    at once (`check_stages`). Without `stages` it checks the teacher →
    student Distiller (or the model of the config's `distillation.scheme`).

    Raises:
        ConfigError: for a stage's model that does not fit the data.
        ValueError: for anything the `Distiller` refuses.
    """
    config, current = job.config, teacher
    if config.get("stages"):
        first = job.hops[0]
        current = check_stages(
            teacher, StageChain(job, data, config["training"]["seed"], check=True).stages(),
            teacher_outputs=first["teacher_outputs"],
            teacher_weights=first.get("teacher_weights"), ensemble=first.get("ensemble"),
        )[-1]
    last = stage_config(config, len(config.get("stages") or ()))
    distillation_model(last, job.hops[-1], current, student, data, config["training"]["seed"])


class StageChain:
    """A run's `stages:` as `distill_stages` takes them, and the run's side of each.

    Each stage is a `Stage` of the stage's config (its hop's `Distiller`
    arguments, `Job.compile_arguments`); the hooks of `distill_stages` give
    each stage the run's pipeline (its own teacher's outputs cached), its
    callbacks, and save it as it ends. With `check`, the stages' students
    are only built and checked against the data (`check_chain`).
    """

    def __init__(self, job, data, seed, check=False):
        self.job, self.data, self.seed, self.check = job, data, seed, check
        self.names = [stage["name"] for stage in job.config["stages"]]
        self.configs = [stage_config(job.config, index) for index in range(len(self.names))]
        self.models, self.callbacks_of, self.started, self.results = {}, {}, {}, {}
        self.orders = {}

    def stages(self):
        """Every stage as a `Stage`."""
        stages = []
        for index, (name, local) in enumerate(zip(self.names, self.configs)):
            hop = self.job.hops[index]
            arguments = self.job.compile_arguments(local, self.data)
            stages.append(Stage(
                functools.partial(self.build, index),
                distillation_losses=hop["distillation_losses"],
                distillation_loss_weights=hop["distillation_loss_weights"],
                student_loss_weight=hop["student_loss_weight"],
                epochs=local["training"]["epochs"],
                optimizer=arguments.pop("optimizer"),
                compile_kwargs=arguments,
                name=name,
            ))
        return stages

    def build(self, index):
        name, local = self.names[index], self.configs[index]
        model = common.build_student(local, self.data, name, seed=self.seed)
        if self.check:  # only built to be checked (`check_chain`)
            common.check_model_fits_data(model, f"stage {name!r}", self.data)
            return model
        teacher = "teacher" if index == 0 else self.names[index - 1]
        self.job.log(f"Distilling stage {index + 1} of {len(self.names)}: the "
                     f"{teacher} teaches {name!r} ({model.count_params():,} parameters, "
                     f"{counted(local['training']['epochs'], 'epoch')})")
        keras.utils.set_random_seed(self.seed)
        self.models[index] = model
        return model

    def stage_data(self, index, distiller):
        self.job.claim()
        self.started[index] = time.perf_counter()  # a cache build counts in the time
        return self.job.distillation_data(distiller, self.data, self.job.config["data"][
            "batch_size"], self.seed, f"stage_{self.names[index]}", order=self.order(index))

    def order(self, index):
        """The stage's `EpochOrder`: in its pipeline and among its callbacks."""
        return self.orders.setdefault(index, EpochOrder(self.seed))

    def callbacks(self, index, stage):
        self.callbacks_of[index] = self.job.distillation_callbacks(
            self.configs[index], self.models[index], f"stage_{stage.name}")
        return [self.order(index), *self.callbacks_of[index]]

    def finished(self, index, distiller, history):
        """Saves the stage's student at once: a killed run resumes after it."""
        seconds = time.perf_counter() - self.started[index]
        self.job.note_resumed(f"stage {self.names[index]}", self.callbacks_of[index])
        history = self.job.distilled_history(self.configs[index], history,
                                             self.callbacks_of[index])
        name = self.names[index]
        saving.save_model(common.without_training_state(distiller.student),
                          self.job.path(stage_file(name)))
        self.job.save_phase(f"stage_{name}", history=history, seconds=seconds)
        self.results[index] = history, seconds

    def trained(self):
        """The leading stages trained by an interrupted run, loaded."""
        models = []
        for index, name in enumerate(self.names):
            phase, filename = f"stage_{name}", stage_file(name)
            if not self.job.done(phase, filename):
                break
            self.job.log(f"Reusing the stage {name!r} distilled before")
            models.append(saving.load_model(self.job.shared_path(filename)))
            self.results[index] = tuple(self.job.state["phases"][phase][key]
                                        for key in ("history", "seconds"))
        return models


def run_stages(job, teacher, data, test_data, rows, histories):
    """Distills the stages in order (`distill_stages`); returns the student's
    teacher and its name.

    Args:
        job: The `tf_distill.commands.run.Job`.
        teacher: The run's teacher (a model, or `{name: model}`).
        data: What the students learn from (the transfer set, if any).
        test_data: The data whose test split the rows report.
        rows: The run's model rows; each stage's is appended, with
            `taught_by`.
        histories: The run's training histories, by label; each stage's is
            added.

    Returns:
        `(model, name)`: the last stage's student and name, or `(teacher,
        None)` without `stages`.
    """
    config = job.config
    if not config.get("stages"):
        return teacher, None
    chain = StageChain(job, data, config["training"]["seed"])
    first = job.hops[0]
    runs = distill_stages(
        teacher, chain.stages(), data=chain.stage_data, trained=chain.trained(),
        callbacks=chain.callbacks, on_stage_end=chain.finished,
        teacher_outputs=first["teacher_outputs"], teacher_weights=first.get("teacher_weights"),
        ensemble=first.get("ensemble"), verbose=job.verbose, shuffle=False,  # seeded pipelines
    )
    for index, (model, name, taught_by) in enumerate(zip(runs.students, runs.names,
                                                         runs.teachers)):
        history, seconds = chain.results[index]
        histories[f"stage {name}"] = history
        row = {"model": name, "seed": None, "taught_by": taught_by,
               "parameters": int(model.count_params()), "train_seconds": seconds}
        row.update(common.test_metrics(model, test_data, config["data"]["batch_size"]))
        row["file_bytes"] = job.file_bytes(stage_file(name))
        rows.append(row)
    return runs.students[-1], runs.names[-1]
