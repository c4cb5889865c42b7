"""The Distiller with a loss that applies the LM heads in chunks (large vocabularies)."""

import numpy as np
import pytest

import tf_distill
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.language.heads import LMHeadSplit
from tf_distill.losses import ChunkedHeadDistillation
from tf_distill.losses import HeadOutputs
from tf_distill.losses import TokenDistillation

VOCABULARY, LENGTH, BATCH = 97, 8, 3


def causal_lm(architecture, layers, width, name):
    from tf_distill.language import build_causal_lm

    keras.utils.set_random_seed(1 if name == "teacher" else 2)
    return build_causal_lm(
        architecture,
        VOCABULARY,
        num_layers=layers,
        hidden_dim=width,
        num_heads=2,
        intermediate_dim=2 * width,
        max_sequence_length=LENGTH,
        name=name,
    )


def batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCABULARY, (BATCH, LENGTH)).astype("int32")
    padding = np.ones((BATCH, LENGTH), bool)
    padding[0, 5:] = False
    x = {"token_ids": ids, "padding_mask": padding}
    return x, np.roll(ids, -1, axis=1), padding.astype("float32")


def loss_terms_and_gradients(teacher, student, loss):
    distiller = tf_distill.Distiller(teacher, student, loss, student_loss_weight=0.3)
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y, weight = batch()
    with tf.GradientTape() as tape:
        terms = distiller.compute_loss_terms(x, y, weight, training=True)
    gradients = tape.gradient(terms["loss"], student.trainable_variables)
    return terms, gradients


@pytest.mark.parametrize("architecture", ["gpt2", pytest.param("gemma", marks=pytest.mark.slow)])
def test_the_step_equals_the_dense_one_in_value_and_gradient(architecture):
    teacher = causal_lm(architecture, 2, 16, "teacher")
    student = causal_lm(architecture, 1, 8, "student")
    dense, dense_gradients = loss_terms_and_gradients(
        teacher, student, TokenDistillation("reverse_kl", temperature=2.0)
    )
    chunked, chunked_gradients = loss_terms_and_gradients(
        teacher, student, ChunkedHeadDistillation("reverse_kl", temperature=2.0, chunk_size=5)
    )
    for name in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(float(chunked[name]), float(dense[name]), atol=1e-5)
    assert float(dense["distillation_loss"]) > 0
    for got, expected in zip(chunked_gradients, dense_gradients):
        np.testing.assert_allclose(
            np.asarray(tf.convert_to_tensor(got)),
            np.asarray(tf.convert_to_tensor(expected)),
            atol=1e-5,
        )


@pytest.mark.slow
def test_fit_follows_the_dense_distillers_trajectory():
    teacher = causal_lm("gpt2", 2, 16, "teacher")
    x, y, weight = batch()
    results = []
    for loss in (TokenDistillation("forward_kl"), ChunkedHeadDistillation(chunk_size=4)):
        student = causal_lm("gpt2", 1, 8, "student")
        distiller = tf_distill.Distiller(teacher, student, loss)
        distiller.compile(
            optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy"
        )
        before = distiller.evaluate(x, y, sample_weight=weight, verbose=0, return_dict=True)
        distiller.fit(x, y, sample_weight=weight, epochs=10, verbose=0)
        after = distiller.evaluate(x, y, sample_weight=weight, verbose=0, return_dict=True)
        assert after["loss"] < 0.9 * before["loss"]
        results.append((after, student.predict(x, verbose=0)))
    (dense, dense_logits), (chunked, chunked_logits) = results
    for name in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(chunked[name], dense[name], rtol=1e-4, atol=1e-6)
    # The student itself still outputs full logits.
    assert chunked_logits.shape == (BATCH, LENGTH, VOCABULARY)
    np.testing.assert_allclose(chunked_logits, dense_logits, atol=1e-3)


def test_without_labels_or_label_weight_the_step_is_the_distillation_term():
    teacher = causal_lm("gpt2", 1, 8, "teacher")
    student = causal_lm("gpt2", 1, 8, "student")
    x, y, weight = batch()
    values = []
    for loss in (TokenDistillation(), ChunkedHeadDistillation(chunk_size=4)):
        distiller = tf_distill.Distiller(teacher, student, loss, student_loss_weight=0.0)
        distiller.compile(loss="sparse_categorical_crossentropy")
        unlabeled = distiller.compute_loss_terms(x, sample_weight=weight, training=True)
        labeled = distiller.compute_loss_terms(x, y, weight, training=True)
        assert float(unlabeled["student_loss"]) == 0.0
        values.append([float(unlabeled["loss"]), float(labeled["loss"])])
    np.testing.assert_allclose(values[1], values[0], atol=1e-6)


def test_a_functional_model_ending_in_dense_is_split_at_that_layer():
    inputs = keras.Input([LENGTH], dtype="int32")
    hidden = keras.layers.Embedding(VOCABULARY, 4, name="embedding")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(VOCABULARY, name="head")(hidden))
    split = LMHeadSplit(model, "student")
    x = np.random.default_rng(0).integers(0, VOCABULARY, (2, LENGTH))
    outputs = split.outputs(x)
    assert isinstance(outputs, HeadOutputs)
    np.testing.assert_allclose(
        outputs.head.logits(outputs.hidden_states).numpy(), model(x).numpy(), atol=1e-6
    )
    softmax = keras.Model(inputs, keras.layers.Dense(VOCABULARY, activation="softmax")(hidden))
    with pytest.raises(ValueError, match=r"argument `teacher`.*linear Dense.*Functional"):
        LMHeadSplit(softmax, "teacher")


def test_what_a_chunked_head_distiller_cannot_do_is_refused_in_one_line():
    teacher = causal_lm("gpt2", 1, 8, "teacher")
    student = causal_lm("gpt2", 1, 8, "student")
    loss = ChunkedHeadDistillation(chunk_size=4)
    with pytest.raises(ValueError, match="must be the only kind of distillation loss"):
        tf_distill.Distiller(teacher, student, [loss, TokenDistillation()])
    with pytest.raises(ValueError, match="reads one teacher. Received: 2 teachers"):
        tf_distill.Distiller({"a": teacher, "b": causal_lm("gpt2", 1, 8, "other")}, student, loss)
    distiller = tf_distill.Distiller(teacher, student, loss)
    with pytest.raises(
        ValueError, match=r"compiled metrics read.*Received: metrics=\['accuracy'\]"
    ):
        distiller.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with pytest.raises(ValueError, match="cross-entropy of its logits.*Received: loss='mse'"):
        distiller.compile(loss="mse")
    distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y, _ = batch()
    cached = {"inputs": x, "teacher_outputs": {"logits": np.zeros([BATCH, LENGTH, VOCABULARY])}}
    with pytest.raises(ValueError, match="hidden states.*Received: a batch with cached teacher"):
        distiller.compute_loss_terms(cached, y)
    alignment = np.zeros([BATCH, LENGTH, 2], "int32")
    other_tokens = {"inputs": x, "teacher_inputs": {**x, "alignment": alignment}}
    with pytest.raises(
        ValueError, match="another tokenizer.*Received: a batch with teacher_inputs"
    ):
        distiller.compute_loss_terms(other_tokens, y)
