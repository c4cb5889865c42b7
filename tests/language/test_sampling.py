"""Cached, seeded sampling of continuations (`tf_distill.language.sampling`)."""

import numpy as np
import pytest

from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.language import build_causal_lm
from tf_distill.language.sampling import generate_continuations
from tf_distill.language.sampling import has_cache
from tf_distill.language.sampling import sample_continuations

VOCABULARY = 64
LENGTH = 16
PROMPT = 4


def tiny(architecture="gpt2", seed=5):
    keras.utils.set_random_seed(seed)
    return build_causal_lm(
        architecture,
        vocabulary_size=VOCABULARY,
        num_layers=1,
        hidden_dim=16,
        num_heads=2,
        max_sequence_length=LENGTH,
        name=f"sampler_{architecture}",
    )


@pytest.fixture(scope="module")
def model():
    return tiny()


def token_ids(seed=0, rows=4):
    return np.random.default_rng(seed).integers(1, VOCABULARY, (rows, LENGTH)).astype("int32")


def without_cache(model):
    """The model as a plain callable: no `generate_step`, no cache."""
    return lambda inputs, training=False: model(inputs, training=training)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_the_cached_sampler_draws_the_tokens_of_the_full_forward_loop(architecture):
    model = tiny(architecture)
    ids = token_ids()
    assert has_cache(model) and not has_cache(without_cache(model))
    cached = generate_continuations(model, ids, PROMPT, [7, 1], top_k=8, use_cache=True)
    full = generate_continuations(without_cache(model), ids, PROMPT, [7, 1], top_k=8)
    np.testing.assert_array_equal(cached.token_ids, full.token_ids)
    np.testing.assert_array_equal(cached.token_ids[:, :PROMPT], ids[:, :PROMPT])
    expected = np.zeros((4, LENGTH), "float32")
    expected[:, PROMPT - 1 : LENGTH - 1] = 1.0
    np.testing.assert_array_equal(cached.loss_mask, expected)
    assert np.asarray(cached.padding_mask).all()


def test_a_seed_fixes_the_samples_and_compiled_equals_eager(model):
    ids = token_ids()
    first = sample_continuations(model, ids, PROMPT, [7, 1], temperature=1.5)
    again = sample_continuations(model, ids, PROMPT, [7, 1], temperature=1.5)
    other = sample_continuations(model, ids, PROMPT, [8, 1], temperature=1.5)
    np.testing.assert_array_equal(first, again)
    assert (np.asarray(first) != np.asarray(other)).any()
    compiled = tf.function(
        lambda t: sample_continuations(model, t, PROMPT, [7, 1], temperature=1.5)
    )
    np.testing.assert_array_equal(compiled(ids), first)


def test_the_models_compiled_sampler_is_not_used_and_is_kept(model):
    # A CausalLM compiles with KerasHub's top-k (k = 5) sampler by default;
    # a temperature of 100 samples almost uniformly instead, over 64 tokens.
    model.compile(sampler="top_k")
    sampler = model.sampler
    ids = np.tile(token_ids(rows=1), (32, 1))
    sampled = np.asarray(sample_continuations(model, ids, PROMPT, [0, 0], temperature=100.0))
    assert model.sampler is sampler
    assert len(np.unique(sampled[:, PROMPT])) > 5


