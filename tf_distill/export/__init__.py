"""Export a student to LiteRT (`.tflite`), quantized and verified.

Modules: `convert` (the converter, quantization, per-channel scales), `verify`
(the interpreter, comparison with Keras, latency), `report` (`ExportReport`
and its tables), `pipeline` (`export_litert`: convert, verify, write),
`arguments`, `inputs`, `flatbuffer` and `errors`; for causal language models,
`language` (`export_causal_lm`, which `export_litert` calls for a KerasHub
`CausalLM`: a fixed-length signature, perplexity in the report), `decode`
(`greedy_decode` over the interpreter), `tokens` (token data checks,
perplexity) and `weight_only` (int8 weight-only
quantization). For phones, `litertlm` (`export_litertlm`: a `.litertlm` file
that the LiteRT-LM runtime runs, with `prefill` and `decode` signatures over a
KV cache from `kv_cache`, checked by `cached_verify` through
`cached_decode`'s `CachedLMRunner`, quantized by `quantizer`
(`ai-edge-quantizer`), its tokenizer from `litertlm_tokenizer`).

`export_litert` converts the student with the TFLite converter, runs the
converted model in the LiteRT interpreter (`ai_edge_litert`) on held-out data,
compares it with the Keras model, and only then moves the file into place. A
conversion or verification failure leaves no file behind and never replaces a
previous good file at the destination.

Quantization modes (https://ai.google.dev/edge/litert/models/model_optimization):

- `"float32"`: no quantization; outputs must match Keras to 1e-4.
- `"dynamic"`: dynamic-range quantization, int8 weights, float activations.
- `"float16"`: float16 weights, float32 computation on CPU.
- `"int8"`: full integer quantization, activations calibrated on
  `representative_data`; with `int8_io=True` the inputs and outputs are int8
  as well (for integer-only accelerators).

In `"dynamic"` and `"int8"` modes the weights have one scale per output
channel by default (`per_channel=True`, the converter's default), which
keeps the accuracy of layers whose channels have very different ranges
(a convolution with batch normalization folded in). `per_channel=False`
stores one scale per tensor instead: a smaller file when the model is small
enough for the per-channel parameters to matter (a float32 scale and an int64
zero point per channel, for each kernel and bias), at a possible accuracy
cost that the verification measures like any other.

Runs under Keras 3 and, with `TF_USE_LEGACY_KERAS=1`, with tf_keras models
(pruned or quantization-aware students from `tf_distill.compression`).
"""

from tf_distill.export.arguments import QUANTIZATION_MODES
from tf_distill.export.cached_decode import CachedLMRunner
from tf_distill.export.cached_decode import keras_generate
from tf_distill.export.cached_verify import verify_cached_lm
from tf_distill.export.convert import convert_to_litert
from tf_distill.export.decode import greedy_decode
from tf_distill.export.decode import keras_greedy_decode
from tf_distill.export.errors import AccuracyDropError
from tf_distill.export.errors import ExportError
from tf_distill.export.errors import UnsupportedOpsError
from tf_distill.export.kv_cache import convert_cached_lm
from tf_distill.export.language import export_causal_lm
from tf_distill.export.language import verify_causal_lm
from tf_distill.export.litertlm import export_litertlm
from tf_distill.export.litertlm import runtime_generate
from tf_distill.export.pipeline import export_litert
from tf_distill.export.quantizer import LANGUAGE_QUANTIZATION_MODES
from tf_distill.export.report import ExportReport
from tf_distill.export.report import reports_table
from tf_distill.export.tokens import token_perplexity
from tf_distill.export.verify import FLOAT32_TOLERANCE
from tf_distill.export.verify import verify_litert

__all__ = [
    "QUANTIZATION_MODES",
    "FLOAT32_TOLERANCE",
    "ExportReport",
    "ExportError",
    "AccuracyDropError",
    "UnsupportedOpsError",
    "export_litert",
    "convert_to_litert",
    "verify_litert",
    "reports_table",
    "export_causal_lm",
    "verify_causal_lm",
    "greedy_decode",
    "keras_greedy_decode",
    "token_perplexity",
    "LANGUAGE_QUANTIZATION_MODES",
    "export_litertlm",
    "convert_cached_lm",
    "verify_cached_lm",
    "CachedLMRunner",
    "keras_generate",
    "runtime_generate",
]
