"""A top-k teacher cache for large vocabularies, built in shards.

Per token it stores the teacher's k largest log-probabilities (float16),
their ids (uint16 where V ≤ 65,536, else int32) and the log of the mass of
all other ids (float32): `k·4 + 4` bytes (`k·6 + 4` above 65,536 ids),
against `4·V` for full logits (132 bytes at k = 32 against 128,000 at
V = 32k). `tf_distill.losses.TopKDistillation` computes the KD loss from it
(see `tf_distill.losses.topk`). Caches of format version 2 (int32 ids
whatever V) still open.

The teacher's inference can be spread over machines: each worker calls
`build_topk_cache(teacher, data, directory, k=..., shard=(index, count))`,
which writes its contiguous range of examples into its own shard folder,
atomically; whichever worker completes the set writes `manifest.json`, which
joins the shards. The cache is fingerprinted like `build_teacher_cache`'s
(teacher class, config and weights; every byte of the data), plus k, the
temperature and the tokenizer's identity: a cache made for another teacher,
data or tokenizer is refused, naming both fingerprints.

The data are arrays, a `DataSplits`, a `TextSplits` of text files
(`tf_distill.data.load_text`) or a finite `tf.data` pipeline, read once in
order (random augmentation is refused, see `check_cacheable`). Examples are
not stored: the cache is read with the data it was built from
(`open_topk_cache(teacher, data, directory)`), and its fingerprint, of the
examples in order, checks they are the same. A pipeline and the arrays it
yields have one fingerprint, so either opens a cache built from the other.
"""

import hashlib
import json
import os
import shutil
import time

import numpy as np

from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.batches import TEACHER_OUTPUTS
from tf_distill.cache.fingerprint import TeacherSpec
from tf_distill.cache.fingerprint import combine
from tf_distill.cache.sources import resolve_source
from tf_distill.cache.store import StaleCacheError
from tf_distill.cache.store import file_sha256
from tf_distill.cache.teacher_cache import TeacherCache
from tf_distill.data.text import TextSplits
from tf_distill.files import atomic_path
from tf_distill.files import atomic_write_json
from tf_distill.language import models as language_models
from tf_distill.losses.topk import pack_topk
from tf_distill.losses.topk import topk_targets
from tf_distill.taps import LOGITS
from tf_distill.validation import check_positive_integer

TOPK_FORMAT = "tf_distill.topk_cache"
# 2: every array carries its SHA-256, checked when the cache is opened.
# 3: ids are uint16 where V <= 65,536; each record names its arrays' dtypes.
TOPK_FORMAT_VERSION = 3
# The versions this code reads: a version-2 cache (int32 ids) still opens.
READABLE_VERSIONS = (2, 3)
TOPK_MANIFEST = "manifest.json"
_SHARD_INFO = "shard.json"
# Array name -> dtype on disk (format 2): `k·2 + k·4 + 4` bytes per token.
_ARRAYS = {"log_probs": np.float16, "indices": np.int32, "rest": np.float32}
_FLOAT16_MIN = float(np.finfo(np.float16).min)
# Token ids below 2^16 fit in uint16.
UINT16_VOCABULARY = 1 << 16


def array_dtypes(vocabulary_size):
    """`{array name: NumPy dtype}` a new cache of vocabulary `V` writes.

    Ids are uint16 where `V ≤ 65,536`, int32 above: `k·4 + 4` or `k·6 + 4`
    bytes per token.
    """
    indices = np.uint16 if vocabulary_size <= UINT16_VOCABULARY else np.int32
    return {"log_probs": np.float16, "indices": indices, "rest": np.float32}


def _record_dtypes(record):
    """The dtypes a shard's or manifest's record says its arrays have, or None
    for names or dtypes this code does not write."""
    if record.get("version") == 2:
        return dict(_ARRAYS)
    names = record.get("arrays")
    if not isinstance(names, dict) or set(names) != set(_ARRAYS):
        return None
    allowed = {
        "log_probs": ("float16",),
        "indices": ("uint16", "int32"),
        "rest": ("float32",),
    }
    if any(names[name] not in allowed[name] for name in _ARRAYS):
        return None
    return {name: np.dtype(names[name]).type for name in _ARRAYS}


