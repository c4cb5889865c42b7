"""Reference architectures for teachers and students, by name and size.

`build("cnn", (28, 28, 1), 10, size="large")` gives a teacher and
`build("cnn", (28, 28, 1), 10, size="small")` its student: the same family
at different widths, so a distillation run needs no model code. Models are
uncompiled Functional models that output **logits** (no softmax), because
distillation losses soften logits with a temperature.

Layers have stable names, so feature taps can address them in a config:

- `mlp`: `flatten`, `dense1`, ..., `features` (the last hidden layer),
  `dropout` (if any), `logits`.
- `cnn`: `block{i}_conv`, `block{i}_bn`, `block{i}_relu`, `block{i}_pool`
  (when the feature map is still at least 2×2), `global_pool`, `features`,
  `dropout` (if any), `logits`.

Sizes are width multipliers: `"small"` (0.5), `"medium"` (1), `"large"`
(3), or any number > 0. On MNIST the small CNN has about 7.4k parameters,
the large one about 248k; the CNN ends with global average pooling, so its
parameter count does not depend on the input's height and width.
"""

import numpy as np

from tf_distill.backend import keras

SIZES = {"small": 0.5, "medium": 1.0, "large": 3.0}

# Widths at multiplier 1.
_MLP_UNITS = (32, 16)
_CNN_FILTERS = (16, 32, 64)


def names() -> list[str]:
    """The architecture names `build` accepts, sorted."""
    return sorted(_BUILDERS)


def build(
    architecture: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    size: str | float = "small",
    dropout: float = 0.0,
    seed: int | None = None,
    name: str | None = None,
) -> "keras.Model":
    """Builds a reference model that outputs logits.

    Args:
        architecture: `"mlp"` (Flatten and Dense layers) or `"cnn"` (three
            Conv2D/BatchNorm/ReLU blocks, max pooling between them while the
            feature map is at least 2×2, global average pooling, Dense).
        input_shape: Shape of one input without the batch axis:
            `(height, width, channels)` or `(height, width)` for the CNN
            (a channel axis is added), any shape for the MLP.
        num_classes: Number of logits, >= 1.
        size: `"small"`, `"medium"`, `"large"`, or a width multiplier > 0.
        dropout: Dropout rate in [0, 1) before the logits layer.
        seed: Integer seed of the initializers and dropout, for a model
            that is the same on every run; `None` for random.
        name: The model's name. Defaults to `"{architecture}_{size}"`.

    Returns:
        An uncompiled Functional `keras.Model` with output
        `[batch, num_classes]` logits and a layer named `"features"` just
        before the logits (dropout aside).

    Raises:
        ValueError: For an unknown architecture or size, or an invalid
            input shape, number of classes, dropout or seed.

    Example:

    >>> teacher = build("cnn", (28, 28, 1), 10, size="large", seed=0)
    >>> student = build("cnn", (28, 28, 1), 10, size="small", seed=1)
    >>> teacher.get_layer("features").output.shape
    (None, 192)
    """
    if not isinstance(architecture, str) or architecture not in _BUILDERS:
        raise ValueError(
            f"Unknown architecture. Expected one of {names()}. "
            f"Received: architecture={architecture!r}"
        )
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(
                f"Unknown size. Expected one of {list(SIZES)} or a width "
                f"multiplier > 0. Received: size={size!r}"
            )
        multiplier = SIZES[size]
        default_name = f"{architecture}_{size}"
    elif isinstance(size, (int, float)) and not isinstance(size, bool) and size > 0:
        multiplier = float(size)
        default_name = f"{architecture}_x{multiplier:g}"
    else:
        raise ValueError(
            f"`size` must be one of {list(SIZES)} or a width multiplier > 0. "
            f"Received: size={size!r}"
        )
    input_shape = _check_input_shape(input_shape)
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(
            f"`num_classes` must be an integer >= 1. Received: num_classes={num_classes!r}"
        )
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, (int, float))
        or not 0.0 <= dropout < 1.0
    ):
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"`seed` must be an integer or None. Received: seed={seed!r}")
    return _BUILDERS[architecture](
        input_shape=input_shape,
        num_classes=int(num_classes),
        multiplier=multiplier,
        dropout=float(dropout),
        seeds=_Seeds(seed),
        name=name or default_name,
    )


def count_params(model: "keras.Model", trainable_only: bool = False) -> int:
    """Number of parameters of `model` (all weights, or only trainable ones).

    All weights include BatchNorm's moving statistics, as `model.summary()`
    counts them.
    """
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(np.prod(tuple(weight.shape)) for weight in weights))


