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
>>> sparsity(student)  # ~0.8 overall; the first and last layers stay dense

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


FIRST_AND_LAST = "first_and_last"

# The layer types "first_and_last" keeps dense at the input: an Embedding
# table, often most of a language model's weights, is pruned.
_CONVOLUTION_AND_DENSE = (
    "Dense",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
)


def prune_student(
    student,
    target_sparsity=0.8,
    *,
    end_step,
    begin_step=0,
    frequency=100,
    initial_sparsity=0.0,
    exclude=FIRST_AND_LAST,
):
    """Wraps a student for magnitude pruning during distillation.

    Sparsity grows from `initial_sparsity` at `begin_step` to
    `target_sparsity` at `end_step` along Zhu & Gupta's cubic schedule
    (`tfmot.sparsity.keras.PolynomialDecay`, power 3), pruning every
    `frequency` steps; after `end_step` it stays at `target_sparsity`.
    Train with `pruning_callbacks()` and call `strip_pruning` afterwards.

    By default the first convolution or Dense layer and the last prunable
    layer (the logits) stay dense, as is common practice (the TFMOT pruning
    guide advises pruning later layers rather than the first ones): they
    hold few weights, and each of theirs matters more than one of a middle
    layer's. The first layer of a small convnet has a few weights per
    filter, and the logits layer a few per class. `target_sparsity` is the
    sparsity over all prunable kernels, the dense ones included, as
    `sparsity` measures it, so the pruned layers are pruned further to make
    up for the dense ones: each to
    `target_sparsity * all_weights / pruned_weights`.

    Args:
        student: A tf_keras Sequential or functional model (TFMOT cannot wrap
            subclassed models).
        target_sparsity: Fraction of all prunable kernel weights (those of
            Dense, convolution and embedding layers, ..., excluded layers
            included) set to zero by the end, in [0, 1).
        end_step: Training step (batch) at which `target_sparsity` is
            reached: at most `epochs * steps_per_epoch`, so that training
            ends at full sparsity.
        begin_step: Step at which pruning starts.
        frequency: Steps between pruning updates; must be at most
            `end_step - begin_step`.
        initial_sparsity: Overall sparsity at `begin_step`, in
            [0, target_sparsity].
        exclude: Layers to leave dense: `"first_and_last"` (the default: the
            first convolution or Dense layer and the last prunable layer),
            or a list of layer names (of nested models' layers too); `()`
            prunes every layer to `target_sparsity`.

    Returns:
        The student with its pruned layers wrapped in `PruneLowMagnitude`.

    Raises:
        RuntimeError: Under Keras 3 (see `require_legacy_keras`).
        ValueError: For an invalid schedule, an unknown or unprunable layer
            name in `exclude`, a student without prunable kernels, or a
            `target_sparsity` out of reach with the excluded layers dense.

    Example:

    >>> steps = epochs * math.ceil(len(x_train) / batch_size)
    >>> pruned = prune_student(student, target_sparsity=0.8, end_step=steps)
    >>> pruned = prune_student(student, 0.8, end_step=steps, exclude=["logits"])
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
    layers = _prunable_layers(student)
    excluded = _excluded_layers(layers, exclude)
    layer_sparsity = _pruned_layer_sparsity(layers, excluded, target_sparsity)
    tfmot = _tfmot()
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=initial_sparsity * layer_sparsity / target_sparsity
        if target_sparsity
        else 0.0,
        final_sparsity=layer_sparsity,
        begin_step=begin_step,
        end_step=end_step,
        frequency=frequency,
    )

    class KeepDense(tfmot.sparsity.keras.PruningPolicy):
        """Leaves the excluded layers unwrapped (TFMOT's own hook for it)."""

        def allow_pruning(self, layer):
            return layer.name not in excluded

        def ensure_model_supports_pruning(self, model):
            # `prune_low_magnitude` itself rejects subclassed models.
            pass

    return tfmot.sparsity.keras.prune_low_magnitude(
        student, pruning_schedule=schedule, pruning_policy=KeepDense()
    )


def _excluded_layers(layers, exclude):
    """The layer names `exclude` stands for, checked against `layers`."""
    if exclude is None:
        return set()
    if isinstance(exclude, str):
        if exclude != FIRST_AND_LAST:
            raise ValueError(
                f"`exclude` must be {FIRST_AND_LAST!r} or a list of layer names. "
                f"Received: exclude={exclude!r} (for one layer, pass [{exclude!r}])"
            )
        return _first_and_last(layers)
    names = list(exclude)
    prunable = [layer.name for layer, _ in layers]
    unknown = [name for name in names if name not in prunable]
    if unknown:
        raise ValueError(
            "`exclude` names layers that are not in the model or have no "
            f"prunable kernels: {unknown}. Prunable layers: {prunable}. "
            f"Received: exclude={names!r}"
        )
    return set(names)


def _first_and_last(layers):
    """The first convolution or Dense layer and the last prunable layer."""
    if not layers:
        return set()
    kinds = tuple(
        getattr(keras.layers, name)
        for name in _CONVOLUTION_AND_DENSE
        if hasattr(keras.layers, name)
    )
    first = next((layer for layer, _ in layers if isinstance(layer, kinds)), None)
    return {layer.name for layer in (first, layers[-1][0]) if layer is not None}


def _pruned_layer_sparsity(layers, excluded, target_sparsity):
    """The sparsity of each pruned layer that gives `target_sparsity` overall."""
    sizes = [
        (layer.name, sum(int(np.prod(weight.shape)) for weight in weights))
        for layer, weights in layers
    ]
    total = sum(size for _, size in sizes)
    if total == 0:
        raise ValueError(
            "The student has no prunable kernels (built Dense, convolution, "
            "embedding, ... layers): there is nothing to prune. A Sequential "
            "model needs an `Input` to be built."
        )
    pruned = sum(size for name, size in sizes if name not in excluded)
    if target_sparsity == 0:
        return 0.0
    if target_sparsity * total >= pruned:
        raise ValueError(
            f"target_sparsity={target_sparsity!r} is out of reach with layers "
            f"{sorted(excluded)} kept dense: they hold {total - pruned:,} of the "
            f"{total:,} prunable kernel weights, so the model's sparsity must "
            f"stay below {pruned / total:.3f} (every other weight pruned). Lower "
            "`target_sparsity`, or keep fewer layers dense with `exclude` "
            "(`exclude=()` prunes every layer)."
        )
    return target_sparsity * total / pruned


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
    weights, seen = [], set()
    for _, layer_weights in _prunable_layers(model):
        for weight in layer_weights:
            if id(weight) not in seen:
                seen.add(id(weight))
                weights.append(weight)
    return weights


def _prunable_layers(model):
    """`[(layer, prunable weights)]` in layer order, nested models included.

    For a layer wrapped in `PruneLowMagnitude`, the layer is the wrapped one
    (with the name the user gave it).
    """
    from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    layers, seen = [], set()

    def add(layer, weights):
        # Layers with nothing to prune, or not built yet, are left out.
        weights = [weight for weight in weights if weight is not None]
        if weights and id(layer) not in seen:
            seen.add(id(layer))
            layers.append((layer, weights))

    def visit(layer):
        if isinstance(layer, pruning_wrapper.PruneLowMagnitude):
            # TFMOT wraps every layer, batch normalization too.
            add(layer.layer, [weight for weight, _, _ in layer.pruning_vars])
        elif isinstance(layer, keras.Model):
            for inner in layer.layers:
                visit(inner)
        elif isinstance(layer, prunable_layer.PrunableLayer):
            add(layer, layer.get_prunable_weights())
        elif type(layer) in prune_registry.PruneRegistry._LAYERS_WEIGHTS_MAP:
            # TFMOT's own table of which weights it prunes per layer type;
            # it has no public accessor that leaves the layer unmodified.
            names = prune_registry.PruneRegistry._LAYERS_WEIGHTS_MAP[type(layer)]
            add(layer, [getattr(layer, name, None) for name in names])

    visit(model)
    return layers


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
    "FIRST_AND_LAST",
    "require_legacy_keras",
    "prune_student",
    "pruning_callbacks",
    "strip_pruning",
    "sparsity",
    "gzipped_size",
    "quantize_aware",
]
