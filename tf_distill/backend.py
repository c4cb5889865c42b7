"""Which Keras tf_distill runs on: Keras 3 by default, tf_keras on request.

TensorFlow Model Optimization (pruning, quantization-aware training) accepts
only tf_keras (Keras 2) models. Setting `TF_USE_LEGACY_KERAS=1` before
importing tf_distill makes every part of the package run on tf_keras, the same
switch TensorFlow itself honours for `tf.keras`.
"""

import contextlib
import os
import re
import sys
import tempfile

# Lines TensorFlow's C++ runtime writes to stderr when it starts, before absl
# logging is set up, so that TF_CPP_MIN_LOG_LEVEL cannot filter them: CUDA
# probing on a machine without a GPU, CPU-feature and oneDNN notices.
STARTUP_NOISE = re.compile(
    r"absl::InitializeLog\(\)|cudart_stub\.cc|cuda_(platform|executor|dnn|fft|blas)\.cc"
    r"|failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered|oneDNN custom operations are on"
    r"|This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate compiler"
)


@contextlib.contextmanager
def startup_noise_filtered():
    """Drops `STARTUP_NOISE` lines from what the process writes to stderr (fd 2).

    Everything else written meanwhile is written back afterwards, so a real
    warning or error is not lost, only delayed to the end of the block.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                if not STARTUP_NOISE.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in (
    "1",
    "true",
    "yes",
)

with startup_noise_filtered():
    import tensorflow as tf

    if LEGACY_KERAS:
        import tf_keras as keras  # noqa: F401
    else:
        import keras  # noqa: F401
    # Finding the devices prints the CUDA lines once, here. It does not start
    # TensorFlow's runtime: a multi-worker strategy can still be made after it.
    tf.config.list_physical_devices()

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
