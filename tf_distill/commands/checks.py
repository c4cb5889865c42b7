"""The checks every config value goes through: one set, for every section.

Each check takes the value's dotted path (for the message) and the value, and
returns the value normalized or raises `ConfigError` saying what was expected
and what was received, the received value shown at most `MAX_SHOWN` long.
"""

import copy
import difflib
import math

# A received value is shown at most this long in a message: a config value can
# be arbitrarily large (a YAML alias bomb expands to gigabytes).
MAX_SHOWN = 80


class ConfigError(ValueError):
    """A config that cannot run, with a message that says how to fix it.

    Attributes:
        messages: Each error it reports (one, or every error of a config).
    """

    def __init__(self, message, messages=None):
        super().__init__(message)
        self.messages = list(messages) if messages else [message]


class Collector:
    """Runs checks and keeps every `ConfigError`, so that all are reported at once.

    Example:

    >>> errors = Collector()
    >>> epochs = errors.run(number(low=1), "training.epochs", 0)
    >>> errors.raise_if_any()  # raises, listing every error collected
    """

    def __init__(self):
        self.messages = []

    def add(self, message):
        """Keeps one more error message."""
        self.messages.append(message)

    def run(self, check, *args, default=None):
        """`check(*args)`, or `default` after keeping its `ConfigError`."""
        try:
            return check(*args)
        except ConfigError as error:
            self.messages.extend(error.messages)
            return default

    def raise_if_any(self):
        """Raises one `ConfigError` listing every message collected, if any."""
        if len(self.messages) == 1:
            raise ConfigError(self.messages[0])
        if self.messages:
            listed = "; ".join(
                f"({number}) {message.rstrip('.')}"
                for number, message in enumerate(self.messages, 1)
            )
            raise ConfigError(
                f"{len(self.messages)} errors in the config: {listed}.", self.messages
            )


def show(value):
    """`repr(value)`, cut to `MAX_SHOWN` characters: safe in any message."""
    text = reprlib_repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def reprlib_repr(value):
    # `reprlib` bounds the work as well as the length: a huge nested value is
    # never expanded in full.
    import reprlib

    shower = reprlib.Repr()
    shower.maxstring = shower.maxother = MAX_SHOWN
    shower.maxlist = shower.maxdict = shower.maxtuple = shower.maxset = 8
    shower.maxlevel = 3
    return shower.repr(value)


