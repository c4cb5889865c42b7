"""Feature taps: a model's logits and named intermediate outputs in one pass.

`keras.distillation` runs the student a second time through a feature
extractor whenever a layer is named. A tap model instead shares the
original's layers and returns every needed output from one forward pass, so
training it trains the original.

A layer inside a nested sub-model (a Functional model holding a Sequential
backbone, say) is tapped by its path `outer/inner`: the outer graph is
rebuilt on the same layer objects, with the sub-model's call replaced by a
call of a tap of the sub-model that also returns the inner output. Nothing
runs twice and no variable is copied.
"""

from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.backend import tf

LOGITS = "logits"

# The key of a sub-model tap's main output (never a user-visible key).
_OUTPUT = "__output__"


def layer_names(model):
    """All layer names of `model`, nested sub-models as `outer/inner`."""
    found = []
    for layer in model.layers:
        found.append(layer.name)
        if isinstance(layer, keras.Model):
            found.extend(f"{layer.name}/{n}" for n in layer_names(layer))
    return found


def find_layer(model, name, role="model"):
    """Finds a layer by name, looking into nested sub-models.

    Args:
        model: A Functional or Sequential Keras model.
        name: A layer name, or a path `outer/inner` into nested sub-models.
        role: `"teacher"` or `"student"`, for the error message.

    Returns:
        The layer.

    Raises:
        ValueError: if no layer has that name; the message lists the
            available names.
    """
    return find_layer_path(model, name, role=role)[-1]


def find_layer_path(model, name, role="model"):
    """The chain of layers from `model` down to the layer `name`.

    Args:
        model: A Functional or Sequential Keras model.
        name: A layer name, or a path `outer/inner` into nested sub-models.
        role: `"teacher"` or `"student"`, for the error message.

    Returns:
        A list of layers: `[layer]` for a layer of `model` itself,
        `[sub_model, ..., layer]` for one inside nested sub-models.

    Raises:
        ValueError: if no layer has that name (the message lists the
            available names), or if a bare name is found in several nested
            sub-models.
    """
    path = []
    current = model
    try:
        for part in name.split("/"):
            if not isinstance(current, keras.Model):
                raise ValueError(part)
            current = current.get_layer(part)
            path.append(current)
        return path
    except ValueError:
        pass
    matches = _search(model, name)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(
            f"Layer name {name!r} is ambiguous in the {role} model "
            f"{model.name!r}: it appears in several nested sub-models. "
            "Address it as `submodel/layer`."
        )
    raise ValueError(
        f"No layer named {name!r} in the {role} model {model.name!r}. "
        f"Available layers: {layer_names(model)}"
    )


def _search(model, name):
    """Every path `[sub_model, ..., layer]` to a layer called `name`."""
    matches = []
    for layer in model.layers:
        if layer.name == name:
            matches.append([layer])
        if isinstance(layer, keras.Model):
            matches.extend([layer] + path for path in _search(layer, name))
    return matches


def is_symbolic(model):
    """Whether `model` has symbolic inputs (Functional or built Sequential)."""
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def build_on_inputs_of(models, references):
    """Builds each unbuilt `Sequential` of `models` on the inputs of a built model.

    A Distiller's teacher and student read the same inputs, so a `Sequential`
    never called (no `Input`) is built on the per-example input shape of the
    first model of `references` that is built with one input, exactly as
    Keras would build it at its first batch. Other models are left as they
    are, and so is everything when no reference is built (`tap_model` then
    says how to build it).

    Args:
        models: The models to tap.
        references: The models whose inputs `models` share.
    """
    built = [m for m in references if is_symbolic(m) and len(m.inputs) == 1]
    if not built:
        return
    shape = tuple(built[0].inputs[0].shape)
    for model in models:
        if isinstance(model, keras.Sequential) and not is_symbolic(model):
            model.build(shape)


