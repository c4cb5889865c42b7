"""Losses with per-example state (CRD's memory banks) in `tf-distill run`.

Such a loss names `"example_indices"` among its `call_arguments`. A job then
gives it what a user of the Python API gives by hand: its `num_examples`
(the banks' rows), when the config leaves it out, is the size of the
training split it distills on, and the training pipeline (cached or not)
carries each example's index in that split. Validation batches carry none
(indices always name rows of the training set's banks).
"""

from tf_distill import losses as losses_lib
from tf_distill.batches import EXAMPLE_INDICES
from tf_distill.commands.checks import ConfigError
from tf_distill.losses.base import call_arguments


def asks_for_example_indices(loss):
    """Whether a loss (an object, a name or a config mapping) reads example indices."""
    if isinstance(loss, (str, dict)):
        loss = losses_lib.get(loss)
    return EXAMPLE_INDICES in call_arguments(loss)


def any_asks(distillation_losses):
    """Whether any of a Distiller's (or a config's) losses reads example indices."""
    return any(asks_for_example_indices(loss) for loss in distillation_losses or ())


def with_num_examples(losses, num_examples, path="distillation.losses"):
    """A config's losses as loss objects, `num_examples` given where a loss needs it.

    Args:
        losses: The loss configs (names or mappings) of a validated config.
        num_examples: The size of the training split distilled on (`None`:
            none is given).
        path: The config key of `losses`, for error messages.

    Returns:
        A new list of `DistillationLoss`es: a loss that reads example
        indices and was given no `num_examples` gets `num_examples`.

    Raises:
        ConfigError: for a loss the training split is too small for (say,
            CRD's `num_negatives` not below `num_examples`).
    """
    result = []
    for index, item in enumerate(losses):
        loss = losses_lib.get(item)
        if (num_examples is not None and isinstance(item, (str, dict))
                and EXAMPLE_INDICES in call_arguments(loss)
                and loss.get_config().get("num_examples") is None):
            try:
                loss = losses_lib.get(item, num_examples=int(num_examples))
            except ValueError as error:
                raise ConfigError(
                    f"`{path}[{index}]` does not fit the {num_examples} training examples "
                    f"it distills on: {error}"
                ) from None
        result.append(loss)
    return result
