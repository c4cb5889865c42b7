"""Loading and saving models safely.

A `.keras` file can name any class and hold a `Lambda` layer's bytecode.
tf_distill loads teachers and students with Keras's `safe_mode`, which refuses
both, unless the user explicitly trusts the file (`unsafe=True`, the
`--unsafe` flag). Legacy `.h5` files are refused by default: Keras ignores
safe mode for them. Saving goes through a temporary file, so a crash never
leaves a half-written model where a good one was.
"""

import os

from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import check_safe_keras
from tf_distill.backend import keras
from tf_distill.files import atomic_path

_LEGACY_SUFFIXES = (".h5", ".hdf5")


class UnsafeModelError(ValueError):
    """A model file that cannot be loaded without trusting its author."""


def load_model(path, unsafe=False, custom_objects=None):
    """Loads a `.keras` model without running code from the file.

    Args:
        path: A `.keras` file.
        unsafe: Trust the file: allow `Lambda` layers and legacy `.h5`
            files. Only for files you made or trust.
        custom_objects: Classes the file may name, as for
            `keras.models.load_model`.

    Returns:
        The model, not compiled.

    Raises:
        FileNotFoundError: if `path` does not exist.
        UnsafeModelError: for a `.h5` file, or a file holding a `Lambda`
            layer or an unknown class, unless `unsafe=True`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in _LEGACY_SUFFIXES and not unsafe:
        raise UnsafeModelError(
            f"Refusing to load the legacy HDF5 model {path!r}: Keras ignores "
            "safe mode for `.h5` files, so a hostile file could run code. "
            "Re-save it as `.keras`, or pass `unsafe=True` (`--unsafe`) if you "
            "trust its author."
        )
    check_safe_keras()
    kwargs = {"compile": False, "custom_objects": custom_objects}
    if not LEGACY_KERAS or suffix == ".keras":
        kwargs["safe_mode"] = not unsafe
    try:
        return keras.models.load_model(path, **kwargs)
    except (ValueError, TypeError) as error:
        message = str(error)
        if not unsafe and ("Lambda" in message or "safe_mode" in message or "unsafe" in message):
            raise UnsafeModelError(
                f"Refusing to load {path!r}: it holds a `Lambda` layer, whose "
                "code would run on load. Pass `unsafe=True` (`--unsafe`) only "
                f"if you trust its author. (Keras: {message.splitlines()[0]})"
            ) from None
        if "Could not locate" in message or "Unknown" in message:
            raise UnsafeModelError(
                f"Cannot load {path!r}: it names a class that is not "
                "registered here (Keras: "
                f"{message.splitlines()[0]}). Import the module that defines "
                "it, or pass it in `custom_objects`."
            ) from None
        raise


def save_model(model, path):
    """Saves `model` to `path` atomically; returns the file's size in bytes."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        model.save(tmp)
    return os.path.getsize(path)