def test_generation_stops_at_the_end_token_and_masks_what_follows(model):
    ids = token_ids(1)
    greedy = np.asarray(sample_continuations(model, ids, PROMPT, [0, 0], greedy=True))
    end = int(greedy[0, PROMPT + 2])
    first_end = [
        next((t for t in range(PROMPT, LENGTH) if greedy[row, t] == end), None)
        for row in range(4)
    ]
    out = generate_continuations(model, ids, PROMPT, [0, 0], greedy=True, end_token_id=end)
    full = generate_continuations(
        without_cache(model), ids, PROMPT, [0, 0], greedy=True, end_token_id=end
    )
    np.testing.assert_array_equal(out.token_ids, full.token_ids)
    tokens, mask, loss_mask = (np.asarray(value) for value in out)
    for row, stop in enumerate(first_end):
        stop = LENGTH - 1 if stop is None else stop
        np.testing.assert_array_equal(tokens[row, : stop + 1], greedy[row, : stop + 1])
        assert (tokens[row, stop + 1 :] == end).all()
        # The end token counts (predicted at stop − 1); nothing after it.
        expected = np.zeros(LENGTH, "float32")
        expected[PROMPT - 1 : stop] = 1.0
        np.testing.assert_array_equal(loss_mask[row], expected)
        assert mask[row, : stop + 1].all() and not mask[row, stop + 1 :].any()
    # One row: the loop stops at its end token; the positions never written
    # hold the end token and are masked.
    alone = generate_continuations(model, ids[:1], PROMPT, [0, 0], greedy=True, end_token_id=end)
    np.testing.assert_array_equal(alone.token_ids, tokens[:1])
    np.testing.assert_array_equal(alone.loss_mask, loss_mask[:1])


def test_an_end_token_in_the_prompt_does_not_stop_generation(model):
    # Pad id == end id: the prompt's padding holds the end id, and the
    # generated tokens after the real prompt still count.
    end = 0
    ids = token_ids(2)
    ids[1, 2:PROMPT] = end
    padding_mask = np.ones_like(ids, bool)
    padding_mask[1, 2:] = False
    out = generate_continuations(
        model, ids, PROMPT, [0, 0], padding_mask=padding_mask, end_token_id=end
    )
    # Each row's mask ends at its first *generated* end token, if any.
    tokens, mask, loss_mask = (np.asarray(value) for value in out)
    for row in range(4):
        start = 2 if row == 1 else PROMPT
        generated = tokens[row, start:]
        stop = start + int(np.argmax(generated == end)) if (generated == end).any() else None
        last = LENGTH - 1 if stop is None else stop
        expected = np.zeros(LENGTH, "float32")
        expected[start - 1 : last] = 1.0
        np.testing.assert_array_equal(loss_mask[row], expected)
        assert mask[row, : last + 1].all()
    np.testing.assert_array_equal(tokens[1, :2], ids[1, :2])


def test_short_prompts_generate_after_their_last_real_token(model):
    ids = token_ids(3)
    padding_mask = np.ones_like(ids, bool)
    padding_mask[0, 2:] = False
    out = generate_continuations(model, ids, PROMPT, [1, 2], padding_mask=padding_mask)
    full = generate_continuations(
        without_cache(model), ids, PROMPT, [1, 2], padding_mask=padding_mask
    )
    np.testing.assert_array_equal(out.token_ids, full.token_ids)
    loss_mask = np.asarray(out.loss_mask)
    assert loss_mask[0, 1:LENGTH - 1].all() and loss_mask[0, 0] == 0
    assert loss_mask[1, PROMPT - 1 : LENGTH - 1].all() and not loss_mask[1, : PROMPT - 1].any()
    np.testing.assert_array_equal(out.token_ids[1:, :PROMPT], ids[1:, :PROMPT])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt_length": LENGTH}, r"`prompt_length` must be >= 1 and shorter than the "
                                    rf"sequences.*Received: prompt_length={LENGTH} for "
                                    rf"sequences of {LENGTH} tokens"),
        ({"prompt_length": 0}, r"Received: prompt_length=0"),
        ({"temperature": 0.0}, r"`temperature` must be > 0. Received: temperature=0.0"),
        ({"top_k": 0}, r"`top_k` must be a positive integer or None. Received: top_k=0"),
        ({"top_p": 0.0}, r"`top_p` must be in \(0, 1\] or None. Received: top_p=0.0"),
        ({"end_token_id": -1}, r"`end_token_id` must be None or an integer >= 0"),
        ({"use_cache": "yes"}, r"Received: use_cache='yes'"),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(model, kwargs, message):
    arguments = {"prompt_length": PROMPT, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_continuations(model, token_ids(), seed=[0, 0], **arguments)


def test_use_cache_true_needs_a_model_with_a_cache(model):
    with pytest.raises(ValueError, match="`use_cache=True` needs a model with `generate_step`"):
        generate_continuations(without_cache(model), token_ids(), PROMPT, [0, 0], use_cache=True)
