"""The optimizers a config or a search names, defined once.

`"sgd"` is SGD with momentum 0.9 everywhere (`tf-distill run`,
`tf-distill tune` and `DistillerHyperModel`): plain SGD without momentum is
rarely what a distillation run wants, and one name must mean one thing.
"""

from tf_distill.backend import keras

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


def make_optimizer(optimizer, learning_rate):
    """A new optimizer from a name in `OPTIMIZERS` or a factory.

    Args:
        optimizer: `"adam"`, `"adamw"`, `"sgd"` (momentum 0.9) or
            `"rmsprop"`; or a function `learning_rate -> optimizer`.
        learning_rate: The learning rate, > 0.

    Returns:
        A new `keras.optimizers.Optimizer`.

    Raises:
        ValueError: for an unknown name.

    Example:

    >>> make_optimizer("sgd", 0.01).momentum
    0.9
    """
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(learning_rate)
    if optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate)
    if optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    if optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    raise ValueError(
        f"Invalid value for argument `optimizer`. Expected one of {list(OPTIMIZERS)} "
        f"or a function of the learning rate. Received: optimizer={optimizer!r}"
    )
