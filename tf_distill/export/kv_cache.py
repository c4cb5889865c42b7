"""A KerasHub causal LM as LiteRT `prefill` and `decode` signatures with a KV cache.

The LiteRT-LM runtime (the one Android and iOS apps run) looks up these
signatures in a `.tflite` file:

- `prefill_<T>`: `tokens` int32 `[1, T]` and `input_pos` int32 `[T]` (a
  chunk of the prompt and its positions) and the caches; returns the
  updated caches.
- `decode`: `tokens` int32 `[1, 1]` and `input_pos` int32 `[1]`, and the
  caches; returns `logits` float32 `[1, 1, V]` and the updated caches.

The caches are one `kv_cache_k_<i>` and one `kv_cache_v_<i>` per layer,
float32 `[1, heads, C, head_dim]` (`C`, the cache length), returned under
the input names (on CPU the runtime gives input and output the same
buffer). Heads come before positions because, without a `mask` input, the
runtime reads the context length from `kv_cache_k_0`'s dimension 2.

Both signatures are KerasHub's own cached call (`CausalLM.call_with_cache`,
what `generate` runs): the caches are stacked into its
`[1, layers, 2, C, heads, head_dim]` tensor and split back, and it writes
the `T` new rows contiguously from `input_pos[0]` (the converter's
`DYNAMIC_UPDATE_SLICE`). That is what the runtime needs: it pads a short
prefill chunk with token 0 at position 0, and rows past the current
position are masked by KerasHub's causal mask until a later call writes
them. `DYNAMIC_UPDATE_SLICE` clamps its start so that `T` rows fit, so the
cache holds the context plus one prefill chunk: the runtime's context is
`C - T` tokens (`CacheSpec.max_num_tokens`).

Every decode step attends over the whole fixed-size cache, masked, so its
cost does not grow with the position (bench/bench_export_language.py).
"""

import dataclasses
import sys
import tempfile

from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.export.errors import ExportError
from tf_distill.export.inputs import unwrap_student

DECODE = "decode"
PREFILL_PREFIX = "prefill"
TOKENS = "tokens"
INPUT_POSITIONS = "input_pos"
LOGITS = "logits"
# KerasHub causal LMs whose `call_with_cache` the export runs, by class name.
SUPPORTED_ARCHITECTURES = ("GPT2CausalLM", "GemmaCausalLM", "LlamaCausalLM")


def cache_input_name(kind, layer):
    """`kv_cache_k_<layer>` or `kv_cache_v_<layer>` (`kind` is `"k"` or `"v"`)."""
    return f"kv_cache_{kind}_{layer}"


@dataclasses.dataclass(frozen=True)
class CacheSpec:
    """The geometry of an exported KV cache.

    Attributes:
        num_layers: Transformer blocks (one `k` and one `v` cache each).
        num_heads: Key/value heads (fewer than the query heads with
            grouped-query attention).
        head_dim: Width of one head.
        cache_length: `C`, the rows of each cache.
        prefill_length: `T`, the tokens of one prefill call.
    """

    num_layers: int
    num_heads: int
    head_dim: int
    cache_length: int
    prefill_length: int

    @property
    def shape(self):
        """The shape of each cache tensor, `[1, heads, C, head_dim]`."""
        return (1, self.num_heads, self.cache_length, self.head_dim)

    @property
    def max_num_tokens(self):
        """The longest context (prompt and generated tokens): `C - T`."""
        return self.cache_length - self.prefill_length

    @property
    def prefill_signature(self):
        """The prefill signature's name, `prefill_<T>`."""
        return f"{PREFILL_PREFIX}_{self.prefill_length}"


def cached_architecture(model):
    """The class name of a supported KerasHub causal LM, else `ValueError`."""
    keras_hub = sys.modules.get("keras_hub")  # Only a loaded KerasHub can have made it.
    if keras_hub is not None:
        for name in SUPPORTED_ARCHITECTURES:
            if isinstance(model, getattr(keras_hub.models, name)):
                return name
    raise ValueError(
        "The cached (prefill/decode) export supports KerasHub causal LMs of the classes "
        f"{', '.join(SUPPORTED_ARCHITECTURES)} (or a Distiller whose student is one). "
        f"Received: a {type(model).__name__}"
    )


