"""The jobs' caching policy: whether `tf-distill run` and `tune` cache the
teacher's outputs, where, and the pipelines they then train on."""

import os

from tf_distill.cache import build_teacher_cache
from tf_distill.cache import tap_names

CACHE_MODES = ("auto", "memory", "disk", "off")
# `auto` keeps teacher outputs up to this size in memory, larger on disk.
AUTO_MEMORY_LIMIT = 512 << 20


def should_cache(config, data=None):
    """Whether a job should cache the teacher's outputs, and why.

    Caching is safe when the training examples are fixed arrays (every
    `tf_distill.data` source) and the pipeline adds no random augmentation
    (a `data.augmentation` key, if a config has one, turns caching off).

    Args:
        config: A validated job config. `training.cache` (or a top-level
            `cache`), one of `"auto"` (default), `"memory"`, `"disk"` or
            `"off"`, is read if present.
        data: The `DataSplits` (unused today; any source it loads is fixed).

    Returns:
        `(mode, reason)`: mode is `"memory"`, `"disk"` or `"off"`; reason is
        a sentence for the log.
    """
    mode = (config.get("training") or {}).get("cache", config.get("cache", "auto"))
    if mode is None or mode is False:
        mode = "off"
    if mode is True:
        mode = "auto"
    if mode not in CACHE_MODES:
        raise ValueError(
            f"Invalid value for `cache`. Expected one of {list(CACHE_MODES)}. Received: cache={mode!r}"
        )
    augmentation = (config.get("data") or {}).get("augmentation")
    if augmentation:
        if mode in ("memory", "disk"):
            raise ValueError(
                "`cache` cannot be used with `data.augmentation`: the teacher "
                "must see each augmented view. Set `cache: off` to distill online."
            )
        return (
            "off",
            "Distilling online: the pipeline augments at random, so teacher outputs cannot be cached.",
        )
    if mode == "off":
        return "off", "Distilling online (teacher-output caching is off)."
    if mode == "auto" and data is not None:
        mode = "disk" if _estimated_bytes(config, data) > AUTO_MEMORY_LIMIT else "memory"
    elif mode == "auto":
        mode = "memory"
    return mode, (
        f"Caching the teacher's outputs ({mode}): the teacher runs once over the "
        "data instead of at every training step."
    )


def _estimated_bytes(config, data):
    classes = getattr(data, "num_classes", 10)
    examples = sum(getattr(data, "sizes", {}).values()) if hasattr(data, "sizes") else 0
    # Tapped features are unknown before a model is built: count logits, and
    # a generous 64 floats per example per tapped layer.
    layers = len(tap_names((config.get("distillation") or {}).get("losses")))
    return examples * 4 * (classes + 64 * layers)


def cached_dataset(
    distiller,
    data,
    split,
    batch_size,
    *,
    mode="memory",
    directory=None,
    shuffle=None,
    seed=None,
    log=None,
    example_indices=False,
    verbose=0,
    order=None,
):
    """A job's pipeline for one split: cached (memory or disk) or plain.

    Args:
        distiller: The `Distiller` that will train on it.
        data: A `DataSplits`.
        split: `"train"`, `"validation"` or `"test"`.
        batch_size: Examples per batch.
        mode: `"memory"`, `"disk"` (under `directory/<split>`) or `"off"`.
        directory: The folder of disk caches.
        shuffle: Defaults to True for `"train"` only.
        seed: Shuffling seed.
        log: A `print`-like callable.
        example_indices: Each batch also carries its examples' indices in
            the split (for a loss with a memory bank, CRD).
        verbose: Keras's `verbose` for the progress of building the cache.
        order: A `callbacks.EpochOrder` for the training split: each
            epoch's order a function of `(seed, epoch)`, so that a resumed
            `fit` sees the orders of an uninterrupted one.

    Returns:
        A `tf.data.Dataset` for `distiller.fit` / `evaluate`.
    """
    if shuffle is None:
        shuffle = split == "train"
    if mode == "off":
        return data.as_tf_dataset(split, batch_size, shuffle=shuffle, seed=seed,
                                  example_indices=example_indices, order=order)
    if mode == "disk" and directory is None:
        raise ValueError("A disk cache needs a `directory`. Received: directory=None")
    cache = build_teacher_cache(
        distiller,
        data,
        split=split,
        directory=None if mode == "memory" else os.path.join(directory, split),
        log=log,
        verbose=verbose,
    )
    return cache.dataset(batch_size=batch_size, shuffle=shuffle, seed=seed,
                         example_indices=example_indices, order=order)
