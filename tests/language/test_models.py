"""KerasHub causal LMs as teacher and student in the `Distiller`."""

import numpy as np
import pytest

import tf_distill
from tf_distill.backend import keras
from tf_distill.language import build_causal_lm
from tf_distill.language import check_tokenizers
from tf_distill.language import next_token_batch

VOCABULARY = 64
LENGTH = 16


def tiny_gpt2(name, hidden_dim=16, num_layers=1, vocabulary_size=VOCABULARY):
    return build_causal_lm(
        "gpt2",
        vocabulary_size=vocabulary_size,
        num_layers=num_layers,
        hidden_dim=hidden_dim,
        num_heads=2,
        max_sequence_length=LENGTH,
        name=name,
    )


@pytest.fixture(scope="module")
def pair():
    keras.utils.set_random_seed(1)
    return tiny_gpt2("teacher", hidden_dim=32, num_layers=2), tiny_gpt2("student")


def token_batch(seed=0, batch=4, real=12):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCABULARY, size=(batch, LENGTH + 1)).astype("int32")
    mask = np.zeros_like(ids, dtype=bool)
    mask[:, :real] = True
    ids[~mask] = 0
    return ids, mask


def distiller_for(pair, **compile_kwargs):
    teacher, student = pair
    distiller = tf_distill.Distiller(
        teacher, student, tf_distill.LogitsDistillation(2.0), student_loss_weight=0.5
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy", **compile_kwargs)
    return distiller


def test_next_token_batch_shifts_ids_and_mask():
    ids, mask = token_batch()
    x, y, sample_weight = next_token_batch(ids, mask)
    np.testing.assert_array_equal(x["token_ids"], ids[:, :-1])
    np.testing.assert_array_equal(x["padding_mask"], mask[:, :-1])
    np.testing.assert_array_equal(y, ids[:, 1:])
    np.testing.assert_array_equal(sample_weight, mask[:, 1:].astype("float32"))


def test_distiller_trains_a_causal_lm_pair(pair):
    # Eagerly: tracing a transformer's train step costs more than 2 steps.
    distiller = distiller_for(pair, run_eagerly=True)
    x, y, sample_weight = next_token_batch(*token_batch())
    history = distiller.fit(x, y, sample_weight=sample_weight, batch_size=2, epochs=1, verbose=0)
    losses = history.history["loss"] + history.history["distillation_loss"]
    assert np.isfinite(losses).all()
    assert history.history["distillation_loss"][0] > 0.0


def test_padding_mask_masks_every_token_term(pair):
    distiller = distiller_for(pair)
    ids, mask = token_batch()
    x, y, _ = next_token_batch(ids, mask)
    # Other tokens at the padded positions of x. The token after the last real
    # one is the target of a real position (an end-of-sequence token), kept.
    changed_ids = ids.copy()
    changed_ids[:, 13:] = 7
    changed_x, changed_y, _ = next_token_batch(changed_ids, mask)
    # Without sample weight the padding mask of x masks every term.
    before = distiller.compute_loss_terms(x, y)
    after = distiller.compute_loss_terms(changed_x, changed_y)
    for name in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(before[name], after[name], rtol=1e-6)
    # The control: unmasked, the padded positions do change the loss.
    ones = {"token_ids": ids[:, :-1], "padding_mask": np.ones_like(mask[:, :-1])}
    changed_ones = {"token_ids": changed_ids[:, :-1], "padding_mask": ones["padding_mask"]}
    unmasked = distiller.compute_loss_terms(ones, y)["student_loss"]
    changed_unmasked = distiller.compute_loss_terms(changed_ones, changed_y)["student_loss"]
    assert abs(float(unmasked) - float(changed_unmasked)) > 1e-4
    # The mask used is the padding mask itself: the same as passing it.
    weighted = distiller.compute_loss_terms(x, y, sample_weight=x["padding_mask"])
    np.testing.assert_allclose(weighted["loss"], before["loss"], rtol=1e-6)


def test_vocabulary_sizes_that_differ_are_refused(pair):
    teacher, _ = pair
    student = tiny_gpt2("small_vocabulary", vocabulary_size=32)
    with pytest.raises(ValueError, match="vocabulary_size=64 .*vocabulary_size=32"):
        tf_distill.Distiller(teacher, student, "kd")


def test_tokenizers_that_differ_are_refused():
    import keras_hub

    byte = keras_hub.tokenizers.ByteTokenizer()
    check_tokenizers(byte, keras_hub.tokenizers.ByteTokenizer())
    codepoints = keras_hub.tokenizers.UnicodeCodepointTokenizer(vocabulary_size=300)
    with pytest.raises(ValueError, match="must share one tokenizer.*ByteTokenizer.*Unicode"):
        check_tokenizers(byte, codepoints)


def test_sequences_longer_than_the_models_are_refused(pair):
    distiller = distiller_for(pair)
    ids = np.ones((2, LENGTH + 5), "int32")
    x, y, _ = next_token_batch(ids)
    with pytest.raises(ValueError, match="max_sequence_length=16. Received: sequence length 20"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_summary_and_saving_keep_the_causal_lm(pair, tmp_path):
    distiller = distiller_for(pair)
    lines = []
    distiller.summary(print_fn=lines.append)
    assert "student" in "\n".join(lines)
    x, _, _ = next_token_batch(*token_batch())
    path = str(tmp_path / "student.keras")
    distiller.student.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded).__name__ == "GPT2CausalLM"
    np.testing.assert_allclose(loaded(x), distiller.student(x), atol=1e-6)
    # The whole Distiller too (to resume training), teacher inside.
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored.student(x), distiller.student(x), atol=1e-6)
    np.testing.assert_allclose(restored.teacher(x), distiller.teacher(x), atol=1e-6)


def test_feature_taps_reach_inside_the_backbone(pair):
    teacher, _ = pair
    student = tiny_gpt2("tapped_student", hidden_dim=32)
    hint = tf_distill.FeatureDistillation("mse", "transformer_layer_1", "transformer_layer_0")
    distiller = tf_distill.Distiller(teacher, student, ["kd", hint], student_loss_weight=0.0)
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y, _ = next_token_batch(*token_batch())
    both = distiller.compute_loss_terms(x, y)["distillation_loss"]
    logits_only = tf_distill.Distiller(teacher, student, "kd", student_loss_weight=0.0)
    logits_only.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    kd = logits_only.compute_loss_terms(x, y)["distillation_loss"]
    # The hint adds the mean squared distance of the hidden states (> 0).
    assert np.isfinite(float(both)) and float(both) > float(kd) + 1e-3