def tap_model(model, names, role="model"):
    """Returns a model computing `{"logits": ..., name: output, ...}` at once.

    Args:
        model: A Keras model whose final output is the logits.
        names: Layer names, or `outer/inner` paths into nested sub-models,
            to tap.
        role: `"teacher"` or `"student"`, for error messages.

    Returns:
        A Keras model sharing `model`'s layers (and so its variables), or
        `None` when `names` is empty (then call `model` itself). Calling it
        runs each layer of `model` once.

    Raises:
        ValueError: if `model` is subclassed (no symbolic graph) and layers
            are named, if a name is unknown, or if a tapped layer (or the
            sub-model holding it) is called more than once in the graph, so
            that which call to tap is ambiguous.

    Example:

    ```python
    taps = tap_model(model, ["backbone/block_2", "head_dense"])
    outputs = taps(x)  # {"logits": ..., "backbone/block_2": ..., "head_dense": ...}
    ```
    """
    names = [n for n in dict.fromkeys(names) if n is not None]
    if not names:
        return None
    if not is_symbolic(model):
        raise ValueError(unbuilt_message(model, names, role))
    requests = {name: find_layer_path(model, name, role=role) for name in names}
    graph = _tap_graph(model, requests, role)
    outputs = dict(graph.outputs_by_key)
    main = outputs.pop(_OUTPUT)
    # As before nesting was supported: the flat list of outputs, or the one.
    flat = tf.nest.flatten(main)
    final = flat[0] if len(flat) == 1 else flat
    if LOGITS in outputs and outputs[LOGITS] is not final:
        # `"logits"` is the key of the final output in every tap and cache.
        raise ValueError(
            f"The {role} model has a layer named {LOGITS!r} that is not its "
            f"final output; tapping it would hide the final output, which "
            f"tf_distill reads under that name. Rename that layer."
        )
    outputs = {**outputs, LOGITS: final}
    return keras.Model(graph.inputs, outputs, name=f"{model.name}_taps")


def unbuilt_message(model, names, role):
    """Why the layers `names` of a model without a graph cannot be tapped, and
    the one line that gives it one."""
    if isinstance(model, keras.Sequential):
        return (
            f"Tapping layers {names} of the {role} model {model.name!r} needs "
            "its input shape, and it is a Sequential model that was never "
            "built (nor is the other model, whose inputs it shares). Build it "
            "first: `model.build((None, *input_shape))`, or start it with "
            "`keras.Input(input_shape)`."
        )
    return (
        f"Tapping layers {names} of the {role} model {model.name!r} needs a "
        "graph of its layers, and it is subclassed. Trace its `call` into a "
        "Functional model that shares its layers and weights, and pass that: "
        "`inputs = keras.Input(input_shape); model = keras.Model(inputs, "
        "subclassed.call(inputs))` (`subclassed(inputs)` would hide its "
        "layers inside one node). Or distill its final outputs only."
    )


class _Graph:
    """Symbolic inputs and `{key: tensor}` outputs, before a Model is made."""

    def __init__(self, inputs, outputs_by_key):
        self.inputs = inputs
        self.outputs_by_key = outputs_by_key


def _input_structure(model):
    """The model's inputs as callers pass them: a tensor, a list or a dict.

    `model.inputs` is always a flat list; a tap built on it would expect a
    list where the model takes a tensor (Keras warns) or a dict. A Keras 3
    Sequential's `input` is that of its first *call*, which for a nested
    Sequential is a tensor of the outer graph: its own `inputs` are used.
    """
    if isinstance(model, keras.Sequential):
        inputs = model.inputs
        return inputs[0] if len(inputs) == 1 else inputs
    try:
        return model.input
    except (AttributeError, ValueError):  # A model never called.
        inputs = model.inputs
        return inputs[0] if len(inputs) == 1 else inputs


def _output_structure(model):
    """The model's outputs as its call returns them (see `_input_structure`)."""
    if isinstance(model, keras.Sequential):
        outputs = model.outputs
        return outputs[0] if len(outputs) == 1 else outputs
    try:
        return model.output
    except (AttributeError, ValueError):
        outputs = model.outputs
        return outputs[0] if len(outputs) == 1 else outputs


def _tap_graph(model, requests, role):
    """`_Graph` of `model` with its output under `_OUTPUT` and each request.

    Args:
        model: A symbolic model.
        requests: `{key: path}`, each path a list of layers from a layer of
            `model` down to the tapped one (see `find_layer_path`).
        role: For error messages.
    """
    if all(len(path) == 1 for path in requests.values()) and (
        LEGACY_KERAS or not any(_called_elsewhere(path[0]) for path in requests.values())
    ):
        outputs = {_OUTPUT: _output_structure(model)}
        for key, (layer,) in requests.items():
            outputs[key] = _direct_output(model, layer, key, role)
        return _Graph(_input_structure(model), outputs)
    return _rebuilt_graph(model, requests, role)


