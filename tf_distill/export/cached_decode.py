"""Greedy decoding with a KV cache: the LiteRT file as the runtime runs it, and Keras.

`CachedLMRunner` drives the `prefill_<T>` and `decode` signatures of a file
`convert_cached_lm` wrote (see `export.kv_cache`) in the `ai_edge_litert`
interpreter the way the LiteRT-LM runtime does: the prompt but its last
token goes through prefill in chunks of `T` (a short chunk padded with
token 0 at position 0), and the last prompt token is the first decode
call's input. `keras_generate` is the reference: KerasHub's own `generate`
with a greedy sampler, on token ids.
"""

import os
import weakref

import numpy as np

from tf_distill.export.decode import check_prompt
from tf_distill.export.errors import ExportError
from tf_distill.export.kv_cache import DECODE
from tf_distill.export.kv_cache import INPUT_POSITIONS
from tf_distill.export.kv_cache import LOGITS
from tf_distill.export.kv_cache import PREFILL_PREFIX
from tf_distill.export.kv_cache import TOKENS

_LENGTH_BUCKET = 64
# Each model's greedy generate function, traced once per length bucket.
_GREEDY_FUNCTIONS = weakref.WeakKeyDictionary()


class CachedLMRunner:
    """The `ai_edge_litert` interpreter behind a prefill/decode LiteRT LM.

    Holds the caches between calls; `reset` empties them.

    Args:
        litert_model: `.tflite` bytes or a path, with a `prefill_<T>` and a
            `decode` signature.
        num_threads: Interpreter threads.

    Raises:
        ExportError: If the interpreter cannot load the file or it lacks
            the signatures.
    """

    def __init__(self, litert_model, num_threads=1):
        # Imported here so that importing tf_distill stays light.
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(litert_model, (str, os.PathLike)):
            with open(litert_model, "rb") as handle:
                litert_model = handle.read()
        try:
            self.interpreter = Interpreter(
                model_content=bytes(litert_model), num_threads=num_threads
            )
            signatures = self.interpreter.get_signature_list()
        except (RuntimeError, ValueError) as error:
            raise ExportError(f"The LiteRT interpreter cannot load the model: {error}") from error
        prefills = sorted(name for name in signatures if name.startswith(PREFILL_PREFIX))
        if DECODE not in signatures or not prefills:
            raise ExportError(
                "A cached LiteRT LM needs a `decode` and a `prefill_<T>` signature. "
                f"Received signatures {sorted(signatures)}."
            )
        self._decode = self.interpreter.get_signature_runner(DECODE)
        self._prefill = self.interpreter.get_signature_runner(prefills[0])
        details = self._decode.get_input_details()
        self.cache_names = sorted(name for name in details if name.startswith("kv_cache_"))
        self._cache_shapes = {name: tuple(details[name]["shape"]) for name in self.cache_names}
        self.prefill_length = int(self._prefill.get_input_details()[TOKENS]["shape"][1])
        self.cache_length = int(self._cache_shapes[self.cache_names[0]][2])
        self.vocabulary_size = int(self._decode.get_output_details()[LOGITS]["shape"][-1])
        self.reset()

    @property
    def max_num_tokens(self):
        """The longest context the caches hold (see `CacheSpec.max_num_tokens`)."""
        return self.cache_length - self.prefill_length

    def reset(self):
        """Empties the caches."""
        self.caches = {
            name: np.zeros(shape, np.float32) for name, shape in self._cache_shapes.items()
        }

    def _run(self, runner, tokens, positions):
        try:
            outputs = runner(
                **{TOKENS: tokens, INPUT_POSITIONS: positions}, **self.caches
            )
        except (RuntimeError, ValueError) as error:
            message = " ".join(str(error).split())[:500]
            raise ExportError(f"The LiteRT interpreter failed to run the model: {message}") from error
        self.caches = {name: outputs[name] for name in self.cache_names}
        return outputs

    def prefill(self, token_ids, start=0):
        """Writes `token_ids` (1-D) to the caches from position `start`."""
        token_ids = np.asarray(token_ids, np.int32)
        length = self.prefill_length
        for offset in range(0, len(token_ids), length):
            chunk = token_ids[offset : offset + length]
            tokens = np.zeros((1, length), np.int32)
            positions = np.zeros((length,), np.int32)
            tokens[0, : len(chunk)] = chunk
            positions[: len(chunk)] = np.arange(len(chunk)) + start + offset
            self._run(self._prefill, tokens, positions)

    def decode(self, token, position):
        """The float32 logits `[V]` after `token` at `position`; its row is cached."""
        outputs = self._run(
            self._decode, np.array([[token]], np.int32), np.array([position], np.int32)
        )
        return np.asarray(outputs[LOGITS], np.float32).reshape(-1)

    def generate(self, prompt_ids, num_tokens):
        """Greedy ids `[num_tokens]` after `prompt_ids`, from empty caches."""
        prompt = check_prompt(prompt_ids, num_tokens, self.vocabulary_size, "CachedLMRunner")
        if len(prompt) + num_tokens > self.max_num_tokens:
            raise ValueError(
                f"The prompt and the tokens to generate ({len(prompt)} + {num_tokens}) exceed "
                f"the model's context of {self.max_num_tokens} tokens."
            )
        self.reset()
        self.prefill(prompt[:-1])
        token, generated = int(prompt[-1]), []
        for position in range(len(prompt) - 1, len(prompt) - 1 + num_tokens):
            token = int(np.argmax(self.decode(token, position)))
            generated.append(token)
        return np.array(generated, np.int32)

    def score(self, token_ids):
        """Logits `[n, V]` of each of `token_ids`'s next tokens, decoding one at a time."""
        self.reset()
        return np.stack(
            [self.decode(int(token), position) for position, token in enumerate(token_ids)]
        )


