"""The library's argument checks, one of each, with Keras-style messages.

Every message names the argument, what was expected and what was received:
``Invalid value for argument `ensemble`. Expected one of [...]. Received:
ensemble='x'``. Checks of a value that may be a schedule live beside the
schedules (`tf_distill.schedules.check_loss_weight`).
"""

import numbers


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


def check_count(argument, value):
    """Returns `value` as an `int` if it is an integer (NumPy's too) >= 1.

    ``` `epochs` must be an integer >= 1. Received: epochs=0```.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{argument}` must be an integer >= 1. Received: {argument}={value!r}")
    return int(value)


def check_non_negative_integer(argument, value):
    """Raises `ValueError` unless `value` is an `int` (not a bool) >= 0.

    ``` `warmup_steps` must be an integer >= 0. Received: warmup_steps=-1```.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{argument}` must be an integer >= 0. Received: {argument}={value!r}")


def check_positive(argument, value):
    """Raises `ValueError` unless `value` is a real number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{argument}` must be a number > 0. Received: {argument}={value!r}")
    if not value > 0:
        raise ValueError(f"`{argument}` must be > 0. Received: {argument}={value!r}")


def check_non_negative(argument, value):
    """Raises `ValueError` unless `value` is a real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{argument}` must be a number >= 0. Received: {argument}={value!r}")
    if not value >= 0:
        raise ValueError(f"`{argument}` must be >= 0. Received: {argument}={value!r}")


def check_unit_interval(argument, value):
    """Raises `ValueError` unless `value` is a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{argument}` must be a number in [0, 1]. Received: {argument}={value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{argument}` must be in [0, 1]. Received: {argument}={value!r}")


def check_teacher_identifier(teacher):
    """Returns `teacher` if it can name a teacher (a name, an index or None)."""
    if teacher is None or isinstance(teacher, str):
        return teacher
    if isinstance(teacher, int) and not isinstance(teacher, bool) and teacher >= 0:
        return teacher
    raise ValueError(
        "Invalid value for argument `teacher`. Expected a teacher's name (a "
        f"string), its index (an integer >= 0) or None. Received: teacher={teacher!r}"
    )
