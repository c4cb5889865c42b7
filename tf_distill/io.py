"""Atomic file writes: a crash never leaves a half-written file in place.

Every file tf_distill writes (models, `.tflite` files, `metrics.json`,
caches, reports) goes to a temporary name in the destination's folder and is
moved over the destination with `os.replace`, which is atomic on POSIX and
Windows file systems. A failure before the move leaves the old file intact.
"""

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yields a temporary path to write; moves it to `path` on success.

    Args:
        path: The destination file.
        suffix: The temporary file's suffix. Defaults to `path`'s own
            extension, since some writers (Keras's `save`) check it.

    Yields:
        A path in the same folder as `path`, not yet existing.

    Example:

    >>> with atomic_path("student.keras") as tmp:
    ...     model.save(tmp)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if suffix is None:
        suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}", dir=folder
    )
    os.close(fd)
    os.unlink(tmp)
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise RuntimeError(f"Nothing was written to the temporary file for {path}.")
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path, data):
    """Writes `data` (str or bytes) to `path` atomically."""
    mode = "wb" if isinstance(data, (bytes, bytearray)) else "w"
    with atomic_path(path) as tmp:
        with open(tmp, mode) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_json(path, obj):
    """Writes `obj` as indented JSON to `path` atomically."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
