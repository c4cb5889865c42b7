"""Distillation combined with pruning and quantization-aware training (TFMOT).

TensorFlow Model Optimization (`tensorflow_model_optimization`, TFMOT) wraps
only tf_keras (Keras 2) models, so everything here runs with
`TF_USE_LEGACY_KERAS=1` set before TensorFlow and tf_distill are imported;
`tf_distill.backend.keras` is then tf_keras and the `Distiller` trains tf_keras
students. Under Keras 3 each function raises an error that explains the
switch. (TFMOT is imported only once that check passes: importing it sets
`TF_USE_LEGACY_KERAS=1` in `os.environ` as a side effect, which would leak
into any subprocess of a Keras 3 program.)

A pruned student is distilled like any other, with the pruning callback:

>>> pruned = prune_student(student, target_sparsity=0.8, end_step=steps)
>>> distiller = Distiller(teacher, pruned, "kd")
>>> distiller.compile(optimizer="adam", loss=..., metrics=["accuracy"])
>>> distiller.fit(x, y, epochs=epochs, callbacks=pruning_callbacks())
>>> student = strip_pruning(distiller.student)
>>> sparsity(student)  # ~0.8

A quantization-aware student (`quantize_aware`) is distilled the same way and
exported with `tf_distill.export.export_litert(..., quantization="int8")`.

References:
- Zhu & Gupta, "To prune, or not to prune" (2017), the polynomial sparsity
  schedule used here: https://arxiv.org/abs/1710.01878
- Jacob et al., "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference" (2018): https://arxiv.org/abs/1712.05877
"""

import gzip
import shutil

import numpy as np

from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras


def require_legacy_keras(feature):
    """Raises unless tf_distill runs on tf_keras (`TF_USE_LEGACY_KERAS=1`).

    Args:
        feature: What the caller needs tf_keras for, for the message
            (`"prune_student"`).

    Raises:
        RuntimeError: Under Keras 3.
    """
    if LEGACY_KERAS:
        return
    raise RuntimeError(
        f"{feature} uses TensorFlow Model Optimization, which supports only "
        "tf_keras (Keras 2) models, but tf_distill is running on Keras "
        f"{keras.__version__}. Set the environment variable "
        "TF_USE_LEGACY_KERAS=1 before importing TensorFlow or tf_distill (for "
        "example `TF_USE_LEGACY_KERAS=1 python train.py`; setting it later "
        "in the same process has no effect), and build the teacher and "
        "student with `tf_distill.backend.keras` (then tf_keras), not "
        "`import keras`."
    )


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot


