"""The arguments an export accepts, and their checks.

Every check runs before converting anything: conversion takes seconds, and a
mistyped argument should not cost them.
"""

import math

from tf_distill.backend import tf
from tf_distill.catalog import QUANTIZATION_MODES
from tf_distill.validation import check_choice

# The modes with integer weights, which have a scale per channel or per tensor.
PER_CHANNEL_MODES = ("dynamic", "int8")


def check_quantization(quantization):
    """Raises `ValueError` unless `quantization` is one of `QUANTIZATION_MODES`."""
    check_choice("quantization", quantization, QUANTIZATION_MODES)


def check_per_channel(per_channel, quantization):
    """Raises `ValueError` for a non-bool, or `False` in a float mode."""
    if not isinstance(per_channel, bool):
        raise ValueError(f"`per_channel` must be a bool. Received: per_channel={per_channel!r}")
    if not per_channel and quantization not in PER_CHANNEL_MODES:
        raise ValueError(
            "`per_channel=False` applies to the integer weights of "
            f"quantization='dynamic' or 'int8'; {quantization} weights have no "
            f"scales. Received: quantization={quantization!r}, per_channel=False"
        )


def check_verification_arguments(max_accuracy_drop, latency_runs, num_threads):
    """Checks `verify_litert`'s numbers."""
    if (
        isinstance(max_accuracy_drop, bool)
        or not isinstance(max_accuracy_drop, (int, float))
        or not math.isfinite(max_accuracy_drop)
    ):
        raise ValueError(
            "`max_accuracy_drop` must be a finite number of percentage points. "
            f"Received: max_accuracy_drop={max_accuracy_drop!r}"
        )
    check_count("latency_runs", latency_runs, minimum=0)
    check_count("num_threads", num_threads, minimum=1)


def check_count(name, value, minimum):
    """Raises `ValueError` unless `value` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")


def check_single_input_output(model):
    """Raises `ValueError` for a model with several inputs or outputs."""
    for attribute in ("inputs", "outputs"):
        tensors = getattr(model, attribute, None)
        if tensors is not None and len(tf.nest.flatten(tensors)) > 1:
            raise ValueError(
                "export_litert supports models with one input and one output. "
                f"Received a model with {len(tf.nest.flatten(tensors))} "
                f"{attribute}."
            )
