"""KerasHub presets in and out: load a teacher, initialise a student, save it.

A KerasHub preset is a folder (or a published handle such as
`"kaggle://keras/gpt2/keras/gpt2_base_en"` or `"hf://google/gemma-2b"`) that
holds a model's config, its weights and, for a task, its preprocessor and
tokenizer. `load_causal_lm` checks a local folder before KerasHub reads it;
`student_from_teacher` builds a student that keeps some of the teacher's
blocks (DistilBERT's initialisation, Sanh et al. 2019); `save_causal_lm_preset`
writes a distilled student as a preset folder that
`keras_hub.models.CausalLM.from_preset` loads with its tokenizer.
"""

import os
import shutil
import tempfile

from tf_distill.language import models as language_models

# What every saved KerasHub model preset holds (`keras_hub` preset saver).
PRESET_FILES = ("config.json", "metadata.json")
WEIGHTS_FILE = "model.weights.h5"
WEIGHTS_INDEX_FILE = "model.weights.json"  # sharded weights
TOKENIZER_FILE = "tokenizer.json"


def is_published_handle(preset):
    """Whether `preset` names a published preset (`kaggle://`, `hf://`, `gs://`,
    or one of KerasHub's preset names) rather than a local folder."""
    if "://" in preset:
        return True
    if os.path.exists(preset):
        return False
    import keras_hub

    return preset in keras_hub.models.CausalLM.presets


def check_preset(preset, argument="preset"):
    """Raises unless a local preset folder holds what KerasHub needs to load it.

    A published handle (see `is_published_handle`) is left to KerasHub,
    which downloads it.

    Args:
        preset: A folder or a published handle.
        argument: The argument's name in error messages.

    Raises:
        ValueError: naming the argument and every missing file.
    """
    if not isinstance(preset, (str, os.PathLike)):
        raise ValueError(
            f"`{argument}` must be a preset folder or a KerasHub preset handle. "
            f"Received: {argument}={preset!r}"
        )
    preset = os.fspath(preset)
    if is_published_handle(preset):
        return
    if not os.path.isdir(preset):
        raise ValueError(
            f"`{argument}` is not a folder. Expected a KerasHub preset folder (with "
            f"{', '.join(PRESET_FILES)} and the weights). Received: {argument}={preset!r}"
        )
    missing = [name for name in PRESET_FILES if not os.path.isfile(os.path.join(preset, name))]
    if not any(os.path.isfile(os.path.join(preset, name))
               for name in (WEIGHTS_FILE, WEIGHTS_INDEX_FILE)):
        missing.append(WEIGHTS_FILE)
    if missing:
        raise ValueError(
            f"`{argument}` is not a complete KerasHub preset folder: it lacks "
            f"{', '.join(missing)}. Received: {argument}={preset!r}"
        )


def load_causal_lm(preset, argument="preset"):
    """A `keras_hub.models.CausalLM` from a preset, with its preprocessor.

    Args:
        preset: A local preset folder (checked first, see `check_preset`) or
            a published handle, e.g. `"hf://google/gemma-2b"` (KerasHub
            downloads it; nothing in this package downloads otherwise).
        argument: The argument's name in error messages.

    Returns:
        The model, with `preprocessor` (and its tokenizer) when the preset
        has one.

    Raises:
        ValueError: for a local folder that misses files, or a preset that
            is not a causal LM.

    Example:

    ```python
    teacher = load_causal_lm("runs/teacher_preset")
    tokenizer = teacher.preprocessor.tokenizer
    ```
    """
    import keras_hub

    check_preset(preset, argument)
    preset = os.fspath(preset)
    try:
        return keras_hub.models.CausalLM.from_preset(preset)
    except ValueError as error:
        raise ValueError(
            f"`{argument}` does not hold a KerasHub causal LM: {error} "
            f"Received: {argument}={preset!r}"
        ) from None


def transformer_blocks(backbone):
    """The transformer blocks of a KerasHub backbone, in order."""
    blocks = getattr(backbone, "transformer_layers", None)
    if blocks is None:
        raise ValueError(
            "The backbone has no `transformer_layers`: expected a KerasHub GPT-2, "
            f"Gemma or Llama backbone. Received: {type(backbone).__name__}"
        )
    return list(blocks)


def _check_layers(layers, count):
    valid = (
        isinstance(layers, (list, tuple))
        and layers
        and all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
    )
    if not valid:
        raise ValueError(
            "`layers` must be a non-empty list of the teacher's block indices. "
            f"Received: layers={layers!r}"
        )
    if list(layers) != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= count:
        raise ValueError(
            f"`layers` must be increasing indices in [0, {count}) (the teacher has "
            f"{count} blocks), each once. Received: layers={list(layers)!r}"
        )


