"""Job configs: YAML files read with `yaml.safe_load` and checked up front.

A config is data. Every section has a fixed set of keys with types, defaults
and ranges; an unknown key, a wrong type or an out-of-range value is an error
that names the key, lists the valid choices and shows what was received,
before any data is loaded or any model trained.

`teacher:` is one teacher (a mapping) or several: a list of mappings, each
with a `name`, or a mapping `{name: {...}}`; `distillation.teacher_weights`
and `distillation.ensemble` then say how their outputs combine, and a loss
reads one of them with `teacher: NAME`. `stages:` lists teacher assistants
distilled between the teacher and the student (`commands.stages_config`);
`distillation.scheme` runs mutual, self or born-again distillation
(`commands.scheme_config`).

A config with `task: language` distills a KerasHub causal language model
instead; `validate` hands it to `tf_distill.commands.language_config`.

Example (`tf-distill run job.yaml`):

```yaml
data: {source: digits, batch_size: 64}
teacher: {architecture: cnn, size: large, epochs: 15}
student: {architecture: cnn, size: small}
distillation:
  student_loss_weight: 0.1
  losses: [{name: kd, temperature: 4.0}]
training: {epochs: 20, learning_rate: 0.002}
output: runs/digits
```
"""

import os

import yaml

from tf_distill.architectures import SIZES
from tf_distill.commands import checks
from tf_distill.commands import schedule_config
from tf_distill.commands import scheme_config
from tf_distill.commands.caching import CACHE_MODES
from tf_distill.commands.checks import ConfigError
from tf_distill.commands.checks import show
from tf_distill.commands.stages_config import validate_stages
from tf_distill.commands.tuning_config import validate_tuning
from tf_distill.distribute import STRATEGIES
from tf_distill.export import QUANTIZATION_MODES
from tf_distill.optimizers import OPTIMIZERS
from tf_distill.optimizers import SCHEDULES
from tf_distill.teachers import ENSEMBLE_KINDS
from tf_distill.teachers import TEACHER_OUTPUT_KINDS

UNLABELED_CHOICES = ("none", "rest")
# The most YAML nodes a config may expand to, aliases counted at every use.
MAX_NODES = 100_000


def _early_stopping(path, value):
    return checks.section(path, value, {
        "monitor": (checks.string(), "val_accuracy"),
        "patience": (checks.number(low=0, integer=True), 3),
    })