class _Seeds:
    """Hands out a distinct seed per layer, so no two layers start equal."""

    def __init__(self, seed):
        self.seed = None if seed is None else int(seed)
        self.count = 0

    def next(self):
        if self.seed is None:
            return None
        self.count += 1
        return self.seed + self.count

    def initializer(self):
        return keras.initializers.GlorotUniform(seed=self.next())


def _width(base, multiplier):
    return max(1, int(round(base * multiplier)))


def _check_input_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if not shape or any(
        isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in shape
    ):
        raise ValueError(
            "`input_shape` must be a non-empty tuple of positive integers, "
            f"without the batch axis. Received: input_shape={input_shape!r}"
        )
    return tuple(int(d) for d in shape)


def _head(x, num_classes, features, dropout, seeds):
    """The shared top: `features` Dense + ReLU, optional dropout, `logits`."""
    x = keras.layers.Dense(
        features,
        activation="relu",
        kernel_initializer=seeds.initializer(),
        name="features",
    )(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, seed=seeds.next(), name="dropout")(x)
    return keras.layers.Dense(num_classes, kernel_initializer=seeds.initializer(), name="logits")(x)


def _build_mlp(input_shape, num_classes, multiplier, dropout, seeds, name):
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs)
    widths = [_width(units, multiplier) for units in _MLP_UNITS]
    for index, units in enumerate(widths[:-1], start=1):
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=seeds.initializer(),
            name=f"dense{index}",
        )(x)
    outputs = _head(x, num_classes, widths[-1], dropout, seeds)
    return keras.Model(inputs, outputs, name=name)


def _build_cnn(input_shape, num_classes, multiplier, dropout, seeds, name):
    if len(input_shape) not in (2, 3):
        raise ValueError(
            "The cnn architecture needs images of shape (height, width, channels) "
            f"or (height, width). Received: input_shape={input_shape!r}"
        )
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    if len(input_shape) == 2:
        x = keras.layers.Reshape(input_shape + (1,), name="add_channel")(x)
    height, width = input_shape[:2]
    filters = [_width(base, multiplier) for base in _CNN_FILTERS]
    for block, block_filters in enumerate(filters, start=1):
        # No bias: the BatchNormalization that follows has its own offset.
        x = keras.layers.Conv2D(
            block_filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=seeds.initializer(),
            name=f"block{block}_conv",
        )(x)
        # momentum 0.9, not 0.99: small data sets give few steps per epoch, and
        # slow moving statistics make inference-mode outputs garbage early on.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn")(x)
        x = keras.layers.ReLU(name=f"block{block}_relu")(x)
        # Pool between blocks only while there is something to halve: an 8×8
        # digit is 2×2 at the last block, a 28×28 MNIST digit 7×7.
        if block < len(filters) and min(height, width) >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
            height, width = height // 2, width // 2
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = _head(x, num_classes, filters[-1], dropout, seeds)
    return keras.Model(inputs, outputs, name=name)


_BUILDERS = {"mlp": _build_mlp, "cnn": _build_cnn}


def fresh_copy(model, seed=None, name=None):
    """A new model of `model`'s architecture with freshly drawn weights.

    Layers are rebuilt from their configs (`keras.models.clone_model`), and
    any seed an initializer carries is replaced, so the copy starts neither
    from `model`'s weights nor from its initial ones.

    Args:
        model: A Functional or Sequential `keras.Model` (a subclassed model
            is rebuilt from its `get_config`).
        seed: An integer for reproducible initial weights, or `None`.
        name: The copy's name (default: `model`'s).
    """
    rng = np.random.default_rng(seed)

    def reseed(config):
        if isinstance(config, dict):
            config = {key: reseed(value) for key, value in config.items()}
            if config.get("seed") is not None:
                config["seed"] = int(rng.integers(0, 2**31 - 1))
        elif isinstance(config, list):
            config = [reseed(item) for item in config]
        return config

    def clone_layer(layer):
        return type(layer).from_config(reseed(layer.get_config()))

    if seed is not None:
        keras.utils.set_random_seed(seed)
    if isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False) or (
        type(model) is keras.Model
    ):
        copy = keras.models.clone_model(model, clone_function=clone_layer)
    else:
        copy = type(model).from_config(reseed(model.get_config()))
    if name is not None:
        copy.name = name
    # A teacher is frozen once a Distiller holds it: its copy is to be trained.
    copy.trainable = True
    return copy
