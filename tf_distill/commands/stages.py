"""`tf-distill run` with `stages:`: teacher → assistants → student.

Each stage is distilled as the run distills its student (the same
`Job.distill`: divergence checks, backups, teacher-output caching, early
stopping), from the teacher for the first stage and from the stage before
for the others; the last stage then teaches the run's student on every
seed. Stages are trained once, like teachers, saved as
`assistant_<name>.keras`, and reused when a killed run resumes. The report
shows each stage's test metrics and who taught it (`taught_by`).
"""

from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.commands import common
from tf_distill.commands.schemes import distillation_model
from tf_distill.commands.stages_config import stage_config
from tf_distill.distillers.distiller import Distiller


def stage_file(name):
    """The file a trained stage is saved to."""
    return f"assistant_{name}.keras"


def check_chain(config, hops, data, teacher, student):
    """Builds every stage's untrained model and the Distiller of each hop.

    Run before anything is trained or written, so that a stage that does
    not fit the data or a loss that does not fit its two models is refused
    at once. Without `stages` it checks the teacher → student Distiller (or
    the model of the config's `distillation.scheme`).

    Args:
        hops: Each hop's `Distiller` arguments (`schemes.resolve`).

    Raises:
        ConfigError: for a stage's model that does not fit the data.
        ValueError: for anything the `Distiller` refuses.
    """
    current = teacher
    for index, stage in enumerate(config.get("stages") or ()):
        local = stage_config(config, index)
        model = common.build_student(local, data, stage["name"])
        common.check_model_fits_data(model, f"stage {stage['name']!r}", data)
        Distiller(teacher=current, student=model, **hops[index])
        current = model
    last = stage_config(config, len(config.get("stages") or ()))
    distillation_model(last, hops[-1], current, student, data, config["training"]["seed"])


def run_stages(job, teacher, data, test_data, rows, histories):
    """Distills the stages in order; returns the student's teacher and its name.

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
    current, current_name = teacher, "teacher"
    if not config.get("stages"):
        return teacher, None
    batch = config["data"]["batch_size"]
    seed = config["training"]["seed"]
    for index, stage in enumerate(config["stages"]):
        name, local = stage["name"], stage_config(config, index)
        phase, filename = f"stage_{name}", stage_file(name)
        if job.done(phase, filename):
            job.log(f"Reusing the stage {name!r} distilled before")
            model = saving.load_model(job.shared_path(filename))
            history, seconds = (job.state["phases"][phase][key] for key in ("history", "seconds"))
        else:
            model = common.build_student(local, data, name, seed=seed)
            job.log(f"Distilling stage {index + 1} of {len(config['stages'])}: the "
                    f"{current_name} teaches {name!r} ({model.count_params():,} parameters, "
                    f"{local['training']['epochs']} epochs)")
            keras.utils.set_random_seed(seed)
            history, seconds = job.distill(current, model, data, seed, hop=index, phase=phase)
            saving.save_model(common.without_training_state(model), job.path(filename))
            job.save_phase(phase, history=history, seconds=seconds)
        histories[f"stage {name}"] = history
        row = {"model": name, "seed": None, "taught_by": current_name,
               "parameters": int(model.count_params()), "train_seconds": seconds}
        row.update(common.test_metrics(model, test_data, batch))
        row["file_bytes"] = job.file_bytes(filename)
        rows.append(row)
        current, current_name = model, name
    return current, current_name