def number(low=None, high=None, low_open=False, integer=False):
    def check(path, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"`{path}` must be {kind}. Received: {path}={show(value)}")
        if integer and not float(value).is_integer():
            raise ConfigError(f"`{path}` must be an integer. Received: {path}={show(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"`{path}` must be finite. Received: {path}={show(value)}")
        if low is not None and (value <= low if low_open else value < low):
            sign = ">" if low_open else ">="
            raise ConfigError(f"`{path}` must be {sign} {low}. Received: {path}={show(value)}")
        if high is not None and value > high:
            raise ConfigError(f"`{path}` must be <= {high}. Received: {path}={show(value)}")
        return int(value) if integer else float(value)

    return check


def count_or_fraction(path, value):
    """A size: a count (int >= 1) or a fraction (float in (0, 1))."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"`{path}` must be a count (integer) or a fraction (0 < x < 1). "
            f"Received: {path}={show(value)}"
        )
    if isinstance(value, int) and value < 0:
        raise ConfigError(f"`{path}` must be >= 0. Received: {path}={show(value)}")
    if isinstance(value, float) and not 0.0 <= value < 1.0:
        raise ConfigError(
            f"`{path}` as a fraction must be in [0, 1). Received: {path}={show(value)}"
        )
    return value


def string(choices=None, allow_none=False):
    def check(path, value):
        if value is None and allow_none:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"`{path}` must be a non-empty string. Received: {path}={show(value)}"
            )
        if choices is not None and value not in choices:
            raise ConfigError(
                f"Invalid value for `{path}`. Expected one of {sorted(choices)}. "
                f"Received: {path}={show(value)}"
            )
        return value

    return check


def boolean(path, value):
    if not isinstance(value, bool):
        raise ConfigError(f"`{path}` must be true or false. Received: {path}={show(value)}")
    return value


def optional(check):
    def optional(path, value):
        return None if value is None else check(path, value)

    return optional


def mapping(path, value):
    if not isinstance(value, dict):
        raise ConfigError(f"`{path}` must be a mapping. Received: {path}={show(value)}")
    return dict(value)



def builder(path, value):
    """A model builder: `package.module:function`."""
    import re

    if not isinstance(value, str) or not re.fullmatch(
        r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", value
    ):
        raise ConfigError(
            f"`{path}` must be `package.module:function`, a function "
            "`(input_shape, num_classes) -> keras.Model`. Received: "
            f"{path}={show(value)}"
        )
    return value


def seed_list(path, value):
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"`{path}` must be a non-empty list of seeds (integers >= 0). "
            f"Received: {path}={show(value)}"
        )
    seeds = [number(low=0, integer=True)(f"{path}[{i}]", v) for i, v in enumerate(value)]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"`{path}` must not repeat a seed. Received: {path}={show(value)}")
    return seeds


def teacher_weights(path, value):
    if isinstance(value, dict):
        return {str(k): number(low=0)(f"{path}.{k}", v) for k, v in value.items()}
    return number_list(path, value)


def number_list(path, value):
    if not isinstance(value, list):
        raise ConfigError(f"`{path}` must be a list of numbers. Received: {path}={show(value)}")
    return [number(low=0)(f"{path}[{i}]", v) for i, v in enumerate(value)]



def check_keys(path, given, valid):
    unknown = sorted(set(given) - set(valid))
    if unknown:
        where = f"section `{path}`" if path else "the config's top level"
        close = [(key, difflib.get_close_matches(str(key), [str(v) for v in valid], n=1,
                                                 cutoff=0.6)) for key in unknown]
        hints = [f"{match[0]!r} for {key!r}" for key, match in close if match]
        hint = f" Did you mean {', '.join(hints)}?" if hints else ""
        raise ConfigError(
            f"Unknown key(s) {unknown} in {where}.{hint} Valid keys: {sorted(valid)}."
        )


def section(path, given, fields):
    """Checks one section's keys and values; fills in its defaults."""
    given = mapping(path, given or {})
    errors = Collector()
    errors.run(check_keys, path, given, fields)
    result = {}
    for key, (check, default) in fields.items():
        value = given[key] if key in given else copy.deepcopy(default)
        if value is not None or key in given:
            value = errors.run(check, f"{path}.{key}", value)
        result[key] = value
    errors.raise_if_any()
    return result


def preprocessing_steps(path, value):
    """A teacher's `preprocessing:`: a list of safe steps (`teachers.PREPROCESSING_STEPS`)."""
    from tf_distill.teachers import preprocessing_layers

    try:
        preprocessing_layers(value, argument_name=path)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return value


def loss_list(path, value):
    """A `losses:` entry: a name, a config mapping, or a non-empty list of them."""
    from tf_distill import losses

    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"`{path}` must be a non-empty list of loss names or "
            f"{{name: ..., ...}} mappings. Received: {path}={show(value)}"
        )
    errors = Collector()
    for index, item in enumerate(value):
        try:
            losses.get(item)
        except (ValueError, TypeError) as error:
            errors.add(f"`{path}[{index}]`: {error}")
    errors.raise_if_any()
    return value


def check_training(training):
    """The `training:` keys that depend on each other: the warm-up and the schedule."""
    warmup = training["warmup_epochs"]
    if warmup and training["schedule"] != "cosine":
        raise ConfigError(
            "`training.warmup_epochs` applies to `training.schedule: cosine`. Received: "
            f"training.schedule={show(training['schedule'])}, training.warmup_epochs={warmup}"
        )
    if warmup >= training["epochs"]:
        raise ConfigError(
            "`training.warmup_epochs` must be < `training.epochs` (the cosine decay "
            f"needs an epoch). Received: training.warmup_epochs={warmup}, "
            f"training.epochs={training['epochs']}"
        )
