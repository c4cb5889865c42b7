"""Which Keras tf_distill runs on: Keras 3 by default, tf_keras on request.

TensorFlow Model Optimization (pruning, quantization-aware training) accepts
only tf_keras (Keras 2) models. Setting `TF_USE_LEGACY_KERAS=1` before
importing tf_distill makes every part of the package run on tf_keras, the same
switch TensorFlow itself honours for `tf.keras`.
"""

import os

import tensorflow as tf

LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in (
    "1",
    "true",
    "yes",
)

if LEGACY_KERAS:
    import tf_keras as keras  # noqa: F401
else:
    import keras  # noqa: F401

# Older Keras 3 releases had safe-mode bypasses in their `.keras` loader
# (CVE-2025-1550, CVE-2025-8747, CVE-2025-9906: a hostile file could run code
# even with `safe_mode=True`); all were fixed before 3.13, the oldest release
# tf_distill is tested with. Model loading refuses anything older.
MINIMUM_SAFE_KERAS = (3, 13, 0)


def keras_version():
    """The running Keras version as a tuple of ints (`(3, 15, 1)`)."""
    parts = []
    for part in keras.__version__.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_safe_keras():
    """Raise if the running Keras 3 has a known model-loading vulnerability."""
    if LEGACY_KERAS:
        return
    if keras_version() < MINIMUM_SAFE_KERAS:
        raise RuntimeError(
            "tf_distill refuses to load model files with Keras "
            f"{keras.__version__}: versions before "
            f"{'.'.join(map(str, MINIMUM_SAFE_KERAS))} can run code from a "
            "hostile `.keras` file even in safe mode. Upgrade with "
            "`pip install -U keras`."
        )


def register_serializable(name=None):
    """`keras.saving.register_keras_serializable` under package tf_distill."""
    return keras.saving.register_keras_serializable(package="tf_distill", name=name)


__all__ = ["tf", "keras", "LEGACY_KERAS", "check_safe_keras", "keras_version"]