# Each section: key -> (check, default). A default of `REQUIRED` must be given.
SCHEMA = {
    "data": {
        "source": (checks.string(), "digits"),
        "batch_size": (checks.number(low=1, integer=True), 64),
        "validation_size": (checks.optional(checks.count_or_fraction), None),
        "train_size": (checks.optional(checks.count_or_fraction), None),
        "test_size": (checks.optional(checks.count_or_fraction), None),
        "data_dir": (checks.optional(checks.string()), None),
        "seed": (checks.number(low=0, integer=True), 0),
        # Hinton's transfer set: the student (alone and distilled) learns from
        # this many labeled training examples, the teacher from all of them.
        "transfer_size": (checks.optional(checks.count_or_fraction), None),
        # "rest": the training examples outside the transfer set are distilled
        # without their labels (the common case of plenty of unlabeled data).
        "unlabeled": (checks.string(UNLABELED_CHOICES), "none"),
    },
    "teacher": {
        "path": (checks.optional(checks.string()), None),
        # `package.module:function`, `(input_shape, num_classes) -> keras.Model`;
        # importing it runs code, so a run needs --unsafe (`unsafe: true`).
        "builder": (checks.optional(checks.builder), None),
        "architecture": (checks.string(), "cnn"),
        "size": (checks.string(), "large"),
        "epochs": (checks.number(low=0, integer=True), 10),
        "learning_rate": (checks.number(low=0, low_open=True), 0.002),
        "teacher_outputs": (checks.string(TEACHER_OUTPUT_KINDS), "logits"),
        # Safe steps that turn the data's inputs into the teacher's:
        # [{resize: [32, 32]}, {repeat_channels: 3}, {rescale: 255.0, offset: 0.0}].
        # Kept only when given, so that older runs keep their fingerprints.
        "preprocessing": (checks.optional(checks.preprocessing_steps), None),
    },
    "student": {
        "architecture": (checks.string(), "cnn"),
        "size": (checks.string(), "small"),
        # An untrained model file, re-initialized (seeded) unless `keep_weights`.
        "path": (checks.optional(checks.string()), None),
        "keep_weights": (checks.boolean, False),
        "builder": (checks.optional(checks.builder), None),
    },
    "distillation": {
        "losses": (checks.loss_list, [{"name": "kd", "temperature": 4.0}]),
        # Each weight, and a loss's temperature, may be a schedule mapping
        # `{schedule: cosine, start: 0.9, end: 0.1}` (see `schedule_config`).
        "loss_weights": (checks.optional(schedule_config.weight_list), None),
        "student_loss_weight": (schedule_config.number_or_schedule(low=0, high=1), 0.5),
        # Several teachers: their weights (a list, or a mapping by name) and
        # how their outputs are combined.
        "teacher_weights": (checks.optional(checks.teacher_weights), None),
        "ensemble": (checks.optional(checks.string(ENSEMBLE_KINDS)), None),
    },
    "training": {
        "epochs": (checks.number(low=1, integer=True), 10),
        "learning_rate": (checks.number(low=0, low_open=True), 0.002),
        "optimizer": (checks.string(OPTIMIZERS), "adam"),
        # "cosine": a linear warm-up over `warmup_epochs`, then a cosine decay to 0.
        "schedule": (checks.string(SCHEDULES), "constant"),
        "warmup_epochs": (checks.number(low=0, integer=True), 0),
        # The optimizer's decoupled weight decay (None: its default).
        "weight_decay": (checks.optional(checks.number(low=0)), None),
        "clipnorm": (checks.optional(checks.number(low=0, low_open=True)), None),
        # {monitor: val_accuracy, patience: 3}: stop when the metric stops
        # improving, with the best epoch's weights restored; every phase.
        "early_stopping": (checks.optional(_early_stopping), None),
        "seed": (checks.number(low=0, integer=True), 0),
        # Several paired seeds: the teacher is trained once, the student alone
        # and distilled once per seed; the report gives mean ± std.
        "seeds": (checks.optional(checks.seed_list), None),
        "baseline": (checks.boolean, True),
        "jit_compile": (checks.optional(checks.boolean), None),
        # "mirrored": the GPUs of one machine; "multi_worker": processes or
        # machines started with TF_CONFIG (docs/DISTRIBUTED.md).
        "distribute": (checks.string(STRATEGIES), "none"),
        # Teacher outputs computed once, not every epoch: "auto" caches in
        # memory, or memory-mapped on disk for large data; "off" distills online.
        "cache": (checks.string(CACHE_MODES), "auto"),
    },
    "export": {
        "quantization": (checks.string(QUANTIZATION_MODES), "int8"),
        "max_accuracy_drop": (checks.number(), 1.0),
        "int8_io": (checks.boolean, False),
        "allow_tf_ops": (checks.boolean, False),
        "latency_runs": (checks.number(low=1, integer=True), 200),
        "representative_size": (checks.number(low=1, integer=True), 200),
        "per_channel": (checks.boolean, True),
    },
}
_TOP_LEVEL = {
    "output": (checks.string(), "runs/tf_distill"),
    "unsafe": (checks.boolean, False),
}
_OPTIONAL_SECTIONS = ("export",)


