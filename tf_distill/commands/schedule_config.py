"""Schedules in a config: `{schedule: cosine, start: 8, end: 2}` for a number.

The `distillation` section accepts a schedule (see `tf_distill.schedules`)
wherever it takes a temperature or a weight: a loss's `temperature`,
`student_loss_weight` and each of `loss_weights`:

```yaml
distillation:
  student_loss_weight: {schedule: linear, start: 0.9, end: 0.1}
  losses: [{name: kd, temperature: {schedule: cosine, start: 8, end: 2}}]
  loss_weights: [{schedule: step, values: [0.5, 1.0], boundaries: [5]}]
```

An epoch-unit schedule without `duration` lasts the whole run
(`training.epochs`). The mapping stays data in the checked config; the
`Distiller` and the losses read it as they read a number.
"""

import copy

from tf_distill.commands import checks
from tf_distill.commands.checks import ConfigError
from tf_distill.commands.checks import show

DURATION = "duration"


def _is_schedule(value):
    return isinstance(value, dict) and "schedule" in value


def with_durations(distillation, epochs):
    """A copy of a raw `distillation` section whose epoch schedules without a
    `duration` last `epochs` (the run's `training.epochs`)."""
    if not isinstance(distillation, dict):
        return distillation
    distillation = copy.deepcopy(distillation)

    def fill(value):
        if _is_schedule(value) and value.get("schedule") in ("linear", "cosine"):
            if DURATION not in value and value.get("unit", "epoch") == "epoch":
                value[DURATION] = epochs
        return value

    fill(distillation.get("student_loss_weight"))
    for key in ("loss_weights", "losses"):
        items = distillation.get(key)
        for item in items if isinstance(items, list) else [items]:
            fill(item)
            if isinstance(item, dict) and "name" in item:
                for value in item.values():
                    fill(value)
    return distillation


def run_epochs(raw, default):
    """`training.epochs` of a raw config when valid, else `default` (the schema's)."""
    training = raw.get("training") if isinstance(raw, dict) else None
    epochs = training.get("epochs") if isinstance(training, dict) else None
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1:
        return epochs
    return default


def number_or_schedule(low=None, high=None, low_open=False):
    """A check: a number in range, or a schedule whose values stay in range.

    `tf_distill.schedules.number_or_schedule` decides; this check only
    says it as a `ConfigError` with the config's path.
    """
    as_number = checks.number(low=low, high=high, low_open=low_open)

    def check(path, value):
        if not isinstance(value, dict):
            return as_number(path, value)
        from tf_distill import schedules

        if "schedule" not in value:
            raise ConfigError(
                f"`{path}` must be a number or a schedule mapping {{schedule: "
                f"{'|'.join(schedules.SCHEDULES)}, ...}}. Received: {path}={show(value)}"
            )
        try:
            schedules.number_or_schedule(path, value, as_number, low=low, high=high,
                                         low_open=low_open)
        except ValueError as error:
            # `check_range` prefixes a malformed schedule's error with the argument.
            message = str(error).replace(f"Invalid value for argument `{path}`: ", "")
            raise ConfigError(message if message == str(error) else f"`{path}`: {message}"
                              ) from None
        return dict(value)

    return check


def weight_list(path, value):
    """`loss_weights`: a list of numbers >= 0 or schedules."""
    if not isinstance(value, list):
        raise ConfigError(
            f"`{path}` must be a list of numbers or schedules. Received: {path}={show(value)}"
        )
    check = number_or_schedule(low=0)
    return [check(f"{path}[{i}]", item) for i, item in enumerate(value)]
