"""The optimizers a config or a search names, defined once.

`"sgd"` is SGD with momentum 0.9 everywhere (`tf-distill run`,
`tf-distill tune` and `DistillerHyperModel`): plain SGD without momentum is
rarely what a distillation run wants, and one name must mean one thing.
"""

from tf_distill.backend import keras
from tf_distill.validation import check_choice

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(learning_rate, schedule="constant", total_steps=None,
                           warmup_steps=0):
    """The learning rate of a run, constant or a cosine decay after a warm-up.

    Args:
        learning_rate: The peak learning rate, > 0.
        schedule: `"constant"`, or `"cosine"`: a linear warm-up from 0 to
            `learning_rate` over `warmup_steps`, then a cosine decay to 0 at
            `total_steps` (Loshchilov & Hutter 2017, SGDR).
        total_steps: The run's number of optimizer steps (for `"cosine"`).
        warmup_steps: Steps of linear warm-up (for `"cosine"`).

    Returns:
        `learning_rate` itself, or a `keras.optimizers.schedules.CosineDecay`.

    Raises:
        ValueError: for an unknown schedule, or `"cosine"` without
            `total_steps`.

    Example:

    >>> rate = learning_rate_schedule(0.1, "cosine", total_steps=100, warmup_steps=10)
    >>> round(float(rate(10)), 6)
    0.1
    """
    if schedule == "constant":
        return learning_rate
    check_choice("schedule", schedule, SCHEDULES)
    if not total_steps or total_steps < 1:
        raise ValueError(
            "A cosine schedule needs `total_steps` >= 1 (epochs × batches per epoch). "
            f"Received: total_steps={total_steps!r}"
        )
    warmup_steps = min(int(warmup_steps), int(total_steps) - 1)
    if warmup_steps <= 0:
        return keras.optimizers.schedules.CosineDecay(learning_rate, int(total_steps), alpha=0.0)
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        int(total_steps) - warmup_steps,
        alpha=0.0,
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )


def make_optimizer(optimizer, learning_rate, weight_decay=None, clipnorm=None):
    """A new optimizer from a name in `OPTIMIZERS` or a factory.

    Args:
        optimizer: `"adam"`, `"adamw"`, `"sgd"` (momentum 0.9) or
            `"rmsprop"`; or a function `learning_rate -> optimizer`.
        learning_rate: The learning rate, > 0, or a schedule
            (`learning_rate_schedule`).
        weight_decay: Decoupled weight decay (the optimizer's own
            `weight_decay` argument); `None` keeps the optimizer's default
            (none, or 0.004 for AdamW).
        clipnorm: Clip each gradient to this norm; `None` for no clipping.

    Returns:
        A new `keras.optimizers.Optimizer`.

    Raises:
        ValueError: for an unknown name, or `weight_decay`/`clipnorm` with a
            factory (it makes its own optimizer).

    Example:

    >>> make_optimizer("sgd", 0.01).momentum
    0.9
    """
    options = {}
    if weight_decay is not None:
        options["weight_decay"] = weight_decay
    if clipnorm is not None:
        options["clipnorm"] = clipnorm
    if callable(optimizer) and not isinstance(optimizer, str):
        if options:
            raise ValueError(
                "`weight_decay` and `clipnorm` apply to a named optimizer; a factory "
                f"makes its own. Received: {options} with optimizer={optimizer!r}"
            )
        return optimizer(learning_rate)
    if optimizer == "adam":
        return keras.optimizers.Adam(learning_rate, **options)
    if optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, **options)
    if optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, **options)
    if optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, **options)
    raise ValueError(
        f"Invalid value for argument `optimizer`. Expected one of {list(OPTIMIZERS)} "
        f"or a function of the learning rate. Received: optimizer={optimizer!r}"
    )
