"""Feature taps: a model's logits and named intermediate outputs in one pass.

`keras.distillation` runs the student a second time through a feature
extractor whenever a layer is named. A tap model instead shares the
original's layers and returns every needed output from one forward pass, so
training it trains the original.
"""

from tf_distill.backend import keras

LOGITS = "logits"


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
    parts = name.split("/")
    current = model
    try:
        for part in parts:
            if not isinstance(current, keras.Model):
                raise ValueError(part)
            current = current.get_layer(part)
        return current
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
    matches = []
    for layer in model.layers:
        if layer.name == name:
            matches.append(layer)
        if isinstance(layer, keras.Model):
            matches.extend(_search(layer, name))
    return matches


def is_symbolic(model):
    """Whether `model` has symbolic inputs (Functional or built Sequential)."""
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def tap_model(model, names, role="model"):
    """Returns a model computing `{"logits": ..., name: output, ...}` at once.

    Args:
        model: A Keras model whose final output is the logits.
        names: Layer names (or `outer/inner` paths) to tap.
        role: `"teacher"` or `"student"`, for error messages.

    Returns:
        A Keras model sharing `model`'s layers, or `None` when `names` is
        empty (then call `model` itself).

    Raises:
        ValueError: if `model` is subclassed (no symbolic graph) and layers
            are named, or if a name is unknown.
    """
    names = [n for n in dict.fromkeys(names) if n is not None]
    if not names:
        return None
    if not is_symbolic(model):
        raise ValueError(
            f"Tapping layers {names} needs a Functional or Sequential "
            f"{role} model with known inputs; {model.name!r} is subclassed "
            "or not built. Build it on an `Input`, or distill its final "
            "outputs only."
        )
    outputs = {LOGITS: model.outputs[0] if len(model.outputs) == 1 else model.outputs}
    for name in names:
        layer = find_layer(model, name, role=role)
        try:
            outputs[name] = layer.output
        except (AttributeError, ValueError) as error:
            raise ValueError(
                f"The output of layer {name!r} of the {role} model is not "
                f"reachable from its inputs in one pass ({error}). Tap a layer "
                "of the outer model, or a sub-model's output."
            ) from None
        if not _in_graph(model, outputs[name]):
            raise ValueError(
                f"Layer {name!r} sits inside a nested sub-model of the {role} "
                "model; its output is not part of the outer graph. Tap the "
                f"sub-model itself ({name.split('/')[0]!r}) or build the "
                f"{role} without nesting."
            )
    return keras.Model(_input_structure(model), outputs, name=f"{model.name}_taps")


def _input_structure(model):
    """The model's inputs as callers pass them: a tensor, a list or a dict.

    `model.inputs` is always a flat list; a tap built on it would expect a
    list where the model takes a tensor (Keras warns) or a dict.
    """
    try:
        return model.input
    except (AttributeError, ValueError):  # A Sequential never called.
        inputs = model.inputs
        return inputs[0] if len(inputs) == 1 else inputs


def _in_graph(model, tensor):
    try:
        keras.Model(model.inputs, tensor)
        return True
    except Exception:  # noqa: BLE001 - Keras raises several types here.
        return False
