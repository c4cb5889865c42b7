"""Builds KerasHub causal language models from sizes alone (nothing downloads).

`build_causal_lm` is what a config section calls to get a teacher or a student:
one function for GPT-2, Gemma and Llama-style backbones, so that a YAML file
names an architecture and its sizes, not a KerasHub class.
"""

from tf_distill.validation import check_choice

ARCHITECTURES = ("gpt2", "gemma", "llama")


def _check_positive(argument, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"`{argument}` must be a positive integer. Received: {argument}={value!r}"
        )


def build_causal_lm(
    architecture="gpt2",
    vocabulary_size=256,
    num_layers=2,
    hidden_dim=64,
    num_heads=2,
    intermediate_dim=None,
    max_sequence_length=128,
    num_key_value_heads=None,
    dropout=0.0,
    dtype=None,
    name=None,
):
    """Returns a `keras_hub.models.CausalLM` built from a config, without preprocessor.

    The model takes KerasHub's `{"token_ids", "padding_mask"}` dict and returns
    logits `[batch, time, vocabulary_size]`; it is randomly initialised.

    Args:
        architecture: `"gpt2"`, `"gemma"` or `"llama"`.
        vocabulary_size: number of token ids.
        num_layers: transformer blocks.
        hidden_dim: width of the residual stream; a multiple of `num_heads`.
        num_heads: attention (query) heads.
        intermediate_dim: width of the feed-forward layer; `4 * hidden_dim`
            when `None`.
        max_sequence_length: longest sequence the model accepts. GPT-2's learned
            position embedding has exactly this length; Gemma and Llama use
            rotary positions and have no such limit of their own, so it is
            recorded on the backbone (`backbone.max_sequence_length`) and
            enforced by `tf_distill.language.check_sequence_length`.
        num_key_value_heads: key/value heads of grouped-query attention (Gemma,
            Llama); `num_heads` when `None`.
        dropout: dropout rate inside the blocks.
        dtype: Keras dtype policy name, e.g. `"float32"` or `"mixed_float16"`.
        name: the model's name.

    Returns:
        A `keras_hub.models.CausalLM` (`GPT2CausalLM`, `GemmaCausalLM` or
        `LlamaCausalLM`) with `preprocessor=None`.

    Raises:
        ValueError: for an unknown architecture or a size that is not a
            positive integer, or `hidden_dim` not a multiple of `num_heads`.

    Example:

    ```python
    student = build_causal_lm("gpt2", vocabulary_size=256, num_layers=2,
                              hidden_dim=32, num_heads=2, max_sequence_length=64)
    logits = student({"token_ids": ids, "padding_mask": ids != 0})
    ```
    """
    import keras_hub

    check_choice("architecture", architecture, ARCHITECTURES)
    if intermediate_dim is None:
        intermediate_dim = 4 * hidden_dim if isinstance(hidden_dim, int) else hidden_dim
    if num_key_value_heads is None:
        num_key_value_heads = num_heads
    for argument, value in (
        ("vocabulary_size", vocabulary_size),
        ("num_layers", num_layers),
        ("hidden_dim", hidden_dim),
        ("num_heads", num_heads),
        ("intermediate_dim", intermediate_dim),
        ("max_sequence_length", max_sequence_length),
        ("num_key_value_heads", num_key_value_heads),
    ):
        _check_positive(argument, value)
    if hidden_dim % num_heads:
        raise ValueError(
            f"`hidden_dim` must be a multiple of `num_heads`. Received: "
            f"hidden_dim={hidden_dim}, num_heads={num_heads}"
        )
    if num_heads % num_key_value_heads:
        raise ValueError(
            f"`num_heads` must be a multiple of `num_key_value_heads`. Received: "
            f"num_heads={num_heads}, num_key_value_heads={num_key_value_heads}"
        )
    if architecture == "gpt2":
        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            max_sequence_length=max_sequence_length,
            dtype=dtype,
        )
        model_class = keras_hub.models.GPT2CausalLM
    elif architecture == "gemma":
        backbone = keras_hub.models.GemmaBackbone(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_query_heads=num_heads,
            num_key_value_heads=num_key_value_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            head_dim=hidden_dim // num_heads,
            dropout=dropout,
            dtype=dtype,
        )
        model_class = keras_hub.models.GemmaCausalLM
    else:
        backbone = keras_hub.models.LlamaBackbone(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_query_heads=num_heads,
            num_key_value_heads=num_key_value_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            dtype=dtype,
        )
        model_class = keras_hub.models.LlamaCausalLM
    if architecture != "gpt2":
        backbone.max_sequence_length = max_sequence_length
    kwargs = {} if name is None else {"name": name}
    return model_class(backbone=backbone, preprocessor=None, **kwargs)
