"""The search space of a distillation: temperature, α, learning rate, width.

Each quantity is given as a number (fixed), a `(low, high)` tuple (a range;
log scale for the temperature, learning rate and width) or a list of choices.
"""

import math

from tf_distill import losses as losses_lib

# The searched hyperparameters: default, log scale, and the values allowed.
SPACES = {
    "temperature": {"default": 4.0, "log": True, "low": 0.0, "low_open": True, "high": None},
    "student_loss_weight": {
        "default": 0.5,
        "log": False,
        "low": 0.0,
        "low_open": False,
        "high": 1.0,
    },
    "learning_rate": {"default": 1e-3, "log": True, "low": 0.0, "low_open": True, "high": None},
    "width": {"default": 1.0, "log": True, "low": 0.0, "low_open": True, "high": None},
}


def check_space(name, space):
    """Checks a fixed value, a `(low, high)` range or a list of choices."""
    limits = SPACES[name]

    def check_value(value):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"`{name}` must be a number, a (low, high) range or a list of "
                f"choices. Received: {name}={space!r}"
            )
        low, high = limits["low"], limits["high"]
        if (value <= low if limits["low_open"] else value < low) or (
            high is not None and value > high
        ):
            bounds = f"{'>' if limits['low_open'] else '>='} {low}" + (
                f" and <= {high}" if high is not None else ""
            )
            raise ValueError(f"`{name}` values must be {bounds}. Received: {name}={space!r}")
        return float(value)

    if isinstance(space, tuple):
        if len(space) != 2:
            raise ValueError(
                f"A range for `{name}` is a (low, high) pair. Received: {name}={space!r}"
            )
        low, high = (check_value(v) for v in space)
        if low > high:
            raise ValueError(
                f"The range of `{name}` must have low <= high. Received: {name}={space!r}"
            )
        return (low, high) if low < high else low
    if isinstance(space, list):
        if not space:
            raise ValueError(f"The choices for `{name}` must not be empty. Received: {name}=[]")
        return [check_value(v) for v in space]
    return check_value(space)


def with_temperature(distillation_losses, temperature):
    """The losses with `temperature` set on every loss that has one.

    Args:
        distillation_losses: Losses, names or configs, one or a list.
        temperature: The temperature, > 0.

    Returns:
        A list of new `DistillationLoss` objects.

    Raises:
        ValueError: if no loss has a temperature (kd, dkd, dist).
    """
    if not isinstance(distillation_losses, (list, tuple)):
        distillation_losses = [distillation_losses]
    resolved = [losses_lib.get(loss) for loss in distillation_losses]
    result, found = [], False
    for loss in resolved:
        config = loss.get_config()
        if "temperature" in config:
            found = True
            loss = type(loss).from_config({**config, "temperature": float(temperature)})
        result.append(loss)
    if not found:
        raise ValueError(
            "Tuning the temperature needs a distillation loss with a "
            "temperature (such as 'kd', 'dkd' or 'dist'). Received: "
            f"distillation_losses={resolved!r}. Pass `temperature=None` to "
            "leave it out of the search."
        )
    return result