def _teachers(value):
    """The `teacher:` section: one mapping, a list of them, or `{name: mapping}`."""
    fields = SCHEMA["teacher"]
    if value is None or (isinstance(value, dict) and set(value) <= set(fields)):
        section = checks.section("teacher", value, fields)
        if section["preprocessing"] is None:
            del section["preprocessing"]
        elif section["path"] is None:
            raise ConfigError(
                "`teacher.preprocessing` prepares the inputs of a teacher loaded from "
                "`teacher.path`; a teacher the run trains learns from the data as it is. "
                f"Received: teacher.preprocessing={show(section['preprocessing'])}, "
                "teacher.path=None")
        return section
    if isinstance(value, dict):
        if not all(isinstance(item, dict) for item in value.values()):
            checks.check_keys("teacher", value, fields)  # a misspelt key of one teacher
        items = [{**item, "name": name} for name, item in value.items()]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise ConfigError(
            "`teacher` must be a mapping (one teacher), a non-empty list of "
            "mappings with a `name` each, or a mapping {name: {...}} (several). "
            f"Received: teacher={show(value)}"
        )
    teachers, errors = [], checks.Collector()
    for index, item in enumerate(items):
        path = f"teacher[{index}]"
        item = errors.run(checks.mapping, path, item)
        if item is None:
            continue
        name = errors.run(checks.string(), f"{path}.name", item.get("name", f"teacher_{index}"))
        section = errors.run(
            checks.section, path, {k: v for k, v in item.items() if k != "name"}, fields
        )
        if section is not None and section.pop("preprocessing") is not None:
            errors.add(f"`{path}.preprocessing` applies to a single teacher (all teachers of "
                       "a list read the data as it is). Received: "
                       f"{path}.preprocessing={show(item['preprocessing'])}")
        elif section is not None:
            teachers.append({"name": name, **section})
    errors.raise_if_any()
    names = [teacher["name"] for teacher in teachers]
    if len(set(names)) != len(names):
        raise ConfigError(f"Each teacher needs its own `name`. Received: names {names}")
    kinds = {teacher["teacher_outputs"] for teacher in teachers}
    if len(kinds) > 1:
        raise ConfigError(
            "Every teacher must give the same `teacher_outputs` (logits or "
            f"probabilities). Received: {sorted(kinds)}"
        )
    return teachers


def teacher_sections(config):
    """`[(name, section)]`: one `("teacher", section)` or each named teacher."""
    teacher = config["teacher"]
    if isinstance(teacher, dict):
        return [("teacher", teacher)]
    return [(item["name"], item) for item in teacher]


def teacher_outputs(config):
    """The kind of output every teacher gives: `"logits"` or `"probabilities"`."""
    return teacher_sections(config)[0][1]["teacher_outputs"]


def validate(raw):
    """Checks a config mapping and fills in defaults.

    Args:
        raw: The mapping read from YAML (or built in Python).

    Returns:
        A new dict with every section and key present.

    A config with `task: language` is checked by
    `tf_distill.commands.language_config` instead.

    Raises:
        ConfigError: listing every key that is unknown, of the wrong type or
            out of range, with the valid choices (all of them at once: the
            checks between sections run on the sections that passed).
    """
    if raw is None:
        raw = {}
    if isinstance(raw, dict) and "task" in raw:
        from tf_distill.commands import language_config

        if language_config.check_task(raw["task"]) == language_config.LANGUAGE_TASK:
            return language_config.validate(raw)
        raw = {key: value for key, value in raw.items() if key != "task"}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"A config must be a mapping of sections. Received: {type(raw).__name__}"
        )
    errors = checks.Collector()
    errors.run(checks.check_keys, "", raw,
               list(SCHEMA) + ["tuning", "stages"] + list(_TOP_LEVEL))
    config = {}
    for key, (check, default) in _TOP_LEVEL.items():
        config[key] = errors.run(check, key, raw[key], default=default) if key in raw else default
    failed = set()
    for section, fields in SCHEMA.items():
        before = len(errors.messages)
        if section == "teacher":
            config[section] = errors.run(_teachers, raw.get(section))
        elif section == "distillation":
            distillation, scheme = scheme_config.split(raw.get(section))
            distillation = schedule_config.with_durations(
                distillation, schedule_config.run_epochs(raw, SCHEMA["training"]["epochs"][1]))
            config[section] = errors.run(checks.section, section, distillation, fields)
        elif section in _OPTIONAL_SECTIONS and raw.get(section) is None:
            config[section] = None
        else:
            config[section] = errors.run(checks.section, section, raw.get(section), fields)
        if len(errors.messages) > before:
            failed.add(section)
    if not failed & {"distillation"}:
        errors.run(_check_loss_weights, config["distillation"])
    if not failed & {"teacher", "distillation"}:
        errors.run(_check_teacher_references, config)
    if "training" not in failed:
        errors.run(checks.check_training, config["training"])
    if "student" not in failed:
        errors.run(_check_student, config["student"])
    if "data" not in failed:
        errors.run(_check_transfer, config["data"])
    if "teacher" not in failed:
        for name, section in teacher_sections(config):
            if section["path"] is not None and section["builder"] is not None:
                role = "teacher" if name == "teacher" else f"teacher {name!r}"
                errors.add(f"The {role} has both a `path` and a `builder`: give one. "
                           f"Received: path={show(section['path'])}, "
                           f"builder={show(section['builder'])}")
    config["tuning"] = None
    if raw.get("tuning") is not None:
        config["tuning"] = errors.run(validate_tuning, raw["tuning"])
    _check_choices(config, failed, errors)
    teacher_fields = {k: v for k, v in SCHEMA["teacher"].items() if k != "preprocessing"}
    scheme_config.validate_scheme(scheme, raw, config, errors, teacher_fields)
    if raw.get("stages") is not None:  # only when given: older runs keep their fingerprint
        names = [] if "teacher" in failed else [name for name, _ in teacher_sections(config)]
        config["stages"] = errors.run(validate_stages, raw["stages"], config, SCHEMA, {
            "student": _check_student, "training": checks.check_training}, names)
    errors.raise_if_any()
    return config


