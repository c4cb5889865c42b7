"""MNIST's idx format: one file (`read_idx`), a folder of them, and its SHA256SUMS."""

import gzip
import hashlib
import math
import os
import zlib

import numpy as np

# MNIST's own file names, then the dotted variant some mirrors use.
_IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
# The third byte of an idx magic number is the element type.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Reads one idx file (MNIST's format), gzipped or not, as a NumPy array.

    The header is big-endian: a magic number whose third byte is the element
    type and fourth the number of dimensions (2051 for uint8 images
    `[n, rows, cols]`, 2049 for uint8 labels `[n]`), then one uint32 per
    dimension, then the raw elements.

    Args:
        path: The file; gzip is detected from its content, not its name.
        expected_magic: If given, the magic number the file must have.

    Returns:
        An array in native byte order with the header's shape.

    Raises:
        ValueError: If the file is not a valid idx file, has the wrong magic
            number, or its size disagrees with its header.
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        return parse_idx(handle.read(), path, expected_magic)


def parse_idx(raw: bytes, path: str, expected_magic: int | None = None) -> np.ndarray:
    """`read_idx` on the bytes of a file already read; `path` names it in errors."""
    compressed = raw[:2] == b"\x1f\x8b"
    if compressed:
        try:
            content = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"'{path}' is not a valid gzip file: {error}") from error
    else:
        content = raw
    if len(content) < 4:
        raise ValueError(
            f"'{path}' is not an idx file: it has {len(content)} bytes, "
            "fewer than the 4-byte magic number."
        )
    magic = int.from_bytes(content[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"'{path}' has magic number {magic}, expected {expected_magic} "
            f"({'images' if expected_magic == IDX_IMAGES_MAGIC else 'labels'}). "
            "Is it the right file, or corrupt?"
        )
    type_code, rank = content[2], content[3]
    if content[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or rank == 0:
        raise ValueError(f"'{path}' is not an idx file: invalid magic number {magic}.")
    header_size = 4 + 4 * rank
    if len(content) < header_size:
        raise ValueError(f"'{path}' is truncated: its header is incomplete.")
    shape = tuple(int(d) for d in np.frombuffer(content, ">u4", count=rank, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected_bytes = math.prod(shape) * dtype.itemsize
    if len(content) - header_size != expected_bytes:
        raise ValueError(
            f"'{path}' has {len(content) - header_size} bytes of data, but its "
            f"header announces shape {shape}, which needs {expected_bytes}. "
            "The file is truncated or corrupt."
        )
    array = np.frombuffer(content, dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx_folder(folder, verify_checksums=True):
    """Reads a folder of MNIST idx files, checking them against its SHA256SUMS.

    Args:
        folder: The folder, holding `train-images-idx3-ubyte[.gz]`,
            `train-labels-idx1-ubyte[.gz]` and optionally the `t10k-` pair.
        verify_checksums: Check each file listed in `folder/SHA256SUMS`.

    Returns:
        `(arrays, fingerprint)`: `arrays` maps `"train"` (and `"test"` when
        the folder has it) to `(images, labels)`; `fingerprint` is
        `"idx:sha256:<hex>"`, a hash of the names and contents of the files
        read, each file hashed once, as it is read.

    Raises:
        FileNotFoundError: If the training pair, or half of the test pair,
            is missing.
        ValueError: For a checksum mismatch or an invalid idx file.
    """
    checksums = _read_checksums(folder) if verify_checksums else {}
    paths = {}
    for role, names in _IDX_FILES.items():
        candidates = [
            os.path.join(folder, base + suffix) for base in names for suffix in ("", ".gz")
        ]
        existing = [path for path in candidates if os.path.isfile(path)]
        # Prefer the file SHA256SUMS vouches for when both forms are present.
        existing.sort(key=lambda path: os.path.basename(path) not in checksums)
        paths[role] = existing[0] if existing else None
    for role in ("train_images", "train_labels"):
        if paths[role] is None:
            raise FileNotFoundError(
                f"Folder '{folder}' has no {role.replace('_', ' ')} file: expected "
                f"{_IDX_FILES[role][0]} or {_IDX_FILES[role][0]}.gz."
            )
    if (paths["test_images"] is None) != (paths["test_labels"] is None):
        missing = "test_images" if paths["test_images"] is None else "test_labels"
        raise FileNotFoundError(
            f"Folder '{folder}' has test {'labels' if missing == 'test_images' else 'images'}"
            f" but no {_IDX_FILES[missing][0]}[.gz]."
        )
    paths = {role: path for role, path in paths.items() if path is not None}
    raw = {}
    fingerprint = hashlib.sha256()
    for role, path in paths.items():
        with open(path, "rb") as handle:
            raw[role] = handle.read()
        digest = hashlib.sha256(raw[role]).hexdigest()
        name = os.path.basename(path)
        if name in checksums and digest != checksums[name]:
            raise ValueError(
                f"Checksum mismatch for '{path}': SHA256SUMS lists {checksums[name]}, the "
                f"file has {digest}. The file is corrupt or was changed; download it again."
            )
        fingerprint.update(f"{role} {digest}\n".encode())

    def read_pair(images_role, labels_role):
        images = parse_idx(raw[images_role], paths[images_role], IDX_IMAGES_MAGIC)
        labels = parse_idx(raw[labels_role], paths[labels_role], IDX_LABELS_MAGIC)
        if len(images) != len(labels):
            raise ValueError(
                f"'{paths[images_role]}' holds {len(images)} images but "
                f"'{paths[labels_role]}' holds {len(labels)} labels."
            )
        return images, labels

    arrays = {"train": read_pair("train_images", "train_labels")}
    if "test_images" in paths:
        arrays["test"] = read_pair("test_images", "test_labels")
    return arrays, f"idx:sha256:{fingerprint.hexdigest()}"


def _read_checksums(folder):
    """`{file name: sha256 hex}` from `folder/SHA256SUMS`, or `{}` if absent."""
    path = os.path.join(folder, "SHA256SUMS")
    if not os.path.isfile(path):
        return {}
    checksums = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(maxsplit=1)
            digest = parts[0].lower()
            if (
                len(parts) != 2
                or len(digest) != 64
                or any(ch not in "0123456789abcdef" for ch in digest)
            ):
                raise ValueError(
                    f"'{path}' line {number} is not '<sha256>  <file name>'. Received: {line!r}"
                )
            # `sha256sum` marks binary mode with a leading '*'.
            checksums[parts[1].strip().lstrip("*")] = digest
    return checksums
