"""One registry from names and configs to distillation-loss objects.

`get("rkd_angle")`, `get({"name": "kd", "temperature": 4})` and
`get({"class_name": ..., "config": ...})` all resolve here, so a config file
names any method without an `if/elif` ladder.
"""

import difflib
import inspect

from tf_distill import catalog
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


def register_former_name(cls, former_name):
    """Keeps a renamed loss class reachable by its former name; returns `cls`.

    Configs saved by Keras name a class (`"registered_name":
    "tf_distill>CTKD"`); this registers `cls` under the former name too, so
    they still load, while new configs get its current name. Assign the
    result to the former name in the class's module, for code that imports
    it (`CTKD = register_former_name(CurriculumTemperatureDistillation,
    "CTKD")`).
    """
    package = keras.saving.get_registered_name(cls).rpartition(">")[0]
    keras.saving.get_custom_objects()[f"{package}>{former_name}"] = cls
    return cls


def check_catalog():
    """Raises `RuntimeError` unless the registry matches `tf_distill.catalog`.

    `tf-distill losses` and `tf-distill losses NAME` show the catalog without
    importing TensorFlow; this check, run once every built-in loss is
    registered, keeps the catalog's names, summaries, docstring lines and
    arguments equal to the classes'.
    """
    live = {name: (cls.__name__, summary) for name, (cls, summary) in _REGISTRY.items()}
    if live != catalog.LOSSES:
        changed = sorted(set(live.items()) ^ set(catalog.LOSSES.items()))
        raise RuntimeError(
            "`tf_distill.catalog.LOSSES` differs from the loss registry: update "
            f"the catalog when a built-in loss is added or renamed. Differing: {changed}"
        )
    changed = sorted(
        name for name, (cls, _) in _REGISTRY.items() if _read_class(cls) != catalog.DETAILS[name]
    )
    if changed:
        raise RuntimeError(
            "`tf_distill.catalog.DETAILS` differs from the loss classes: update the "
            "catalog when a loss's docstring line or arguments change. Differing: "
            f"{changed}"
        )


def _read_class(cls):
    """`(the first line of its docstring, {argument: default})` of a loss class."""
    doc = inspect.getdoc(cls) or ""
    arguments = {
        parameter.name: parameter.default
        for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }
    return (doc.splitlines()[0] if doc else "", arguments)


def names():
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def describe():
    """`[(name, class name, summary)]` for every registered loss."""
    return [(n, _REGISTRY[n][0].__name__, _REGISTRY[n][1]) for n in names()]


def _lookup(name):
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise catalog.unknown_loss(name, names())
    return _REGISTRY[key][0]


def describe_loss(name, recipes_dir=None):
    """Everything `tf-distill losses NAME` shows about one registered loss.

    Args:
        name: A registered name (`"kd"`).
        recipes_dir: The folder of recipes (`NAME.yaml`, settings that worked
            on the method benchmark). Defaults to
            `tf_distill.catalog.RECIPES_DIR`, the recipes installed with the
            package.

    Returns:
        A dict: `name`, `class_name`, `summary` (the registry's line),
        `description` (the class docstring's first line), `paper` (its
        reference, e.g. `"Hinton et al. 2015"`, or `None`), `arguments` (each
        argument of the class and its default, in order; `inspect.Parameter.empty`
        for a required one), `example` (a loss config with the defaults),
        `recipe` (the recipe file's path, or `None` when there is none yet)
        and `recipe_text` (its content, or `None`).

    Raises:
        ValueError: for an unknown name, listing the registered names and the
            closest one.

    Example:

    >>> describe_loss("kd")["arguments"]["temperature"]
    3.0
    """
    cls = _lookup(name)
    key = name.strip().lower()
    description, arguments = _read_class(cls)
    return catalog.loss_description(
        key, cls.__name__, _REGISTRY[key][1], description, arguments, recipes_dir
    )


def serialize(loss):
    """Returns a JSON-compatible dict that `deserialize` turns back into `loss`.

    A set `teacher` is part of it even when the class's `get_config` does not
    report it (a subclass written for `keras.distillation`, whose `get_config`
    is not built on `super().get_config()`): `from_config` sets it back.
    """
    if not isinstance(loss, DistillationLoss):
        raise ValueError(
            "Expected a DistillationLoss to serialize. "
            f"Received: loss={loss!r} of type {type(loss).__name__}"
        )
    for name, (cls, _) in _REGISTRY.items():
        if type(loss) is cls:
            return _with_teacher({"name": name, **loss.get_config()}, loss)
    serialized = keras.saving.serialize_keras_object(loss)
    serialized["config"] = _with_teacher(serialized["config"], loss)
    return serialized


def _with_teacher(config, loss):
    if loss.teacher is not None and "teacher" not in config:
        config = {**config, "teacher": loss.teacher}
    return config


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
    _check_arguments(config["name"], cls, arguments)
    try:
        return cls.from_config(arguments)
    except TypeError as error:
        raise ValueError(
            f"Invalid arguments for distillation loss {config['name']!r}: "
            f"{error}. Received: {arguments!r}"
        ) from None


def _check_arguments(name, cls, arguments):
    """Raises `ValueError` naming an unknown argument, the valid ones and the closest."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters):
        return
    valid = [parameter.name for parameter in parameters
             if parameter.kind != parameter.VAR_POSITIONAL]
    if "teacher" not in valid:
        # `DistillationLoss.from_config` sets it on a class whose `__init__`
        # does not take it.
        valid.append("teacher")
    unknown = [argument for argument in arguments if argument not in valid]
    if not unknown:
        return
    hints = []
    for argument in unknown:
        close = difflib.get_close_matches(str(argument), valid, n=1, cutoff=0.6)
        if close:
            hints.append(repr(close[0]) if len(unknown) == 1 else f"{close[0]!r} for {argument!r}")
    hint = f" Did you mean {', '.join(hints)}?" if hints else ""
    raise ValueError(
        f"Invalid arguments for distillation loss {name!r}: unknown argument(s) "
        f"{unknown}. Valid arguments: {valid}.{hint} Received: {arguments!r}"
    )


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