def cache_spec(model, cache_length=None, prefill_length=32):
    """The `CacheSpec` of a supported causal LM, its arguments checked.

    Args:
        model: A KerasHub `GPT2CausalLM`, `GemmaCausalLM` or `LlamaCausalLM`,
            or a `Distiller` whose student is one.
        cache_length: `C`; defaults to the backbone's `max_sequence_length`.
        prefill_length: `T`, tokens per prefill call; `2 <= T < C`.

    Returns:
        A `CacheSpec`.

    Raises:
        ValueError: For an unsupported model, a length that is not an
            integer, `prefill_length >= cache_length`, or a cache longer than
            the model's `max_sequence_length`.
    """
    model = unwrap_student(model)
    architecture = cached_architecture(model)
    backbone = model.backbone
    maximum = getattr(backbone, "max_sequence_length", None)
    if cache_length is None:
        if maximum is None:
            raise ValueError(
                "`cache_length` is required: the model's backbone records no "
                "`max_sequence_length`. Received: cache_length=None"
            )
        cache_length = int(maximum)
    for argument, value in (("cache_length", cache_length), ("prefill_length", prefill_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"`{argument}` must be an integer >= 2. Received: {argument}={value!r}")
    if maximum is not None and cache_length > maximum:
        raise ValueError(
            f"`cache_length` must be at most the model's max_sequence_length={maximum}. "
            f"Received: cache_length={cache_length}"
        )
    if prefill_length >= cache_length:
        raise ValueError(
            "`prefill_length` must be smaller than `cache_length` (the cache holds the "
            f"context plus one prefill chunk). Received: prefill_length={prefill_length}, "
            f"cache_length={cache_length}"
        )
    if architecture == "GPT2CausalLM":
        heads, head_dim = backbone.num_heads, backbone.hidden_dim // backbone.num_heads
    elif architecture == "GemmaCausalLM":
        heads, head_dim = backbone.num_key_value_heads, backbone.head_dim
    else:
        heads = backbone.num_key_value_heads
        head_dim = backbone.hidden_dim // backbone.num_query_heads
    return CacheSpec(int(backbone.num_layers), int(heads), int(head_dim), cache_length,
                     prefill_length)


def convert_cached_lm(model, cache_length=None, prefill_length=32):
    """The causal LM as float32 LiteRT bytes with `prefill_<T>` and `decode`, unverified.

    Exported through `keras.export.ExportArchive` tracking the backbone only
    (every weight `call_with_cache` reads), so that a preset-loaded model's
    preprocessor, whose tokenizer holds a lookup table LiteRT cannot run,
    stays out of the file.

    Args:
        model, cache_length, prefill_length: As in `cache_spec`.

    Returns:
        `(litert_model, spec)`: the `.tflite` bytes and the `CacheSpec`.

    Raises:
        ValueError: As `cache_spec`.
        ExportError: If the converter fails.
    """
    spec = cache_spec(model, cache_length, prefill_length)
    model = unwrap_student(model)
    signatures = {spec.prefill_signature: spec.prefill_length, DECODE: 1}
    with tempfile.TemporaryDirectory() as directory:
        try:
            archive = keras.export.ExportArchive()
            archive.track(model.backbone)
            for name, length in signatures.items():
                archive.add_endpoint(
                    name,
                    _cached_step(model, spec, with_logits=name == DECODE),
                    input_signature=_input_specs(spec, length),
                )
            archive.write_out(directory, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(
                directory, signature_keys=list(signatures)
            )
            return converter.convert(), spec
        except Exception as error:  # The converter raises a private class.
            lines = [line for line in str(error).splitlines() if line.strip()]
            raise ExportError(
                "LiteRT conversion of the cached causal LM failed: " + "\n".join(lines[:12])
            ) from error


def _input_specs(spec, length):
    specs = [
        tf.TensorSpec([1, length], tf.int32, name=TOKENS),
        tf.TensorSpec([length], tf.int32, name=INPUT_POSITIONS),
    ]
    for kind in "kv":
        specs += [
            tf.TensorSpec(spec.shape, tf.float32, name=cache_input_name(kind, layer))
            for layer in range(spec.num_layers)
        ]
    return specs


def _cached_step(model, spec, with_logits):
    layers = spec.num_layers

    def step(tokens, input_pos, *caches):
        keys, values = caches[:layers], caches[layers:]
        # The runtime's [1, heads, C, dim] per layer -> KerasHub's
        # [1, layers, 2, C, heads, dim].
        cache = tf.stack(
            [
                tf.stack([tf.transpose(key, [0, 2, 1, 3]), tf.transpose(value, [0, 2, 1, 3])], 1)
                for key, value in zip(keys, values)
            ],
            axis=1,
        )
        logits, _, cache = model.call_with_cache(tokens, cache, input_pos[0])
        outputs = {LOGITS: logits} if with_logits else {}
        for layer in range(layers):
            for index, kind in enumerate("kv"):
                outputs[cache_input_name(kind, layer)] = tf.transpose(
                    cache[:, layer, index], [0, 2, 1, 3]
                )
        return outputs

    return step