def tokenizer_identity(tokenizer):
    """A string that changes when the tokenizer's vocabulary does.

    Args:
        tokenizer: None, a string the caller chooses (a vocabulary file's
            hash, a model name), or a tokenizer object: its class, its
            config and, where it has one, its `get_vocabulary()`.
    """
    if tokenizer is None or isinstance(tokenizer, str):
        return str(tokenizer)
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    get_config = getattr(tokenizer, "get_config", None)
    if callable(get_config):
        digest.update(json.dumps(get_config(), sort_keys=True, default=repr).encode())
    get_vocabulary = getattr(tokenizer, "get_vocabulary", None)
    if callable(get_vocabulary):
        try:
            digest.update(json.dumps(list(get_vocabulary()), default=repr).encode())
        except (NotImplementedError, ValueError, TypeError, AttributeError):
            pass
    return digest.hexdigest()


def shard_range(index, count, num_examples):
    """The contiguous examples `[start, stop)` of shard `index` of `count`."""
    return index * num_examples // count, (index + 1) * num_examples // count


def _check_shard(shard):
    if shard is None:
        return 0, 1
    if (
        not isinstance(shard, (tuple, list))
        or len(shard) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
        or shard[1] < 1
        or not 0 <= shard[0] < shard[1]
    ):
        raise ValueError(
            "`shard` must be `(index, count)` with integers 0 <= index < count. "
            f"Received: shard={shard!r}"
        )
    return tuple(shard)


def _vocabulary_size(model, source):
    """V, from the model's static output shape or one example's logits."""
    outputs = getattr(model, "outputs", None)
    try:
        size = outputs[0].shape[-1] if outputs else None
    except (AttributeError, IndexError, TypeError):
        size = None
    if size is None:
        size = getattr(getattr(model, "backbone", None), "vocabulary_size", None)
    if size is None:
        x = source.pack_inputs([np.asarray(leaf[:1]) for leaf in source.x_leaves])
        size = model(x, training=False).shape[-1]
    return int(size)


class TopKCache(TeacherCache):
    """A joined top-k teacher cache: the examples and their sparse targets.

    Made by `open_topk_cache` (or `build_topk_cache` once every shard is
    written). `dataset()` yields `({"inputs": x, "teacher_outputs":
    {"logits": packed}}, y[, sample_weight])` batches, `packed` being the
    top-k target of `tf_distill.losses.pack_topk` that `TopKDistillation`
    reads; the `Distiller` trains on them without running the teacher.

    Attributes:
        k: Classes kept per token.
        vocabulary_size: V, the width of the teacher's logits.
        temperature: The teacher's temperature when the cache was built.
        bytes_per_token: Bytes on disk per stored position.
    """

    def __init__(self, source, outputs, manifest, directory):
        super().__init__(source, outputs, manifest["fingerprint"], directory, reused=True)
        self.k = manifest["k"]
        self.vocabulary_size = manifest["vocabulary_size"]
        self.temperature = manifest["temperature"]

    @property
    def bytes_per_token(self):
        tokens = int(np.prod(self.outputs["rest"].shape))
        return self.nbytes / tokens

    def dataset(self, batch_size=32, shuffle=True, seed=None, repeat=False, drop_remainder=False,
                order=None):
        """The cached examples and packed targets as a `tf.data` pipeline.

        Args: as `TeacherCache.dataset`.
        """
        vocabulary_size = self.vocabulary_size

        def pack(x, *rest):
            sparse = x[TEACHER_OUTPUTS]
            packed = pack_topk(
                sparse["log_probs"], sparse["indices"], sparse["rest"], vocabulary_size
            )
            return ({**x, TEACHER_OUTPUTS: {LOGITS: packed}}, *rest)

        batches = super().dataset(batch_size, shuffle, seed, repeat, drop_remainder, order=order)
        return batches.map(pack, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def __repr__(self):
        return (
            f"TopKCache({self.num_examples} examples, k={self.k}, V={self.vocabulary_size}, "
            f"{self.bytes_per_token:.0f} bytes/token, directory={self.directory!r})"
        )


class ShardedArray:
    """Arrays of consecutive shards read as one, by sorted index arrays.

    Enough of the NumPy interface for `TeacherCache.dataset`: `shape`,
    `dtype`, `nbytes`, `len` and `array[sorted_indices]`.
    """

    def __init__(self, parts):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(part) for part in parts])
        self.shape = (int(self.offsets[-1]),) + tuple(parts[0].shape[1:])
        self.dtype = parts[0].dtype
        self.nbytes = int(sum(part.nbytes for part in parts))

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        index = np.asarray(index)
        which = np.searchsorted(self.offsets, index, side="right") - 1
        out = np.empty((len(index),) + self.shape[1:], self.dtype)
        for part in np.unique(which):
            rows = which == part
            out[rows] = self.parts[part][index[rows] - self.offsets[part]]
        return out