def student_from_teacher(teacher, layers, name=None):
    """A student that keeps some of the teacher's transformer blocks.

    DistilBERT's initialisation (Sanh et al. 2019, "taking one layer out of
    two"): the student has the teacher's architecture and widths with
    `len(layers)` blocks; its embeddings, final normalization and each kept
    block start as copies of the teacher's. The student shares the
    teacher's preprocessor (and tokenizer).

    Args:
        teacher: A KerasHub `CausalLM` (GPT-2, Gemma or Llama).
        layers: Increasing indices of the teacher's blocks to keep, e.g.
            `[0, 2, 4]`.
        name: The student's name.

    Returns:
        A new `CausalLM` of the teacher's class.

    Raises:
        ValueError: for indices out of range, repeated or not increasing.

    Example:

    ```python
    student = student_from_teacher(teacher, layers=[0, 2])
    ```
    """
    if not language_models.is_causal_lm(teacher):
        raise ValueError(
            "`teacher` must be a keras_hub.models.CausalLM. Received: teacher of type "
            f"{type(teacher).__name__}"
        )
    backbone = teacher.backbone
    blocks = transformer_blocks(backbone)
    _check_layers(layers, len(blocks))
    config = dict(backbone.get_config(), num_layers=len(layers))
    config.pop("name", None)
    student_backbone = type(backbone).from_config(config)
    limit = getattr(backbone, "max_sequence_length", None)
    if limit is not None and getattr(student_backbone, "max_sequence_length", None) is None:
        student_backbone.max_sequence_length = limit
    kept = [blocks[index] for index in layers]
    student_blocks = transformer_blocks(student_backbone)
    copies = dict(zip(map(id, student_blocks), kept))
    for layer in student_backbone.layers:
        source = copies.get(id(layer))
        if source is None:
            if not layer.weights:
                continue
            source = backbone.get_layer(layer.name)
        layer.set_weights(source.get_weights())
    kwargs = {} if name is None else {"name": name}
    return type(teacher)(backbone=student_backbone, preprocessor=teacher.preprocessor, **kwargs)


def with_preprocessor(model, preprocessor):
    """`model` (a `CausalLM`) with `preprocessor`: the model itself when it has
    one, else a new task of its class around the same backbone."""
    if getattr(model, "preprocessor", None) is not None or preprocessor is None:
        return model
    return type(model)(backbone=model.backbone, preprocessor=preprocessor, name=model.name)


def preprocessor_for(model, tokenizer, sequence_length):
    """A preprocessor of `model`'s class around `tokenizer`, or `None` when
    the class's preprocessor does not take that kind of tokenizer (a GPT-2
    student of a Llama tokenizer)."""
    preprocessor_class = getattr(type(model), "preprocessor_cls", None)
    tokenizer_class = getattr(preprocessor_class, "tokenizer_cls", None)
    if tokenizer is None or tokenizer_class is None or not isinstance(tokenizer, tokenizer_class):
        return None
    return preprocessor_class(tokenizer=tokenizer, sequence_length=sequence_length)


def save_causal_lm_preset(model, folder, preprocessor=None):
    """Writes a causal LM as a KerasHub preset folder, whole or not at all.

    The folder is written beside its destination and moved into place once
    complete: an existing preset at `folder` is replaced only by a complete
    one.

    Args:
        model: A KerasHub `CausalLM` (a `Distiller`'s student, say).
        folder: The preset folder to write.
        preprocessor: The preprocessor to save with it when the model has
            none (see `preprocessor_for`), so that `CausalLM.from_preset`
            loads the model with its tokenizer.

    Returns:
        The folder's path.

    Raises:
        ValueError: if `model` is not a KerasHub `CausalLM`.

    Example:

    ```python
    save_causal_lm_preset(distiller.student, "student_preset")
    student = keras_hub.models.CausalLM.from_preset("student_preset")
    ```
    """
    if not language_models.is_causal_lm(model):
        raise ValueError(
            "`model` must be a keras_hub.models.CausalLM. Received: model of type "
            f"{type(model).__name__}"
        )
    model = with_preprocessor(model, preprocessor)
    folder = os.path.abspath(os.fspath(folder))
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.", dir=parent)
    try:
        model.save_to_preset(staging)
        if os.path.isdir(folder):
            previous = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.old.", dir=parent)
            os.rmdir(previous)
            os.replace(folder, previous)
            os.replace(staging, folder)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(staging, folder)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def without_preprocessor(model):
    """`model` (a `CausalLM`) without its preprocessor: a task of its class
    around the same backbone (the same weights), which reads token ids.

    KerasHub's `fit`, `evaluate` and `predict` run a task's preprocessor on
    their data; a model trained on token ids must not have one.
    """
    if getattr(model, "preprocessor", None) is None:
        return model
    return type(model)(backbone=model.backbone, preprocessor=None, name=model.name)