def keras_generate(model, prompt_ids, num_tokens):
    """Greedy ids `[num_tokens]` after `prompt_ids` from KerasHub's `generate`.

    Runs the model's compiled generate function on token ids with a greedy
    sampler and no stop token, so a preset-loaded model's preprocessor is
    not involved; the model's own sampler is put back afterwards.

    Args:
        model: A KerasHub `CausalLM`.
        prompt_ids: 1-D token ids, at least one.
        num_tokens: Tokens to generate, >= 1.

    Returns:
        An int32 array `[num_tokens]`.
    """
    import keras_hub

    prompt = check_prompt(prompt_ids, num_tokens, None, "keras_generate")
    # Lengths rounded up to a multiple of 64 share one trace of the model's
    # greedy generate function (kept per model); the tokens past
    # `num_tokens` are generated and dropped. GPT-2 has no positions past
    # its `max_sequence_length`.
    needed = len(prompt) + num_tokens
    length = -(-needed // _LENGTH_BUCKET) * _LENGTH_BUCKET
    maximum = getattr(model.backbone, "max_sequence_length", None)
    if maximum is not None:
        length = max(needed, min(length, int(maximum)))
    token_ids = np.zeros((1, length), np.int32)
    padding_mask = np.zeros((1, length), bool)
    token_ids[0, : len(prompt)] = prompt
    padding_mask[0, : len(prompt)] = True
    sampler, function = model.sampler, model.generate_function
    model.sampler = keras_hub.samplers.GreedySampler()
    model.generate_function = _GREEDY_FUNCTIONS.get(model)
    try:
        greedy_function = model.make_generate_function()
        _GREEDY_FUNCTIONS[model] = greedy_function
        outputs = greedy_function(
            {"token_ids": token_ids, "padding_mask": padding_mask}, stop_token_ids=None
        )
    finally:
        model.sampler, model.generate_function = sampler, function
    return np.asarray(outputs["token_ids"], np.int32)[0, len(prompt) : len(prompt) + num_tokens]