def build_topk_cache(
    teacher,
    data,
    directory,
    *,
    k=32,
    shard=None,
    split="train",
    temperature=1.0,
    tokenizer=None,
    inference_batch_size=64,
    log=None,
    verbose=0,
):
    """Writes one shard of a top-k teacher cache; joins the shards when all exist.

    Args:
        teacher: The teacher `keras.Model` (logits `[..., V]`), or a
            `Distiller` (its teacher).
        data: `(x, y)` or `(x, y, sample_weight)` arrays (e.g. token ids,
            next-token labels and the padding mask), a `DataSplits` or a
            `TextSplits` of text files (`tf_distill.data.load_text`; see
            `split`), or a finite `tf.data` pipeline of `(x, y[,
            sample_weight])` (examples or batches), read once into memory
            in its order. The cache does not store examples: it is opened
            with the same data (a pipeline must give the same examples in
            the same order every pass: no shuffling), or with the arrays
            the pipeline yields.
        directory: The cache's folder, shared by all workers.
        k: Classes kept per token, `1 ≤ k < V`.
        shard: `(index, count)`: this worker writes the `index`-th of
            `count` contiguous ranges of examples. Defaults to `(0, 1)`.
        split: The split of a `DataSplits` to cache.
        temperature: The teacher's softmax temperature.
        tokenizer: The tokenizer (object or identifying string) the data was
            encoded with; part of the fingerprint, so a cache of another
            tokenizer is refused. Its `vocabulary_size()`, where it has one,
            must be V.
        inference_batch_size: Examples per teacher call.
        log: A `print`-like callable for progress messages, or None.
        verbose: As Keras's `verbose`: 0 (the default) is silent, 1 shows a
            `keras.utils.Progbar` of the shard's examples run through the
            teacher, 2 one line when they are done.

    Returns:
        The `TopKCache` when this call completed the set of shards (or found
        it complete), else None (other shards are still missing).

    Raises:
        ValueError: for `k ≥ V`, a tokenizer of another vocabulary size, a
            bad `shard` or `data` (a pipeline with random augmentation or
            without end), before the teacher runs.
        StaleCacheError: if `directory` holds a cache or shards of another
            fingerprint (teacher, data, k, temperature or tokenizer).

    Example:

    ```python
    # Token ids [examples, time + 1] to KerasHub's inputs, next tokens, mask:
    x, labels, mask = tf_distill.language.next_token_batch(token_ids)
    # On worker i of n (all see the same arrays and folder):
    build_topk_cache(teacher, (x, labels, mask), "gs/cache", k=32, shard=(i, n))
    # Anywhere, once every shard is written:
    cache = open_topk_cache(teacher, (x, labels, mask), "gs/cache")
    distiller = tf_distill.Distiller(teacher, student, "topk_kd")
    distiller.fit(cache.dataset(batch_size=16), epochs=3)
    ```
    """
    log = log or (lambda *args, **kwargs: None)
    index, count = _check_shard(shard)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be an integer >= 1. Received: k={k!r}")
    check_positive_integer("inference_batch_size", inference_batch_size)
    spec, source, fingerprint, identity = _resolve(teacher, data, split, k, temperature, tokenizer)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    _check_existing(directory, fingerprint)
    start, stop = shard_range(index, count, source.num_examples)
    folder = os.path.join(directory, f"shard-{index:05d}-of-{count:05d}")
    info = _read_json(os.path.join(folder, _SHARD_INFO))
    damage = None
    if info and info.get("fingerprint") == fingerprint:
        damage = _shard_damage(folder, info, fingerprint)
        if damage:
            log(f"Shard {index} of {count} in {directory} is damaged ({damage}): writing it anew.")
            _remove_manifest(directory)
    if info and info.get("fingerprint") == fingerprint and not damage:
        log(f"Shard {index} of {count} in {directory} is already written.")
    else:
        began = time.perf_counter()
        _write_shard(folder, spec, source, start, stop, k, temperature, fingerprint, identity,
                     inference_batch_size, verbose)
        log(
            f"Wrote shard {index} of {count} (examples {start}:{stop}, k={k}) in {directory} "
            f"({time.perf_counter() - began:.1f} s)."
        )
    manifest = _join(directory, fingerprint, count, source.num_examples, identity)
    if manifest is None:
        log(f"The top-k cache in {directory} still lacks shards of {count}.")
        return None
    return _open(directory, manifest, source)