def prune_student(
    student,
    target_sparsity=0.8,
    *,
    end_step,
    begin_step=0,
    frequency=100,
    initial_sparsity=0.0,
):
    """Wraps a student for magnitude pruning during distillation.

    Sparsity grows from `initial_sparsity` at `begin_step` to
    `target_sparsity` at `end_step` along Zhu & Gupta's cubic schedule
    (`tfmot.sparsity.keras.PolynomialDecay`, power 3), pruning every
    `frequency` steps; after `end_step` it stays at `target_sparsity`.
    Train with `pruning_callbacks()` and call `strip_pruning` afterwards.

    Args:
        student: A tf_keras Sequential or functional model (TFMOT cannot wrap
            subclassed models).
        target_sparsity: Fraction of each prunable kernel set to zero by the
            end, in [0, 1).
        end_step: Training step (batch) at which `target_sparsity` is
            reached: at most `epochs * steps_per_epoch`, so that training
            ends at full sparsity.
        begin_step: Step at which pruning starts.
        frequency: Steps between pruning updates; must be at most
            `end_step - begin_step`.
        initial_sparsity: Sparsity at `begin_step`, in [0, target_sparsity].

    Returns:
        The student with prunable layers wrapped in `PruneLowMagnitude`.

    Raises:
        RuntimeError: Under Keras 3 (see `require_legacy_keras`).
        ValueError: For an invalid schedule.

    Example:

    >>> steps = epochs * math.ceil(len(x_train) / batch_size)
    >>> pruned = prune_student(student, target_sparsity=0.8, end_step=steps)
    """
    require_legacy_keras("prune_student")
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(
            f"`target_sparsity` must be in [0, 1). Received: target_sparsity={target_sparsity!r}"
        )
    if not 0.0 <= initial_sparsity <= target_sparsity:
        raise ValueError(
            "`initial_sparsity` must be in [0, target_sparsity]. Received: "
            f"initial_sparsity={initial_sparsity!r}, "
            f"target_sparsity={target_sparsity!r}"
        )
    for name, value in (("begin_step", begin_step), ("end_step", end_step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name}` must be an integer >= 0. Received: {name}={value!r}")
    if end_step <= begin_step:
        raise ValueError(
            "`end_step` must be greater than `begin_step`. Received: "
            f"begin_step={begin_step}, end_step={end_step}"
        )
    if (
        isinstance(frequency, bool)
        or not isinstance(frequency, int)
        or not 1 <= frequency <= end_step - begin_step
    ):
        raise ValueError(
            "`frequency` must be an integer in [1, end_step - begin_step] "
            f"= [1, {end_step - begin_step}]. Received: frequency={frequency!r}"
        )
    tfmot = _tfmot()
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=float(initial_sparsity),
        final_sparsity=float(target_sparsity),
        begin_step=begin_step,
        end_step=end_step,
        frequency=frequency,
    )
    return tfmot.sparsity.keras.prune_low_magnitude(student, pruning_schedule=schedule)


def pruning_callbacks(log_dir=None):
    """The callbacks a pruned student's `fit` needs.

    Args:
        log_dir: If given, also write per-layer sparsity to TensorBoard there
            (`PruningSummaries`).

    Returns:
        `[UpdatePruningStep()]`, plus `PruningSummaries(log_dir)` if asked.
        `UpdatePruningStep` advances the schedule and applies the masks; it
        finds the pruned layers inside a `Distiller` too, since it searches
        nested models.
    """
    require_legacy_keras("pruning_callbacks")
    tfmot = _tfmot()
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    if log_dir is not None:
        callbacks.append(tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir))
    return callbacks


def strip_pruning(model):
    """Removes the pruning wrappers, keeping the (sparse) trained weights.

    Args:
        model: A model returned by `prune_student` (for example
            `distiller.student` after distillation).

    Returns:
        A plain tf_keras model of the original architecture, ready to save
        or export.
    """
    require_legacy_keras("strip_pruning")
    return _tfmot().sparsity.keras.strip_pruning(model)


def sparsity(model):
    """The measured fraction of zeros in a model's prunable kernels.

    Prunable kernels are the weights TFMOT prunes (the kernels of Dense and
    convolution layers, embeddings, ...), whether the model is still wrapped
    (`prune_student`) or stripped; biases and normalization weights are not
    counted.

    Args:
        model: A tf_keras model, possibly with nested models.

    Returns:
        Zeros divided by entries over all prunable kernels, a float in
        [0, 1]; 0.0 for a model without prunable kernels.
    """
    require_legacy_keras("sparsity")
    zeros = total = 0
    for weight in _prunable_weights(model):
        values = np.asarray(weight.numpy())
        zeros += int(np.count_nonzero(values == 0))
        total += values.size
    return zeros / total if total else 0.0


def _prunable_weights(model):
    from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    weights, seen = [], set()

    def add(weight):
        if id(weight) not in seen:
            seen.add(id(weight))
            weights.append(weight)

    def visit(layer):
        if isinstance(layer, pruning_wrapper.PruneLowMagnitude):
            for weight, _, _ in layer.pruning_vars:
                add(weight)
        elif isinstance(layer, keras.Model):
            for inner in layer.layers:
                visit(inner)
        elif isinstance(layer, prunable_layer.PrunableLayer):
            for weight in layer.get_prunable_weights():
                add(weight)
        elif type(layer) in prune_registry.PruneRegistry._LAYERS_WEIGHTS_MAP:
            # TFMOT's own table of which weights it prunes per layer type;
            # it has no public accessor that leaves the layer unmodified.
            names = prune_registry.PruneRegistry._LAYERS_WEIGHTS_MAP[type(layer)]
            for name in names:
                add(getattr(layer, name))

    visit(model)
    return weights


def gzipped_size(path):
    """The size in bytes of a file once gzipped.

    Pruning leaves a model file the same size (zeros are still stored); it
    shrinks when compressed, as app stores and downloads do. Works on any
    file (`.tflite`, `.keras`, `.h5`), under Keras 3 as well.

    Args:
        path: The file to measure. It is not modified.

    Returns:
        The gzip-compressed size in bytes (compression level 9).
    """
    counter = _ByteCounter()
    with open(path, "rb") as source:
        with gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=9) as target:
            shutil.copyfileobj(source, target)
    return counter.size


class _ByteCounter:
    """A write-only file that counts bytes instead of storing them."""

    def __init__(self):
        self.size = 0

    def write(self, data):
        self.size += len(data)
        return len(data)

    def flush(self):
        pass


def quantize_aware(student):
    """Wraps a student for quantization-aware training (QAT).

    Inserts fake-quantization ops that simulate int8 inference during
    training, so the student learns weights that survive int8 conversion
    (Jacob et al., 2018). Distill into it like any student, then export with
    `tf_distill.export.export_litert(student, path, quantization="int8",
    representative_data=...)` (or `"dynamic"`).

    Args:
        student: A tf_keras Sequential or functional model.

    Returns:
        `tfmot.quantization.keras.quantize_model(student)`, a new model.

    Raises:
        RuntimeError: Under Keras 3 (see `require_legacy_keras`).
    """
    require_legacy_keras("quantize_aware")
    return _tfmot().quantization.keras.quantize_model(student)


__all__ = [
    "require_legacy_keras",
    "prune_student",
    "pruning_callbacks",
    "strip_pruning",
    "sparsity",
    "gzipped_size",
    "quantize_aware",
]
