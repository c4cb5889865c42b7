"""Prefill/decode signatures with a KV cache (export.kv_cache, export.cached_decode)."""

import numpy as np
import pytest

from tf_distill.backend import keras
from tf_distill.export import CachedLMRunner
from tf_distill.export import convert_cached_lm
from tf_distill.export import keras_generate
from tf_distill.export.kv_cache import cache_spec
from tf_distill.language import build_causal_lm

CACHE_LENGTH = 96
PREFILL_LENGTH = 8
# Prompts of 1, 11 and 20 tokens: the last takes three prefill calls, the third
# padded as the runtime pads it (token 0 at position 0).
PROMPTS = ([7], [5, 17, 99, 3, 42, 8, 200, 13, 77, 1, 66], list(range(30, 50)))


def _model(architecture, seed=0):
    keras.utils.set_random_seed(seed)
    # Gemma's and Llama's grouped-query attention: 4 query heads, 2 key/value heads.
    heads = {"num_heads": 2} if architecture == "gpt2" else {"num_heads": 4,
                                                             "num_key_value_heads": 2}
    return build_causal_lm(architecture, vocabulary_size=256, num_layers=2, hidden_dim=32,
                           max_sequence_length=CACHE_LENGTH, **heads)


@pytest.mark.slow  # a conversion (3 s) and three greedy generations per architecture
@pytest.mark.parametrize("architecture", ["gpt2", "gemma", "llama"])
def test_greedy_tokens_equal_kerass_generate_for_64_tokens(architecture):
    model = _model(architecture)
    litert_model, spec = convert_cached_lm(model, prefill_length=PREFILL_LENGTH)
    runner = CachedLMRunner(litert_model)
    # Two key/value heads of 32 / query heads.
    assert spec.shape == (1, 2, CACHE_LENGTH, 16 if architecture == "gpt2" else 8)
    assert runner.interpreter.get_signature_list().keys() == {"prefill_8", "decode"}
    assert runner.max_num_tokens == CACHE_LENGTH - PREFILL_LENGTH
    for prompt in PROMPTS:
        litert_ids = runner.generate(prompt, 64)
        np.testing.assert_array_equal(litert_ids, keras_generate(model, prompt, 64))
    # Decoding one token at a time gives the full forward pass's logits.
    tokens = np.array(PROMPTS[1] + PROMPTS[2], np.int32)
    keras_logits = np.asarray(model({"token_ids": tokens[None],
                                     "padding_mask": np.ones((1, len(tokens)), bool)}))[0]
    np.testing.assert_allclose(runner.score(tokens), keras_logits, atol=1e-4)


@pytest.fixture(scope="module")
def small_llama():
    """A Llama file with a 32-row cache and prefill calls of 4 tokens."""
    litert_model, _ = convert_cached_lm(_model("llama"), cache_length=32, prefill_length=4)
    return CachedLMRunner(litert_model)


@pytest.mark.slow  # a conversion, shared with the next test
def test_the_signatures_hold_what_the_runtime_looks_up(small_llama):
    runner = small_llama
    signatures = runner.interpreter.get_signature_list()
    caches = ["kv_cache_k_0", "kv_cache_k_1", "kv_cache_v_0", "kv_cache_v_1"]
    assert sorted(signatures["decode"]["inputs"]) == sorted(caches + ["input_pos", "tokens"])
    assert sorted(signatures["decode"]["outputs"]) == sorted(caches + ["logits"])
    # Prefill returns only the caches: no [T, V] logits computed for nothing.
    assert sorted(signatures["prefill_4"]["outputs"]) == caches
    prefill = runner.interpreter.get_signature_runner("prefill_4").get_input_details()
    assert list(prefill["tokens"]["shape"]) == [1, 4]
    assert list(prefill["input_pos"]["shape"]) == [4]
    assert list(prefill["kv_cache_k_0"]["shape"]) == [1, 2, 32, 8]  # [1, heads, C, dim]


@pytest.mark.parametrize("arguments, message", [
    ({"cache_length": 200}, "`cache_length` must be at most the model's max_sequence_length=96"),
    ({"prefill_length": 96}, "`prefill_length` must be smaller than `cache_length`"),
    ({"cache_length": 1.5}, "`cache_length` must be an integer >= 2"),
])
def test_bad_lengths_are_refused_in_one_line(arguments, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cache_spec(_model("gpt2"), **arguments)


def test_an_architecture_without_a_cached_export_is_refused_naming_the_supported():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="GPT2CausalLM, GemmaCausalLM, LlamaCausalLM .* "
                                         "Received: a Sequential"):
        convert_cached_lm(model)


@pytest.mark.slow  # the conversion of `small_llama`
def test_a_prompt_longer_than_the_context_is_refused(small_llama):
    with pytest.raises(ValueError, match=r"\(25 \+ 5\) exceed the model's context of 28"):
        small_llama.generate(list(range(25)), 5)