def open_topk_cache(teacher, data, directory, *, split="train", tokenizer=None):
    """Opens a joined top-k cache, checking it was built for this teacher and data.

    Args:
        teacher, data, split, tokenizer: As given to `build_topk_cache`.
        directory: The cache's folder.

    Returns:
        A `TopKCache`.

    Raises:
        FileNotFoundError: if the folder has no joined manifest yet.
        StaleCacheError: if the cache was built for another teacher, data or
            tokenizer, naming both fingerprints.
    """
    directory = os.fspath(directory)
    manifest = _read_json(os.path.join(directory, TOPK_MANIFEST))
    if not manifest or manifest.get("format") != TOPK_FORMAT:
        raise FileNotFoundError(
            f"No joined top-k cache in {directory}: build every shard with `build_topk_cache`."
        )
    problem = _damage(manifest, manifest.get("fingerprint"))
    if problem:  # Before its k and vocabulary are trusted below.
        raise _damaged(directory, f"its manifest: {problem}")
    _, source, fingerprint, _ = _resolve(
        teacher, data, split, manifest["k"], manifest["temperature"], tokenizer,
        vocabulary_size=manifest["vocabulary_size"],
    )
    _check_existing(directory, fingerprint)
    damage = _manifest_damage(directory, manifest)
    if damage:
        raise _damaged(directory, damage)
    return _open(directory, manifest, source)


def _check_token_inputs(model, data):
    """Raises unless a KerasHub causal LM is given its `{"token_ids",
    "padding_mask"}` inputs (an array of token ids would fail deep inside it)."""
    if not language_models.is_causal_lm(model) or not isinstance(data, (tuple, list)) or not data:
        return
    x = data[0]
    if not language_models.is_token_batch(x):
        raise ValueError(
            "A KerasHub CausalLM teacher reads {'token_ids', 'padding_mask'}: `data` must "
            "be `(x, y)` or `(x, y, sample_weight)` with `x` that dict, as "
            "`tf_distill.language.next_token_batch(token_ids)` returns it. Received: x of "
            f"type {type(x).__name__}{f' with shape {tuple(x.shape)}' if hasattr(x, 'shape') else ''}"
        )


def _resolve(teacher, data, split, k, temperature, tokenizer, vocabulary_size=None):
    """Checks the arguments; returns `(spec, source, fingerprint, identity)`."""
    spec = TeacherSpec(teacher, None, "logits")
    if isinstance(data, TextSplits):
        token_ids, labels, mask = data.windows[split] if split in data.windows else (None,) * 3
        if token_ids is None:
            raise ValueError(
                f"Invalid value for argument `split`. Expected one of {sorted(data.windows)}. "
                f"Received: split={split!r}"
            )
        data = (data.inputs(split), labels, mask)
    if not isinstance(data, tf.data.Dataset):
        _check_token_inputs(spec.model, data)
    source = resolve_source(data, split, None, lambda *a, **kw: None, spec.model)
    # Examples are not stored: the outputs line up with the data by index,
    # so a pipeline's examples are fingerprinted in order, as arrays are (a
    # pipeline and its arrays then share one fingerprint).
    source.order_invariant = False
    if vocabulary_size is None:
        vocabulary_size = _vocabulary_size(spec.model, source)
    if k >= vocabulary_size:
        raise ValueError(
            f"`k` must be < the vocabulary size V={vocabulary_size} (k = V would store "
            f"more than the full logits). Received: k={k}"
        )
    size_of = getattr(tokenizer, "vocabulary_size", None)
    if callable(size_of) and int(size_of()) != vocabulary_size:
        raise ValueError(
            f"The tokenizer's vocabulary has {int(size_of())} tokens, the teacher's "
            f"logits V={vocabulary_size}: they must be the same vocabulary."
        )
    identity = {
        "k": k,
        "temperature": float(temperature),
        "vocabulary_size": vocabulary_size,
        "tokenizer": tokenizer_identity(tokenizer),
        "teacher": spec.digest(),
        "data": source.digest(),
    }
    return spec, source, _fingerprint(identity), identity


