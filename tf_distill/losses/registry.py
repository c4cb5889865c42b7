"""One registry from names and configs to distillation-loss objects.

`get("rkd_angle")`, `get({"name": "kd", "temperature": 4})` and
`get({"class_name": ..., "config": ...})` all resolve here, so a config file
names any method without an `if/elif` ladder.
"""

from tf_distill.backend import keras
from tf_distill.losses.base import DistillationLoss

_REGISTRY = {}


def register(name, summary):
    """Class decorator: makes a DistillationLoss reachable as `get(name)`.

    Args:
        name: The registry name (`"kd"`, `"rkd_angle"`, ...).
        summary: One line for `tf-distill losses`.
    """

    def decorator(cls):
        if name in _REGISTRY and _REGISTRY[name][0] is not cls:
            raise ValueError(f"A loss is already registered as {name!r}.")
        _REGISTRY[name] = (cls, summary)
        return cls

    return decorator


def names():
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def describe():
    """`[(name, class name, summary)]` for every registered loss."""
    return [(n, _REGISTRY[n][0].__name__, _REGISTRY[n][1]) for n in names()]


def _lookup(name):
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ValueError(
            "Unknown distillation loss. Expected one of "
            f"{names()}. Received: {name!r}"
        )
    return _REGISTRY[key][0]


def serialize(loss):
    """Returns a JSON-compatible dict that `deserialize` turns back into `loss`."""
    if not isinstance(loss, DistillationLoss):
        raise ValueError(
            "Expected a DistillationLoss to serialize. "
            f"Received: loss={loss!r} of type {type(loss).__name__}"
        )
    for name, (cls, _) in _REGISTRY.items():
        if type(loss) is cls:
            return {"name": name, **loss.get_config()}
    return keras.saving.serialize_keras_object(loss)


def deserialize(config, custom_objects=None):
    """Builds a loss from the output of `serialize` (or a Keras config)."""
    if not isinstance(config, dict):
        raise ValueError(
            "Expected a dict to deserialize a distillation loss. "
            f"Received: config={config!r}"
        )
    if "class_name" in config:
        return keras.saving.deserialize_keras_object(
            config, custom_objects=custom_objects
        )
    if "name" not in config:
        raise ValueError(
            "A loss config needs a `name` (one of "
            f"{names()}) or a `class_name`. Received: config={config!r}"
        )
    arguments = {k: v for k, v in config.items() if k != "name"}
    cls = _lookup(config["name"])
    try:
        return cls.from_config(arguments)
    except TypeError as error:
        raise ValueError(
            f"Invalid arguments for distillation loss {config['name']!r}: "
            f"{error}. Received: {arguments!r}"
        ) from None


def get(identifier, **kwargs):
    """Resolves a name, a config dict or an object to a distillation loss.

    Args:
        identifier: A registered name (`"kd"`), a dict (`{"name": "kd",
            "temperature": 4.0}`, or a Keras `{"class_name", "config"}`), or a
            `DistillationLoss` (returned as is).
        **kwargs: With a name or a `{"name": ...}` dict: the loss's
            arguments, as a config dict would give them
            (`get("fitnets", teacher_layer_name="block_2")`). A config dict's
            own keys give way to them.

    Returns:
        A `DistillationLoss`.

    Raises:
        ValueError: for an unknown name, a malformed config, or keyword
            arguments with a loss object or a Keras config.

    Example:

    >>> tf_distill.losses.get({"name": "kd", "temperature": 4.0, "teacher": "resnet"})
    LogitsDistillation(temperature=4.0, loss='kl_divergence', ..., teacher='resnet')
    """
    if kwargs and not (
        isinstance(identifier, str) or (isinstance(identifier, dict) and "name" in identifier)
    ):
        raise ValueError(
            "Keyword arguments to `get` need a loss name or a `{'name': ...}` "
            f"config. Received: identifier={identifier!r} with {sorted(kwargs)}"
        )
    if isinstance(identifier, DistillationLoss):
        return identifier
    if isinstance(identifier, str):
        if not kwargs:
            return _lookup(identifier)()
        return deserialize({"name": identifier, **kwargs})
    if isinstance(identifier, dict):
        return deserialize({**identifier, **kwargs})
    raise ValueError(
        "Could not interpret distillation loss identifier. Expected a name "
        f"(one of {names()}), a config dict or a DistillationLoss. "
        f"Received: {identifier!r}"
    )
