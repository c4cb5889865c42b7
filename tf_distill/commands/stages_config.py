"""The `stages:` section of a run config: teacher assistants before the student.

`stages:` lists the models distilled in order between the teacher and the
student (Mirzadeh et al., AAAI 2020): the teacher teaches `stages[0]`, each
stage teaches the next, and the last stage teaches the run's `student:`.
Each stage has its own `student` (the same keys as the run's), and may set
its own `distillation` (`losses`, `loss_weights`, `student_loss_weight`) and
`training` (`epochs`, `learning_rate`, `optimizer`, `schedule`,
`warmup_epochs`, `weight_decay`, `clipnorm`); what it leaves out is the
run's. Like the teacher, each stage is trained once, whatever the seeds.

```yaml
teacher: {architecture: cnn, size: large, epochs: 15}
stages:
- name: assistant
  student: {architecture: cnn, size: medium}
  training: {epochs: 10, optimizer: sgd, learning_rate: 0.05}
student: {architecture: cnn, size: small}
```
"""

import os

from tf_distill.architectures import SIZES
from tf_distill.commands import checks
from tf_distill.commands.checks import ConfigError
from tf_distill.commands.checks import show

DISTILLATION_KEYS = ("losses", "loss_weights", "student_loss_weight")
TRAINING_KEYS = ("epochs", "learning_rate", "optimizer", "schedule", "warmup_epochs",
                 "weight_decay", "clipnorm")
STAGE_KEYS = ("name", "student", "distillation", "training")
# Row labels and file names of a run that a stage must not take.
RESERVED_NAMES = ("teacher", "student", "student alone", "distilled student")


def _fields(schema_fields, keys, defaults):
    """The schema of `keys`, each defaulting to the run's value."""
    return {key: (schema_fields[key][0], defaults.get(key, schema_fields[key][1]))
            for key in keys}


def _loss_teacher(loss):
    return loss.get("teacher") if isinstance(loss, dict) else None


def _check_student_choice(path, student, errors):
    if student["builder"] is not None:
        return
    if student["path"] is not None:
        if not os.path.isfile(student["path"]):
            errors.add(f"`{path}.path` is not a readable file. Received: "
                       f"{path}.path={show(student['path'])}")
        return
    from tf_distill import architectures

    valid = architectures.names()
    if student["architecture"] not in valid:
        errors.add(f"Invalid value for `{path}.architecture`. Expected one of {valid}. "
                   f"Received: {path}.architecture={show(student['architecture'])}")
    if student["size"] not in SIZES:
        errors.add(f"Invalid value for `{path}.size`. Expected one of {list(SIZES)}. "
                   f"Received: {path}.size={show(student['size'])}")


def validate_stages(value, config, schema, section_checks, teacher_names):
    """Checks `stages:`; returns the stages with every key filled in.

    Args:
        value: The `stages` value read from YAML.
        config: The rest of the config, validated (a section that failed
            is missing or `None`: its defaults are used).
        schema: The config's `SCHEMA` (the `student`, `distillation` and
            `training` fields).
        section_checks: `{"student": check, "training": check}`, the checks
            across keys of those sections, run on each stage's.
        teacher_names: The run's teachers' names (several: a list of more
            than one), which the first stage's losses may name.

    Returns:
        A list of `{"name", "student", "distillation", "training"}`.

    Raises:
        ConfigError: listing every error of every stage.
    """
    if not isinstance(value, list) or not value:
        raise ConfigError(
            "`stages` must be a non-empty list of stages, each a mapping with a "
            f"`student` (and optionally `name`, `distillation`, `training`). "
            f"Received: stages={show(value)}"
        )
    distillation = config.get("distillation") or {}
    training = config.get("training") or {}
    errors = checks.Collector()
    stages, names = [], []
    for index, item in enumerate(value):
        path = f"stages[{index}]"
        item = errors.run(checks.mapping, path, item)
        if item is None:
            continue
        before = len(errors.messages)
        errors.run(checks.check_keys, path, item, STAGE_KEYS)
        default_name = "assistant" if len(value) == 1 else f"assistant_{index + 1}"
        name = errors.run(checks.string(), f"{path}.name", item.get("name", default_name))
        names += [name] if name is not None else []
        if "student" not in item:
            errors.add(f"`{path}.student` is required: the stage's model. Received: "
                       f"keys {sorted(item)}")
        student = errors.run(checks.section, f"{path}.student", item.get("student"),
                             schema["student"])
        if student is not None and "student" in item:
            errors.run(section_checks["student"], student)
            _check_student_choice(f"{path}.student", student, errors)
        given = item.get("distillation")
        defaults = dict(distillation)
        if isinstance(given, dict) and "losses" in given:  # the run's weights are for its losses
            defaults["loss_weights"] = None
        stage_distillation = errors.run(
            checks.section, f"{path}.distillation", given,
            _fields(schema["distillation"], DISTILLATION_KEYS, defaults))
        stage_training = errors.run(
            checks.section, f"{path}.training", item.get("training"),
            _fields(schema["training"], TRAINING_KEYS, training))
        if stage_training is not None and training:
            errors.run(section_checks["training"], {**training, **stage_training})
        if stage_distillation is not None:
            weights, losses = stage_distillation["loss_weights"], stage_distillation["losses"]
            if weights is not None and len(weights) != len(losses):
                errors.add(f"`{path}.distillation.loss_weights` has {len(weights)} entries "
                           f"for {len(losses)} losses. Received: {show(weights)}")
            for number, loss in enumerate(losses):
                teacher = _loss_teacher(loss)
                several = len(teacher_names) > 1 or isinstance(config.get("teacher"), list)
                if teacher is not None and (index > 0 or not several
                                            or teacher not in teacher_names):
                    errors.add(
                        f"`{path}.distillation.losses[{number}].teacher` names a teacher, "
                        "but only the first stage has the run's teachers, and only when "
                        f"there are several ({teacher_names}). Received: teacher={show(teacher)}"
                    )
        if len(errors.messages) == before:
            stages.append({"name": name, "student": student,
                           "distillation": stage_distillation, "training": stage_training})
    taken = [n for n in names if n in RESERVED_NAMES or n in teacher_names]
    if taken:
        errors.add(f"A stage's `name` must differ from {list(RESERVED_NAMES)} and the "
                   f"teachers' names {teacher_names}. Received: {taken}")
    if len(set(names)) != len(names):
        errors.add(f"Each stage needs its own `name`. Received: names {names}")
    for number, loss in enumerate(distillation.get("losses") or []):
        if _loss_teacher(loss) is not None:
            errors.add(
                f"`distillation.losses[{number}].teacher` names a teacher, but with "
                "`stages` the student's teacher is the last stage. Give the loss to "
                f"`stages[0].distillation`. Received: teacher={show(_loss_teacher(loss))}"
            )
    errors.raise_if_any()
    return stages


def stage_config(config, index):
    """The config that trains stage `index` as `tf-distill run` trains its student.

    Its `student`, `distillation` and `training` are the stage's (over the
    run's); a stage after the first, and the run's student after the last
    stage (`index == len(stages)`), has one teacher that outputs logits.
    """
    stages = config.get("stages")
    if not stages:
        return config
    result = {**config, "stages": None}
    if index > 0:
        result["teacher"] = {"teacher_outputs": "logits"}
    if index < len(stages):
        stage = stages[index]
        result["student"] = stage["student"]
        result["distillation"] = {**config["distillation"], **stage["distillation"]}
        result["training"] = {**config["training"], **stage["training"]}
    return result