def _check_loss_weights(distillation):
    weights = distillation["loss_weights"]
    n_losses = len(distillation["losses"])
    if weights is not None and len(weights) != n_losses:
        raise ConfigError(
            f"`distillation.loss_weights` has {len(weights)} entries for "
            f"{n_losses} losses. Received: distillation.loss_weights={show(weights)}"
        )


def _check_transfer(data):
    if data["unlabeled"] == "rest" and data["transfer_size"] is None:
        raise ConfigError(
            "`data.unlabeled: rest` distills the training examples outside the transfer "
            "set without labels, so it needs `data.transfer_size`. Received: "
            "data.transfer_size=None"
        )


def _check_student(student):
    if student["path"] is not None and student["builder"] is not None:
        raise ConfigError(
            "`student` has both a `path` and a `builder`: give one. Received: "
            f"student.path={show(student['path'])}, student.builder={show(student['builder'])}"
        )
    if student["keep_weights"] and student["path"] is None:
        raise ConfigError(
            "`student.keep_weights` applies to a student loaded from `student.path`. "
            "Received: student.keep_weights=True without a path"
        )


def _check_teacher_references(config):
    """Teacher weights, the ensemble and each loss's `teacher` name real teachers."""
    names = [name for name, _ in teacher_sections(config)]
    distillation = config["distillation"]
    several = len(names) > 1 or isinstance(config["teacher"], list)
    for key in ("teacher_weights", "ensemble"):
        if distillation[key] is not None and not several:
            raise ConfigError(
                f"`distillation.{key}` applies to several teachers: give `teacher` as "
                f"a list or a mapping of teachers. Received: distillation.{key}="
                f"{show(distillation[key])}"
            )
    weights = distillation["teacher_weights"]
    if isinstance(weights, list) and len(weights) != len(names):
        raise ConfigError(
            f"`distillation.teacher_weights` has {len(weights)} entries for "
            f"{len(names)} teachers {names}. Received: {show(weights)}"
        )
    if isinstance(weights, dict) and set(weights) != set(names):
        raise ConfigError(
            f"`distillation.teacher_weights` must name each teacher once: {names}. "
            f"Received: {sorted(weights)}"
        )
    for index, loss in enumerate(distillation["losses"]):
        teacher = loss.get("teacher") if isinstance(loss, dict) else None
        if teacher is not None and (not several or teacher not in names):
            raise ConfigError(
                f"`distillation.losses[{index}].teacher` must name one of the teachers "
                f"{names if several else '(there is only one)'}. Received: "
                f"teacher={show(teacher)}"
            )


