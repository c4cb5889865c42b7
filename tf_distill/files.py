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
        # Flush the data before the rename and the rename itself after it, so
        # that a power loss cannot leave an empty file under the final name.
        _fsync_tree(tmp)
        os.replace(tmp, path)
        _fsync(folder)
    finally:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def _fsync(path):
    """Flushes one file or folder to disk; a no-op where the OS cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # Some file systems (and Windows folders) refuse fsync.
    finally:
        os.close(fd)


def _fsync_tree(path):
    """Flushes a written file, or every file of a written folder, and the folder."""
    if os.path.isdir(path) and not os.path.islink(path):
        for root, _, names in os.walk(path):
            for name in names:
                _fsync(os.path.join(root, name))
            _fsync(root)
    else:
        _fsync(path)


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
