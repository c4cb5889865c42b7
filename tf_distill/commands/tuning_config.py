"""The `tuning:` section of a config (`tf-distill tune`): its schema and checks."""

from tf_distill.commands import checks
from tf_distill.commands.caching import CACHE_MODES
from tf_distill.commands.checks import ConfigError


# The `tuning:` section of a config (`tf-distill tune`): key -> (check, default).
def _tuning_schema():
    # Imported here: keras_tuner loads only for `tf-distill tune`.
    from tf_distill.tuning import TUNERS

    return {
        "tuner": (checks.string(tuple(TUNERS)), "random"),
        "max_trials": (checks.number(low=1, integer=True), 10),
        "executions_per_trial": (checks.number(low=1, integer=True), 1),
        # The student's validation accuracy; a name with "loss" or "error" is minimized.
        "objective": (checks.string(), "val_accuracy"),
        "temperature_min": (checks.number(low=0, low_open=True), 1.0),
        "temperature_max": (checks.number(low=0, low_open=True), 20.0),
        "student_loss_weight_min": (checks.number(low=0, high=1), 0.0),
        "student_loss_weight_max": (checks.number(low=0, high=1), 1.0),
        "tune_learning_rate": (checks.boolean, False),
        "learning_rate_min": (checks.number(low=0, low_open=True), 1e-4),
        "learning_rate_max": (checks.number(low=0, low_open=True), 1e-2),
        "tune_width": (checks.boolean, False),
        "width_min": (checks.number(low=0, low_open=True), 0.5),
        "width_max": (checks.number(low=0, low_open=True), 2.0),
        "hyperband_factor": (checks.number(low=2, integer=True), 3),
        "overwrite": (checks.boolean, False),
        "cache": (checks.string(CACHE_MODES), "auto"),
        "seed": (checks.optional(checks.number(low=0, integer=True)), None),
        "max_consecutive_failed_trials": (checks.number(low=1, integer=True), 3),
        "wait_seconds": (checks.number(low=0, low_open=True), 600.0),
    }


TUNED_RANGES = ("temperature", "student_loss_weight", "learning_rate", "width")


def validate_tuning(section):
    """Checks a config's `tuning:` section and fills in defaults.

    Raises:
        ConfigError: for an unknown key, a wrong type, an out-of-range value
            or a range whose minimum exceeds its maximum.
    """
    result = checks.section("tuning", section, _tuning_schema())
    for name in TUNED_RANGES:
        low, high = result[f"{name}_min"], result[f"{name}_max"]
        if low > high:
            raise ConfigError(
                f"`tuning.{name}_min` must be <= `tuning.{name}_max`. Received: "
                f"tuning.{name}_min={low!r}, tuning.{name}_max={high!r}"
            )
    return result