def _check_choices(config, failed, errors):
    """Each model's architecture and size, and each teacher file, exist."""
    from tf_distill import architectures

    valid = architectures.names()
    roles = []
    if "teacher" not in failed:
        roles = [(f"teacher[{i}]" if isinstance(config["teacher"], list) else "teacher", section)
                 for i, (_, section) in enumerate(teacher_sections(config))]
    if "student" not in failed:
        roles.append(("student", config["student"]))
    for role, section in roles:
        if section.get("path") is not None or section.get("builder") is not None:
            continue
        name = section["architecture"]
        if name not in valid:
            errors.add(
                f"Invalid value for `{role}.architecture`. Expected one of "
                f"{valid}. Received: {role}.architecture={show(name)}"
            )
        size = section["size"]
        if size not in SIZES:
            errors.add(
                f"Invalid value for `{role}.size`. Expected one of "
                f"{list(SIZES)}. Received: {role}.size={show(size)}"
            )
    for role, section in roles:
        path = section.get("path")
        if path is not None and not os.path.isfile(path):
            errors.add(
                f"`{role}.path` is not a readable file. Received: {role}.path={show(path)}"
            )


def _expanded_size(node, sizes=None):
    """The number of nodes a YAML node expands to, each alias counted at each use."""
    sizes = {} if sizes is None else sizes
    if id(node) in sizes:
        return sizes[id(node)]
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = size
    return size


def parse(text, where="the config"):
    """Parses YAML text into a mapping, refusing documents that expand too far.

    Raises:
        ConfigError: for invalid YAML or a document of more than `MAX_NODES`
            nodes once its aliases are expanded (an "alias bomb").
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node) > MAX_NODES:
            raise ConfigError(
                f"{where} expands to more than {MAX_NODES:,} YAML nodes once its "
                "aliases (`*name`) are expanded; a config is far smaller. Write "
                "the values out, or remove the aliases."
            )
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        # PyYAML's own message spans several lines; its mark and problem say it in one.
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}.") from None


def load(path):
    """Reads and validates a YAML config file.

    Relative paths inside it (`data.source`, `teacher.path`, `output`) are
    resolved against the current directory, as a user typing them expects.

    Raises:
        ConfigError: if the file cannot be read, is not YAML, is empty, or is
            invalid.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(f"Cannot read the config file {path!r}: {error.strerror}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"The config file {path!r} is not UTF-8 text.") from None
    raw = parse(text, where=f"The config file {path!r}")
    if not raw:
        raise ConfigError(
            f"The config file {path!r} is empty. Give at least the sections to "
            "change (e.g. `data: {source: digits}`); `tf-distill demo` runs the "
            "default job."
        )
    return validate(raw)


def default():
    """The demo's config: Hinton's transfer set on the embedded digits.

    A CNN teacher learns from every training image; the MLP student, alone
    and distilled, from 100 of them with labels, and distillation also sees
    the other training images without labels, the common case of a big
    model and plenty of unlabeled data. Three paired seeds and a 719-image
    test split. Chosen from the candidates in docs/BENCHMARKS.md, "Demo
    setting", and checked on fresh seeds there (`bench/bench_demo.py`); with
    the labeled 100 images alone, distillation did not help.
    """
    return validate({
        "data": {"source": "digits", "test_size": 0.4, "transfer_size": 100,
                 "unlabeled": "rest"},
        "teacher": {"architecture": "cnn", "size": "large", "epochs": 10},
        "student": {"architecture": "mlp", "size": "medium"},
        "distillation": {"student_loss_weight": 0.5,
                         "losses": [{"name": "kd", "temperature": 4.0}]},
        "training": {"epochs": 30, "learning_rate": 0.005, "seeds": [0, 1, 2]},
        "output": "runs/demo",
    })
