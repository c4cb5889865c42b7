"""Job configs: YAML files read with `yaml.safe_load` and checked up front.

A config is data. Every section has a fixed set of keys with types, defaults
and ranges; an unknown key, a wrong type or an out-of-range value is an error
that names the key, lists the valid choices and shows what was received,
before any data is loaded or any model trained.

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

import copy
import math
import os

import yaml


class ConfigError(ValueError):
    """A config that cannot run, with a message that says how to fix it."""


def _number(low=None, high=None, low_open=False, integer=False):
    def check(path, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"`{path}` must be {kind}. Received: {path}={value!r}")
        if integer and not float(value).is_integer():
            raise ConfigError(f"`{path}` must be an integer. Received: {path}={value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"`{path}` must be finite. Received: {path}={value!r}")
        if low is not None and (value <= low if low_open else value < low):
            sign = ">" if low_open else ">="
            raise ConfigError(f"`{path}` must be {sign} {low}. Received: {path}={value!r}")
        if high is not None and value > high:
            raise ConfigError(f"`{path}` must be <= {high}. Received: {path}={value!r}")
        return int(value) if integer else float(value)

    return check


def _count_or_fraction(path, value):
    """A size: a count (int >= 1) or a fraction (float in (0, 1))."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"`{path}` must be a count (integer) or a fraction (0 < x < 1). "
            f"Received: {path}={value!r}"
        )
    if isinstance(value, int) and value < 0:
        raise ConfigError(f"`{path}` must be >= 0. Received: {path}={value!r}")
    if isinstance(value, float) and not 0.0 <= value < 1.0:
        raise ConfigError(
            f"`{path}` as a fraction must be in [0, 1). Received: {path}={value!r}"
        )
    return value


def _string(choices=None, allow_none=False):
    def check(path, value):
        if value is None and allow_none:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"`{path}` must be a non-empty string. Received: {path}={value!r}"
            )
        if choices is not None and value not in choices:
            raise ConfigError(
                f"Invalid value for `{path}`. Expected one of {sorted(choices)}. "
                f"Received: {path}={value!r}"
            )
        return value

    return check


def _boolean(path, value):
    if not isinstance(value, bool):
        raise ConfigError(f"`{path}` must be true or false. Received: {path}={value!r}")
    return value


def _optional(check):
    def optional(path, value):
        return None if value is None else check(path, value)

    return optional


def _mapping(path, value):
    if not isinstance(value, dict):
        raise ConfigError(f"`{path}` must be a mapping. Received: {path}={value!r}")
    return dict(value)


def _losses(path, value):
    from tf_distill import losses

    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"`{path}` must be a non-empty list of loss names or "
            f"{{name: ..., ...}} mappings. Received: {path}={value!r}"
        )
    for index, item in enumerate(value):
        try:
            losses.get(item)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"`{path}[{index}]`: {error}") from None
    return value


_OUTPUT_SIZES = ("small", "medium", "large")

# Each section: key -> (check, default). A default of `REQUIRED` must be given.
SCHEMA = {
    "data": {
        "source": (_string(), "digits"),
        "batch_size": (_number(low=1, integer=True), 64),
        "validation_size": (_optional(_count_or_fraction), None),
        "train_size": (_optional(_count_or_fraction), None),
        "test_size": (_optional(_count_or_fraction), None),
        "data_dir": (_optional(_string()), None),
        "seed": (_number(low=0, integer=True), 0),
    },
    "teacher": {
        "path": (_optional(_string()), None),
        "architecture": (_string(), "cnn"),
        "size": (_string(), "large"),
        "epochs": (_number(low=0, integer=True), 10),
        "learning_rate": (_number(low=0, low_open=True), 0.002),
        "teacher_outputs": (_string(("logits", "probabilities")), "logits"),
    },
    "student": {
        "architecture": (_string(), "cnn"),
        "size": (_string(), "small"),
    },
    "distillation": {
        "losses": (_losses, [{"name": "kd", "temperature": 4.0}]),
        "loss_weights": (_optional(lambda p, v: _number_list(p, v)), None),
        "student_loss_weight": (_number(low=0, high=1), 0.5),
    },
    "training": {
        "epochs": (_number(low=0, integer=True), 10),
        "learning_rate": (_number(low=0, low_open=True), 0.002),
        "optimizer": (_string(("adam", "sgd", "rmsprop", "adamw")), "adam"),
        "seed": (_number(low=0, integer=True), 0),
        "baseline": (_boolean, True),
        "jit_compile": (_optional(_boolean), None),
        # "mirrored": the GPUs of one machine; "multi_worker": processes or
        # machines started with TF_CONFIG (docs/DISTRIBUTED.md).
        "distribute": (_string(("none", "mirrored", "multi_worker")), "none"),
        # Teacher outputs computed once, not every epoch: "auto" caches in
        # memory, or memory-mapped on disk for large data; "off" distills online.
        "cache": (_string(("auto", "memory", "disk", "off")), "auto"),
    },
    "export": {
        "quantization": (_string(("float32", "dynamic", "float16", "int8")), "int8"),
        "max_accuracy_drop": (_number(), 1.0),
        "int8_io": (_boolean, False),
        "allow_tf_ops": (_boolean, False),
        "latency_runs": (_number(low=1, integer=True), 200),
        "representative_size": (_number(low=1, integer=True), 200),
        "per_channel": (_boolean, True),
    },
}
_TOP_LEVEL = {
    "output": (_string(), "runs/tf_distill"),
    "unsafe": (_boolean, False),
}
_OPTIONAL_SECTIONS = ("export",)


