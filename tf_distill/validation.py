"""Argument checks shared by the library's modules, with Keras-style messages."""


def check_choice(argument, value, choices):
    """Raises `ValueError` unless `value` is one of `choices`.

    The message names the argument, the valid choices and what was received:
    ``Invalid value for argument `ensemble`. Expected one of [...]. Received:
    ensemble='x'``.
    """
    if value not in choices:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one of {list(choices)}. "
            f"Received: {argument}={value!r}"
        )


def check_positive_integer(argument, value):
    """Raises `ValueError` unless `value` is an `int` (not a bool) > 0.

    ``` `inference_batch_size` must be an integer > 0. Received:
    inference_batch_size=0```.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{argument}` must be an integer > 0. Received: {argument}={value!r}")