_IDENTITY = ("k", "temperature", "vocabulary_size", "tokenizer", "teacher", "data")


def _fingerprint(identity):
    """The fingerprint of a cache's identity (teacher, data, k, temperature,
    vocabulary and tokenizer): a file whose identity was edited no longer
    matches its own fingerprint."""
    settings = json.dumps(
        {key: identity[key] for key in ("k", "temperature", "vocabulary_size", "tokenizer")},
        sort_keys=True,
    )
    return combine(
        identity["teacher"], hashlib.sha256(f"{identity['data']}:{settings}".encode()).hexdigest()
    )


def _damage(record, fingerprint):
    """Why a shard's or manifest's record (its JSON) cannot be trusted, or None."""
    if record.get("version") not in READABLE_VERSIONS:
        return f"it was written by another format version ({record.get('version')!r})"
    if any(key not in record for key in _IDENTITY):
        return "its identity is incomplete"
    dtypes = _record_dtypes(record)
    if dtypes is None:
        return f"its arrays' dtypes are unknown ({record.get('arrays')!r})"
    if dtypes["indices"] == np.uint16 and record["vocabulary_size"] > UINT16_VOCABULARY:
        return "its ids are uint16 for a vocabulary above 65,536"
    if _fingerprint({key: record[key] for key in _IDENTITY}) != fingerprint:
        return "its k, temperature, vocabulary or tokenizer were edited after it was written"
    return None


def _shard_damage(folder, info, fingerprint):
    """Why the shard in `folder` (written for `fingerprint`) cannot be used, or None."""
    problem = _damage(info, fingerprint)
    if problem:
        return problem
    checksums = info.get("checksums") or {}
    rows = info["stop"] - info["start"]
    for name, dtype in _record_dtypes(info).items():
        path = os.path.join(folder, f"{name}.npy")
        if not os.path.isfile(path):
            return f"{name}.npy is missing"
        if checksums.get(name) != file_sha256(path):
            return f"{name}.npy does not match its checksum (cut short or changed)"
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        wrong_k = name != "rest" and array.shape[-1] != info["k"]
        if array.dtype != dtype or array.shape[0] != rows or wrong_k:
            return f"{name}.npy holds {array.dtype} {array.shape}, not the shard's rows and k"
    return None


def _check_existing(directory, fingerprint):
    """Raises `StaleCacheError` if the folder holds another fingerprint's cache."""
    found = []
    manifest = _read_json(os.path.join(directory, TOPK_MANIFEST))
    if manifest:
        found.append(manifest.get("fingerprint"))
    for name in sorted(os.listdir(directory)):
        info = _read_json(os.path.join(directory, name, _SHARD_INFO))
        if name.startswith("shard-") and info:
            found.append(info.get("fingerprint"))
    other = [value for value in found if value != fingerprint]
    if other:
        raise StaleCacheError(
            f"The top-k cache in {directory} has fingerprint {other[0]}, but this teacher, "
            f"data, k and tokenizer give {fingerprint}: it was built for another teacher "
            "or tokenizer. Use another folder or remove this one."
        )


def _write_shard(folder, spec, source, start, stop, k, temperature, fingerprint, identity,
                 batch_size, verbose):
    """Runs the teacher on examples `[start, stop)`; writes the shard atomically."""
    if os.path.isdir(folder):
        # A shard folder whose info file is unreadable (damaged): write it anew.
        shutil.rmtree(folder)
    with atomic_path(folder, suffix="") as staging:
        os.makedirs(staging)
        arrays = {}
        dtypes = array_dtypes(identity["vocabulary_size"])
        progress = keras.utils.Progbar(stop - start, verbose=verbose, unit_name="example")
        for first in range(start, stop, batch_size):
            last = min(stop, first + batch_size)
            x = source.pack_inputs([np.asarray(leaf[first:last]) for leaf in source.x_leaves])
            logits = spec.forward(x)[LOGITS]
            log_probs, indices, rest = (
                np.asarray(value) for value in topk_targets(logits, k, temperature)
            )
            values = {
                "log_probs": np.maximum(log_probs, _FLOAT16_MIN),
                "indices": indices,
                "rest": rest,
            }
            for name, value in values.items():
                if name not in arrays:
                    arrays[name] = np.lib.format.open_memmap(
                        os.path.join(staging, f"{name}.npy"),
                        mode="w+",
                        dtype=dtypes[name],
                        shape=(stop - start,) + value.shape[1:],
                    )
                arrays[name][first - start : last - start] = value.astype(dtypes[name])
            progress.update(last - start)
        for array in arrays.values():
            array.flush()
        arrays.clear()
        checksums = {name: file_sha256(os.path.join(staging, f"{name}.npy")) for name in _ARRAYS}
        info = {"format": TOPK_FORMAT, "version": TOPK_FORMAT_VERSION, "fingerprint": fingerprint,
                "start": start, "stop": stop, "checksums": checksums,
                "arrays": {name: np.dtype(dtype).name for name, dtype in dtypes.items()},
                **identity}
        atomic_write_json(os.path.join(staging, _SHARD_INFO), info)


