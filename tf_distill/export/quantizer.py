"""Quantizing a prefill/decode LiteRT LM with `ai-edge-quantizer` (Google's library).

Modes (`LANGUAGE_QUANTIZATION_MODES`):

- `"float32"`: the converter's output, unchanged.
- `"int8"`: int8 weights with one scale per output channel.
- `"int4"`: int4 weights with one scale per block of 32 input values.

Both quantized modes use the library's *dynamic* recipes (`add_dynamic_config`):
the weights stay integer in memory and the CPU kernels (XNNPACK, in both
`ai_edge_litert` and the LiteRT-LM runtime) quantize the activations on the
fly. The library's "weight-only" recipes instead put a `DEQUANTIZE` op
before each float matrix product, whose float32 weights the runtime
materializes at load time: a smaller file but no smaller process, the
problem of the hand-written int8 pass of `export.weight_only`.
"""

import contextlib
import io

from tf_distill.export.errors import ExportError

LANGUAGE_QUANTIZATION_MODES = ("float32", "int8", "int4")
# The input values that share one int4 scale.
_BLOCK_SIZE = 32


def check_language_quantization(quantization):
    """Raises `ValueError` unless `quantization` is a language-model mode."""
    if quantization not in LANGUAGE_QUANTIZATION_MODES:
        raise ValueError(
            "Invalid value for argument `quantization`. Expected one of "
            f"{LANGUAGE_QUANTIZATION_MODES}. Received: quantization={quantization!r}"
        )


def check_block_dimensions(model, quantization):
    """Raises `ValueError` if `"int4"`'s blocks of 32 do not divide the weights.

    Every matrix product's input dimension (the width, the feed-forward
    width, the attention heads' total width) must be a multiple of 32.

    Args:
        model: A KerasHub causal LM (GPT-2, Gemma or Llama).
        quantization: The mode; only `"int4"` is checked.
    """
    if quantization != "int4":
        return
    backbone = model.backbone
    heads = getattr(backbone, "num_query_heads", None) or getattr(backbone, "num_heads", None)
    head_dim = getattr(backbone, "head_dim", None) or backbone.hidden_dim // heads
    dimensions = {
        "hidden_dim": backbone.hidden_dim,
        "intermediate_dim": backbone.intermediate_dim,
        "heads x head_dim": heads * head_dim,
    }
    uneven = {name: int(value) for name, value in dimensions.items() if value % _BLOCK_SIZE}
    if uneven:
        raise ValueError(
            f"`quantization='int4'` quantizes weights in blocks of {_BLOCK_SIZE} input "
            f"values, so the model's widths must be multiples of {_BLOCK_SIZE}. Received: "
            + ", ".join(f"{name}={value}" for name, value in uneven.items())
            + ". Use 'int8' for this model."
        )


def quantize_language_model(litert_model, quantization):
    """Quantizes the weights of float32 LiteRT bytes (see the module docstring).

    Args:
        litert_model: float32 `.tflite` bytes.
        quantization: One of `LANGUAGE_QUANTIZATION_MODES`.

    Returns:
        The quantized `.tflite` bytes (`litert_model` itself for `"float32"`).

    Raises:
        ValueError: For an unknown mode.
        ExportError: If the quantizer fails.
    """
    check_language_quantization(quantization)
    if quantization == "float32":
        return litert_model
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer import recipe_manager

    granularity = {
        "int8": qtyping.QuantGranularity.CHANNELWISE,
        "int4": qtyping.QuantGranularity.BLOCKWISE_32,
    }[quantization]
    recipe = recipe_manager.RecipeManager()
    recipe.add_dynamic_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=8 if quantization == "int8" else 4,
        granularity=granularity,
    )
    try:
        # The library prints its progress and a summary to stdout.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            result = quantizer.Quantizer(
                bytes(litert_model), recipe.get_quantization_recipe()
            ).quantize()
    except Exception as error:  # The library raises assorted private errors.
        raise ExportError(f"ai-edge-quantizer failed in {quantization} mode: {error}") from error
    return bytes(result.quantized_model)
