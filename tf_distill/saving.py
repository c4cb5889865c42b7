"""Loading and saving models safely.

A `.keras` file can name any class and hold a `Lambda` layer's bytecode.
tf_distill loads teachers and students with Keras's `safe_mode`, which refuses
both, unless the user explicitly trusts the file (`unsafe=True`, the
`--unsafe` flag). Legacy `.h5` files are refused by default: Keras ignores
safe mode for them. A file that cannot be loaded, for whatever reason, raises
a `ModelFileError` whose one-line message names the file and what is wrong
with it. Saving goes through a temporary file, so a crash never leaves a
half-written model where a good one was.
"""

import os
import re
import zipfile

from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import check_safe_keras
from tf_distill.backend import keras
from tf_distill.files import atomic_path

_LEGACY_SUFFIXES = (".h5", ".hdf5")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Keras's messages quote whole layer configs; a one-line error keeps this much.
_MAX_REASON_CHARS = 200


class ModelFileError(ValueError):
    """A model file that cannot be loaded: damaged, truncated, or not buildable.

    Its message is one line naming the file and what is wrong with it.
    """


class UnsafeModelError(ModelFileError):
    """A model file that cannot be loaded without trusting its author."""


def _first_sentence(message):
    """The innermost cause in a Keras error message, on one bounded line.

    Keras nests errors ("… Exception encountered: …") and appends whole
    configs ("Full object config: {…}"); the last cause's first sentence says
    what is wrong.
    """
    text = str(message).rsplit("Exception encountered:", 1)[-1]
    text = text.split("Full object config")[0]
    text = " ".join(text.split())
    text = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 1] + "…"
    return text.rstrip(".")


def _check_keras_archive(path):
    """Raises `ModelFileError` unless `path` is an intact `.keras` zip archive.

    Keras reports a truncated file as "File not found", a damaged member as
    `BadZipFile`, and junk weights as an HDF5 `OSError`; checking first gives
    one clear message for each.
    """
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise ModelFileError(f"Cannot read the model file {path!r}: {error.strerror}.") from error
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"Cannot load {path!r}: it is not a valid `.keras` archive (a zip "
            "file); it is truncated, or not a Keras model file."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            names = set(archive.namelist())
            if damaged is None and "model.weights.h5" in names:
                with archive.open("model.weights.h5") as weights:
                    signature = weights.read(len(_HDF5_SIGNATURE))
            else:
                signature = _HDF5_SIGNATURE
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ModelFileError(
            f"Cannot load {path!r}: the `.keras` archive is damaged ({_first_sentence(error)})."
        ) from error
    if damaged is not None:
        raise ModelFileError(
            f"Cannot load {path!r}: the `.keras` archive is damaged: its member "
            f"{damaged!r} fails its checksum."
        )
    if "config.json" not in names:
        raise ModelFileError(
            f"Cannot load {path!r}: the `.keras` archive holds no `config.json`, "
            "so it is not a Keras model file."
        )
    if signature != _HDF5_SIGNATURE:
        raise ModelFileError(
            f"Cannot load {path!r}: its weights member 'model.weights.h5' is not "
            "an HDF5 file."
        )


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
            layer, unless `unsafe=True`; for a file naming a class that is not
            registered, or a function that is not a modeling function.
        ModelFileError: (the base class of `UnsafeModelError`) for any other
            file that cannot be loaded: truncated, damaged, not a model,
            junk weights, or a config naming something that does not exist.
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
    if suffix == ".keras":
        _check_keras_archive(path)
    check_safe_keras()
    kwargs = {"compile": False, "custom_objects": custom_objects}
    if not LEGACY_KERAS or suffix == ".keras":
        kwargs["safe_mode"] = not unsafe
    try:
        return keras.models.load_model(path, **kwargs)
    except Exception as error:  # Any failure to load a file is the file's fault.
        reason = _first_sentence(error)
        if not unsafe and ("`Lambda`" in reason or "safe_mode" in reason):
            raise UnsafeModelError(
                f"Refusing to load {path!r}: it holds a `Lambda` layer, whose "
                "code would run on load. Pass `unsafe=True` (`--unsafe`) only "
                f"if you trust its author. (Keras: {reason})"
            ) from None
        if "Could not locate" in reason or "Unknown" in reason:
            raise UnsafeModelError(
                f"Cannot load {path!r}: it names a class that is not "
                f"registered here (Keras: {reason}). Import the module that "
                "defines it, or pass it in `custom_objects`."
            ) from None
        if "not a modeling function" in reason:
            raise UnsafeModelError(
                f"Refusing to load {path!r}: its config names a function that "
                f"is not part of a model, which Keras never loads (Keras: {reason})."
            ) from None
        raise ModelFileError(
            f"Cannot load {path!r}: Keras could not build the model from it "
            f"({type(error).__name__}: {reason})."
        ) from error


def save_model(model, path):
    """Saves `model` to `path` atomically; returns the file's size in bytes."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        model.save(tmp)
    return os.path.getsize(path)
