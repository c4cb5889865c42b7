"""A teacher cache on disk: `.npy` files, a manifest, atomic commits.

Each array is a `.npy` file read memory-mapped (never pickled); its name
carries a hash of its key and the cache's fingerprint (`file_stem`), so no
two keys share a file and a manifest never points at another cache's
files. `manifest.json`, written last and atomically, maps each key to its
file and each file to its SHA-256, checked when the cache is opened: a file
cut short or changed makes the cache be rebuilt, never read.
"""

import datetime
import hashlib
import json
import os
import re
import shutil

import numpy as np

from tf_distill.files import atomic_write_json

MANIFEST = "manifest.json"
FORMAT = "tf_distill.teacher_cache"
# 2: the manifest holds each file's SHA-256.
FORMAT_VERSION = 2
_COPY_CHUNK = 16 << 20


class StaleCacheError(ValueError):
    """A disk cache made from other teacher weights, data or layers."""


class Sink:
    """Collects chunks along the first axis, in memory or in a `.npy` file."""

    def __init__(self, name, folder):
        self.name = name
        self.folder = folder
        self.path = None
        self.chunks = []
        self.handle = None
        self.count = 0
        self.dtype = self.row_shape = None

    def append(self, chunk):
        if chunk.ndim == 0:
            raise ValueError(
                f"Pipeline element {self.name!r} is a scalar; a pipeline to cache "
                "yields examples, or batches of them, with a leading axis."
            )
        if self.dtype is None:
            self.dtype, self.row_shape = chunk.dtype, chunk.shape[1:]
            if self.folder is not None:
                os.makedirs(self.folder, exist_ok=True)
                self.raw = os.path.join(self.folder, f"{self.name}.raw")
                self.handle = open(self.raw, "wb")  # noqa: SIM115 - closed in finish
        if chunk.shape[1:] != self.row_shape or chunk.dtype != self.dtype:
            raise ValueError(
                f"Pipeline element {self.name!r} changes shape or dtype: "
                f"{self.dtype}{self.row_shape} then {chunk.dtype}{chunk.shape[1:]}."
            )
        self.count += len(chunk)
        if self.handle is None:
            self.chunks.append(chunk)
        else:
            self.handle.write(np.ascontiguousarray(chunk).data)

    def finish(self):
        if self.handle is None:
            return np.concatenate(self.chunks)
        self.handle.close()
        self.path = os.path.join(self.folder, f"{self.name}.npy")
        # The row count is known only now: write the header, then the rows.
        with open(self.path, "wb") as out, open(self.raw, "rb") as raw:
            np.lib.format.write_array_header_1_0(
                out,
                {
                    "descr": np.lib.format.dtype_to_descr(self.dtype),
                    "fortran_order": False,
                    "shape": (self.count,) + tuple(self.row_shape),
                },
            )
            shutil.copyfileobj(raw, out, _COPY_CHUNK)
        os.unlink(self.raw)
        return np.load(self.path, mmap_mode="r", allow_pickle=False)


def file_stem(kind, name, fingerprint):
    """The stem of the file holding one array of a cache.

    Output keys can be any string (`"t2/block_1"`), so the readable part
    alone could collide (`"a/b_c"` and `"a_b/c"` both read `a_b_c`, and
    `"Dense"` and `"dense"` are one file on a case-insensitive disk): a hash
    of the exact kind and name makes each stem unique. The manifest maps
    each name to its file.

    Args:
        kind: `"output"` (a teacher output) or `"example"` (a stored input,
            label or weight array), so an output and an example array of
            one name never share a file.
        name: The output's key or the example array's role.
        fingerprint: The cache's fingerprint.
    """
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:48]
    key = hashlib.sha256(f"{kind}\0{name}".encode()).hexdigest()[:12]
    return f"{kind}-{readable}-{key}-{fingerprint[:16]}"


def commit(
    directory, source, outputs, fingerprint, teacher_digest, data_digest, spec, old_manifest
):
    """Moves the new files into place; the manifest is written last.

    Returns:
        The manifest written.

    File names carry the fingerprint, so a manifest never points at files of
    another cache, whatever the moment a crash or a concurrent writer hits.
    """
    entries = {}
    for name, array in outputs.items():
        temporary = array.filename
        array.flush()
        del array
        final = f"{file_stem('output', name, fingerprint)}.npy"
        os.replace(temporary, os.path.join(directory, final))
        entries[name] = final
    stored = {}
    for role, path in getattr(source, "staged_files", {}).items():
        final = f"{file_stem('example', role, fingerprint)}.npy"
        os.replace(path, os.path.join(directory, final))
        stored[role] = final
    checksums = {
        file_name: file_sha256(os.path.join(directory, file_name))
        for file_name in [*entries.values(), *stored.values()]
    }
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "checksums": checksums,
        "fingerprint": fingerprint,
        "teacher_fingerprint": teacher_digest,
        "data_fingerprint": data_digest,
        "num_examples": source.num_examples,
        "outputs": entries,
        "stored_examples": stored,
        "tap_names": spec.tap_names,
        "teacher_outputs": spec.teacher_outputs,
        "teacher": spec.model.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(os.path.join(directory, MANIFEST), manifest)
    remove_files(directory, old_manifest, set(entries.values()) | set(stored.values()))
    return manifest


def file_sha256(path):
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_COPY_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remove_files(directory, manifest, keep):
    """Deletes the files an old manifest lists, except those in `keep`."""
    if not manifest:
        return
    listed = list((manifest.get("outputs") or {}).values())
    listed += list((manifest.get("stored_examples") or {}).values())
    for file_name in listed:
        if not isinstance(file_name, str) or file_name in keep or os.sep in file_name:
            continue
        try:
            os.unlink(os.path.join(directory, file_name))
        except OSError:
            pass


def read_manifest(directory):
    """The manifest in `directory`: None if absent, `{}` if unreadable."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return {}
    return manifest


def open_arrays(directory, manifest, num_examples):
    """The arrays a manifest lists, memory-mapped: `(outputs, stored)`.

    `outputs` maps each teacher output's key to its array, `stored` each
    stored example array's role (`"inputs_0"`, `"labels"`, ...) to its
    array. Returns None if a file is missing, unreadable, of another
    length than `num_examples`, or not the file the manifest's checksum
    names (cut short or changed), or if the manifest is of an older format.
    """
    checksums = manifest.get("checksums")
    if manifest.get("version") != FORMAT_VERSION or not isinstance(checksums, dict):
        return None
    try:
        listed = [*manifest["outputs"].values(), *manifest.get("stored_examples", {}).values()]
    except (AttributeError, KeyError, TypeError):
        return None
    for file_name in listed:
        path = os.path.join(directory, str(file_name))
        if not os.path.isfile(path) or checksums.get(file_name) != file_sha256(path):
            return None
    try:
        outputs = {}
        for name, file_name in manifest["outputs"].items():
            outputs[name] = np.load(
                os.path.join(directory, file_name), mmap_mode="r", allow_pickle=False
            )
        stored = {
            role: np.load(os.path.join(directory, file_name), mmap_mode="r", allow_pickle=False)
            for role, file_name in manifest.get("stored_examples", {}).items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if any(len(array) != num_examples for array in list(outputs.values()) + list(stored.values())):
        return None
    return outputs, stored