def _number_list(path, value):
    if not isinstance(value, list):
        raise ConfigError(f"`{path}` must be a list of numbers. Received: {path}={value!r}")
    return [_number(low=0)(f"{path}[{i}]", v) for i, v in enumerate(value)]


def _check_keys(path, given, valid):
    unknown = sorted(set(given) - set(valid))
    if unknown:
        where = f"section `{path}`" if path else "the config's top level"
        raise ConfigError(
            f"Unknown key(s) {unknown} in {where}. Valid keys: {sorted(valid)}."
        )


def validate(raw):
    """Checks a config mapping and fills in defaults.

    Args:
        raw: The mapping read from YAML (or built in Python).

    Returns:
        A new dict with every section and key present.

    Raises:
        ConfigError: naming the first key that is unknown, of the wrong type
            or out of range, with the valid choices.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"A config must be a mapping of sections. Received: {type(raw).__name__}"
        )
    _check_keys("", raw, list(SCHEMA) + ["tuning"] + list(_TOP_LEVEL))
    config = {}
    for key, (check, default) in _TOP_LEVEL.items():
        config[key] = check(key, raw[key]) if key in raw else default
    for section, fields in SCHEMA.items():
        if section in _OPTIONAL_SECTIONS and raw.get(section) is None:
            config[section] = None
            continue
        given = raw.get(section) or {}
        given = _mapping(section, given)
        _check_keys(section, given, fields)
        config[section] = {}
        for key, (check, default) in fields.items():
            path = f"{section}.{key}"
            value = given[key] if key in given else copy.deepcopy(default)
            config[section][key] = check(path, value) if value is not None or key in given else value
    weights = config["distillation"]["loss_weights"]
    n_losses = len(config["distillation"]["losses"])
    if weights is not None and len(weights) != n_losses:
        raise ConfigError(
            f"`distillation.loss_weights` has {len(weights)} entries for "
            f"{n_losses} losses. Received: distillation.loss_weights={weights!r}"
        )
    if raw.get("tuning") is not None:
        # Imported here: keras_tuner loads only for `tf-distill tune`.
        from tf_distill.tuning import validate_tuning

        config["tuning"] = validate_tuning(raw["tuning"])
    else:
        config["tuning"] = None
    _check_choices(config)
    return config


def _check_choices(config):
    from tf_distill import architectures

    valid = architectures.names()
    for role in ("teacher", "student"):
        name = config[role]["architecture"]
        if name not in valid:
            raise ConfigError(
                f"Invalid value for `{role}.architecture`. Expected one of "
                f"{valid}. Received: {role}.architecture={name!r}"
            )
        size = config[role]["size"]
        if size not in _OUTPUT_SIZES:
            raise ConfigError(
                f"Invalid value for `{role}.size`. Expected one of "
                f"{list(_OUTPUT_SIZES)}. Received: {role}.size={size!r}"
            )
    path = config["teacher"]["path"]
    if path is not None and not os.path.isfile(path):
        raise ConfigError(f"`teacher.path` is not a readable file. Received: teacher.path={path!r}")


def load(path):
    """Reads and validates a YAML config file.

    Relative paths inside it (`data.source`, `teacher.path`, `output`) are
    resolved against the current directory, as a user typing them expects.

    Raises:
        ConfigError: if the file cannot be read, is not YAML, or is invalid.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(f"Cannot read the config file {path!r}: {error.strerror}.") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"The config file {path!r} is not valid YAML: {error}") from None
    return validate(raw)


def default():
    """The demo's config: the embedded digits, CNN teacher and student."""
    return validate({"output": "runs/demo"})
