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