def _called_elsewhere(layer):
    """Whether `layer` has been called more than once (in any graph).

    Its `output` is then that of its first call, which may be in another
    model or another place of this one: the graph is rebuilt instead, which
    finds the call in this graph or reports the ambiguity.
    """
    return len(getattr(layer, "_inbound_nodes", ())) > 1


def _direct_output(model, layer, key, role):
    """The output of a layer of `model` itself, checked to be in its graph."""
    try:
        tensor = layer.output
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"The output of layer {key!r} of the {role} model is not "
            f"reachable from its inputs in one pass ({error}). Tap a layer "
            "of the outer model, or a sub-model's output."
        ) from None
    if not _in_graph(model, tensor):
        raise ValueError(
            f"The output of layer {key!r} of the {role} model {model.name!r} "
            "is not part of its graph (the layer's first call was in another "
            "model). Tap a layer called once, in this model."
        )
    return tensor


def _rebuilt_graph(model, requests, role):
    """Rebuilds `model`'s graph on its own layers, tapping nested layers.

    Each nested sub-model holding a tapped layer is replaced, in the
    rebuilt graph, by a tap of itself (built recursively) that returns its
    usual output and the inner outputs: one call, the same layers.
    """
    if LEGACY_KERAS:
        nested = sorted(key for key, path in requests.items() if len(path) > 1)
        raise ValueError(
            f"Tapping layers inside nested sub-models ({nested}) of the {role} "
            "model needs Keras 3 (`keras.models.clone_model` with a "
            "`call_function`); tf_keras lacks it. Tap the sub-model itself "
            f"({nested[0].split('/')[0]!r}) or build the {role} without nesting."
        )
    direct = {}  # id(layer) -> keys tapping that layer's output
    nested = {}  # id(sub_model) -> (sub_model, {inner key: path inside it})
    for key, path in requests.items():
        if len(path) == 1:
            direct.setdefault(id(path[0]), []).append(key)
            continue
        sub_model = path[0]
        if not is_symbolic(sub_model):
            raise ValueError(
                f"Cannot tap {key!r}: the sub-model {sub_model.name!r} of the "
                f"{role} model is subclassed, so its layers' outputs are not "
                "part of a graph. Tap the sub-model itself "
                f"({sub_model.name!r}), or build it as a Functional model."
            )
        _, inner = nested.setdefault(id(sub_model), (sub_model, {}))
        inner[key] = path[1:]
    sub_taps = {}
    for identifier, (sub_model, inner) in nested.items():
        graph = _tap_graph(sub_model, inner, role)
        sub_taps[identifier] = keras.Model(
            graph.inputs, graph.outputs_by_key, name=f"{sub_model.name}_taps"
        )

    captured = {}
    calls = {}

    def call_function(layer, *args, **kwargs):
        identifier = id(layer)
        if identifier in direct or identifier in sub_taps:
            calls[identifier] = calls.get(identifier, 0) + 1
            if calls[identifier] > 1:
                keys = direct.get(identifier, []) + sorted(nested.get(identifier, (None, {}))[1])
                raise ValueError(
                    f"Cannot tap {keys} in the {role} model {model.name!r}: "
                    f"the layer {layer.name!r} is called more than once in its "
                    "graph, so which call's output to tap is ambiguous. Tap a "
                    "layer that is called once."
                )
        if identifier in sub_taps:
            results = dict(sub_taps[identifier](*args, **kwargs))
            outputs = results.pop(_OUTPUT)
            captured.update(results)
        else:
            outputs = layer(*args, **kwargs)
        for key in direct.get(identifier, []):
            captured[key] = outputs
        return outputs

    # A fresh Functional view of the graph: clone_model would otherwise
    # re-compile a compiled model, and refuses Sequential models.
    view = keras.Model(_input_structure(model), _output_structure(model))
    rebuilt = keras.models.clone_model(
        view, clone_function=lambda layer: layer, call_function=call_function
    )
    missing = [key for key in requests if key not in captured]
    if missing:
        raise ValueError(
            f"The outputs of {missing} of the {role} model {model.name!r} are "
            "not reachable from its inputs in one pass. Tap a layer on the "
            "path from the inputs to the outputs."
        )
    return _Graph(rebuilt.input, {_OUTPUT: rebuilt.output, **captured})


def _in_graph(model, tensor):
    try:
        keras.Model(model.inputs, tensor)
        return True
    except Exception:  # noqa: BLE001 - Keras raises several types here.
        return False