def _join(directory, fingerprint, count, num_examples, identity):
    """Writes the manifest if all `count` shards exist; returns it, or None."""
    manifest = _read_json(os.path.join(directory, TOPK_MANIFEST))
    if manifest and manifest.get("fingerprint") == fingerprint:
        if _manifest_damage(directory, manifest) is None:
            return manifest
        _remove_manifest(directory)
    shards = []
    for index in range(count):
        name = f"shard-{index:05d}-of-{count:05d}"
        info = _read_json(os.path.join(directory, name, _SHARD_INFO))
        if not info or info.get("fingerprint") != fingerprint:
            return None
        if _shard_damage(os.path.join(directory, name), info, fingerprint):
            return None  # its worker writes it anew (see `build_topk_cache`)
        shards.append({"folder": name, "start": info["start"], "stop": info["stop"],
                       "checksums": info["checksums"],
                       "arrays": {name: np.dtype(dtype).name
                                  for name, dtype in _record_dtypes(info).items()}})
    manifest = {
        "format": TOPK_FORMAT,
        "version": TOPK_FORMAT_VERSION,
        "fingerprint": fingerprint,
        "num_examples": num_examples,
        "shards": shards,
        "arrays": {name: np.dtype(dtype).name
                   for name, dtype in array_dtypes(identity["vocabulary_size"]).items()},
        **identity,
    }
    atomic_write_json(os.path.join(directory, TOPK_MANIFEST), manifest)
    return manifest


def _remove_manifest(directory):
    try:
        os.remove(os.path.join(directory, TOPK_MANIFEST))
    except FileNotFoundError:
        pass


def _manifest_damage(directory, manifest):
    """Why a joined cache cannot be used (an edited manifest, a shard cut
    short or changed), or None."""
    fingerprint = manifest.get("fingerprint")
    problem = _damage(manifest, fingerprint)
    if problem:
        return f"its manifest: {problem}"
    for shard in manifest.get("shards") or []:
        folder = os.path.join(directory, shard.get("folder", ""))
        info = _read_json(os.path.join(folder, _SHARD_INFO)) or {}
        problem = _shard_damage(folder, info, fingerprint)
        if problem is None and shard.get("checksums") != info.get("checksums"):
            problem = "its arrays are not those the manifest joined"
        if problem:
            return f"{shard.get('folder')}: {problem}"
    return None


def _damaged(directory, damage):
    return StaleCacheError(
        f"The top-k cache in {directory} is damaged ({damage}). Rebuild it with "
        "build_topk_cache, which writes damaged shards anew."
    )


def _open(directory, manifest, source):
    """The cache a checked manifest describes (`_join` and `open_topk_cache`
    check it, each once)."""
    parts = {name: [] for name in _ARRAYS}
    for shard in manifest["shards"]:
        for name in _ARRAYS:
            path = os.path.join(directory, shard["folder"], f"{name}.npy")
            parts[name].append(np.load(path, mmap_mode="r", allow_pickle=False))
    outputs = {name: ShardedArray(arrays) for name, arrays in parts.items()}
    if len(outputs["rest"]) != source.num_examples:
        raise ValueError(
            f"The top-k cache in {directory} holds {len(outputs['rest'])} examples; "
            f"the data has {source.num_examples}."
        )
    return TopKCache(source, outputs, manifest, directory)


def _read_json(path):
    """A JSON file's content, or None if absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
