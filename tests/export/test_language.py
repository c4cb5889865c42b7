"""Tests for tf_distill.export's causal-LM export: parity, NaN, greedy decoding, quantization."""

import os

import keras_hub
import numpy as np
import pytest

from tf_distill import export
from tf_distill.backend import keras
from tf_distill.backend import tf

SEQUENCE_LENGTH = 32
LATENCY_RUNS = 2


def _gpt2(seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=SEQUENCE_LENGTH,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


@pytest.fixture(scope="module")
def causal_lm():
    return _gpt2(seed=0)


@pytest.fixture(scope="module")
def token_data():
    """Real text, byte-tokenized: 6 sequences of 32 tokens, the last half padded."""
    with open(os.path.join(os.path.dirname(export.__file__), "language.py"), "rb") as handle:
        text = handle.read()[: 6 * SEQUENCE_LENGTH]
    token_ids = np.frombuffer(text, np.uint8).astype("int32").reshape(6, SEQUENCE_LENGTH)
    padding_mask = np.ones_like(token_ids, bool)
    padding_mask[-1, SEQUENCE_LENGTH // 2 :] = False
    return {"token_ids": token_ids, "padding_mask": padding_mask}


@pytest.fixture(scope="module")
def float32_export(causal_lm, token_data, tmp_path_factory):
    """One converted float32 model shared by the tests: conversion takes seconds."""
    path = tmp_path_factory.mktemp("lm") / "lm.tflite"
    report = export.export_causal_lm(
        causal_lm, path, token_data=token_data, latency_runs=LATENCY_RUNS
    )
    return path, report


@pytest.mark.slow
def test_float32_export_matches_keras(float32_export, token_data):
    path, report = float32_export
    assert report.verified
    assert report.path == str(path)
    assert report.file_size_bytes == os.path.getsize(path)
    assert report.sequence_length == SEQUENCE_LENGTH
    assert report.max_abs_difference <= export.FLOAT32_TOLERANCE
    assert report.top1_agreement == 1.0
    # 6 sequences of 31 predictions, less the 16 of the padded half.
    assert report.num_tokens == 6 * 31 - 16
    assert report.litert_perplexity == pytest.approx(report.keras_perplexity, rel=1e-5)
    assert abs(report.perplexity_change_percent) < 1e-3
    markdown = report.to_markdown().splitlines()
    assert "| Keras ppl. | LiteRT ppl. | Ppl. change (%) |" in markdown[0]
    assert f"{report.keras_perplexity:.4f}" in markdown[2]


def test_signature_is_fixed_length_token_ids_and_mask(float32_export):
    from ai_edge_litert.interpreter import Interpreter

    path, _ = float32_export
    interpreter = Interpreter(model_path=str(path))
    signature = interpreter.get_signature_list()["serving_default"]
    assert sorted(signature["inputs"]) == ["padding_mask", "token_ids"]
    assert signature["outputs"] == ["logits"]
    runner = interpreter.get_signature_runner("serving_default")
    ids = np.arange(SEQUENCE_LENGTH, dtype="int32")[None]
    logits = runner(token_ids=ids, padding_mask=np.ones_like(ids))["logits"]
    assert logits.shape == (1, SEQUENCE_LENGTH, 256)


def test_greedy_decode_matches_keras_for_32_tokens(float32_export, causal_lm):
    from ai_edge_litert.interpreter import Interpreter

    path, _ = float32_export
    prompt = np.array([84, 104, 101, 32], "int32")  # "The "
    expected = export.keras_greedy_decode(causal_lm, prompt, num_tokens=32)
    generated = export.greedy_decode(str(path), prompt, num_tokens=32)
    assert generated.shape == (32,)
    np.testing.assert_array_equal(generated, expected)
    # The same from an Interpreter the caller owns.
    interpreter = Interpreter(model_path=str(path))
    np.testing.assert_array_equal(
        export.greedy_decode(interpreter, prompt, num_tokens=32), expected
    )


@pytest.mark.parametrize("outside", [300, -1])
def test_greedy_decode_refuses_token_ids_outside_the_vocabulary(float32_export, causal_lm, outside):
    path, _ = float32_export
    prompt = np.array([104, 101, outside], "int32")
    message = rf"`prompt_ids` must be token ids in \[0, 256\).*Received: \[{outside}\] outside it"
    with pytest.raises(ValueError, match="greedy_decode: " + message):
        export.greedy_decode(str(path), prompt, num_tokens=2)
    with pytest.raises(ValueError, match="keras_greedy_decode: " + message):
        export.keras_greedy_decode(causal_lm, prompt, num_tokens=2)


def test_nan_of_the_concrete_function_conversion_is_an_export_error(causal_lm, token_data):
    # The conversion that gave NaN logits: the Keras model passed as the
    # converter's trackable object leaves its weights uninitialized.
    @tf.function
    def logits(token_ids, padding_mask):
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
        return causal_lm(inputs, training=False)

    function = logits.get_concrete_function(
        tf.TensorSpec([1, SEQUENCE_LENGTH], tf.int32, name="token_ids"),
        tf.TensorSpec([1, SEQUENCE_LENGTH], tf.bool, name="padding_mask"),
    )
    broken = tf.lite.TFLiteConverter.from_concrete_functions([function], causal_lm).convert()
    # Its logits come from memory never written: NaN on every run seen here;
    # were they finite, they would be refused as a mismatch.
    with pytest.raises(export.ExportError, match=r"non-finite logits .* \d+ NaN|differ from Keras by"):
        export.verify_causal_lm(broken, causal_lm, token_data, latency_runs=0)


def test_a_model_with_nan_weights_is_refused_and_the_destination_left_as_it_was(
    token_data, tmp_path
):
    broken = _gpt2(seed=2)
    embedding = broken.backbone.token_embedding
    embedding.embeddings.assign(np.full(embedding.embeddings.shape, np.nan, "float32"))
    destination = tmp_path / "student.tflite"
    destination.write_bytes(b"the good file exported before")
    with pytest.raises(export.ExportError, match=(
        r"The Keras model itself gives non-finite logits: \d+ NaN .*Nothing was written"
    )):
        export.export_causal_lm(broken, destination, token_data)
    assert destination.read_bytes() == b"the good file exported before"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["student.tflite"]


def test_float32_logits_of_another_model_are_refused(float32_export, token_data):
    path, _ = float32_export
    with pytest.raises(export.ExportError, match="differ from Keras by"):
        export.verify_causal_lm(path, _gpt2(seed=1), token_data, latency_runs=0)


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["dynamic", "int8"])
def test_quantized_export_reports_perplexity_change(
    quantization, causal_lm, token_data, float32_export, tmp_path
):
    _, float32_report = float32_export
    # Through export_litert, which hands a KerasHub CausalLM to export_causal_lm.
    report = export.export_litert(
        causal_lm,
        tmp_path / f"lm_{quantization}.tflite",
        quantization=quantization,
        validation_data=token_data,
        latency_runs=LATENCY_RUNS,
        report_path=tmp_path / "report.md",
    )
    assert report.verified
    assert report.quantization == quantization
    assert report.file_size_bytes < 0.7 * float32_report.file_size_bytes
    assert report.keras_perplexity == pytest.approx(float32_report.keras_perplexity, rel=1e-6)
    expected_change = 100.0 * (report.litert_perplexity / report.keras_perplexity - 1.0)
    assert report.perplexity_change_percent == pytest.approx(expected_change)
    assert 0.0 < abs(report.perplexity_change_percent) < 5.0
    assert report.max_abs_difference > export.FLOAT32_TOLERANCE
    assert f"| `{quantization}` |" in (tmp_path / "report.md").read_text()


def test_perplexity_limit_is_an_accuracy_drop_error(float32_export, causal_lm, token_data):
    path, report = float32_export
    with pytest.raises(export.AccuracyDropError, match="max_perplexity_increase=-1") as raised:
        export.verify_causal_lm(
            path, causal_lm, token_data, max_perplexity_increase=-1.0, latency_runs=0
        )
    assert raised.value.report.keras_perplexity == pytest.approx(report.keras_perplexity)


@pytest.mark.slow
def test_verification_shows_a_progress_bar_only_when_verbose(float32_export, causal_lm,
                                                             token_data, capsys):
    path, _ = float32_export
    capsys.readouterr()
    export.verify_causal_lm(path, causal_lm, token_data, latency_runs=0)
    assert capsys.readouterr().out == ""  # quiet by default, as before
    export.verify_causal_lm(path, causal_lm, token_data, latency_runs=0, verbose=1)
    shown = capsys.readouterr().out
    assert "1/6" in shown and "6/6" in shown  # a step per sequence, to the last


def test_token_perplexity_against_a_hand_checked_value():
    # Uniform logits over 4 tokens: every prediction has probability 1/4.
    perplexity, count = export.token_perplexity(
        np.zeros((1, 3, 4)), np.array([[0, 1, 2]]), np.array([[True, True, True]])
    )
    assert (perplexity, count) == (pytest.approx(4.0), 2)
    # Two predictions with probabilities 1/2 and 1/4 (softmax of the log of
    # [1, 1, 0] and of [2, 1, 1]).
    logits = np.log(np.array([[[1.0, 1.0, 1e-30], [2.0, 1.0, 1.0], [1.0, 1.0, 1.0]]]))
    token_ids = np.array([[2, 1, 2]])
    perplexity, count = export.token_perplexity(logits, token_ids, np.ones((1, 3), bool))
    assert count == 2
    assert perplexity == pytest.approx(np.sqrt(8.0))
    # A padded last token is never predicted: only the 1/2 remains.
    perplexity, count = export.token_perplexity(logits, token_ids, np.array([[True, True, False]]))
    assert (perplexity, count) == (pytest.approx(2.0), 1)


def test_bad_token_data_is_refused_before_converting(causal_lm, tmp_path):
    too_long = np.zeros((2, SEQUENCE_LENGTH + 1), "int32")
    with pytest.raises(ValueError, match="length 33, longer than the exported sequence_length=32"):
        export.export_causal_lm(causal_lm, tmp_path / "a.tflite", token_data=too_long)
    outside = np.full((2, 8), 256, "int32")
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 256\)"):
        export.export_causal_lm(causal_lm, tmp_path / "a.tflite", token_data=outside)
    with pytest.raises(ValueError, match="needs `token_data`"):
        export.export_causal_lm(causal_lm, tmp_path / "a.tflite", token_data=None)
    with pytest.raises(ValueError, match="at most the model's max_sequence_length=32"):
        export.export_causal_lm(
            causal_lm, tmp_path / "a.tflite", token_data=outside, sequence_length=64
        )
    with pytest.raises(ValueError, match="no `int8_io`"):
        export.export_litert(
            causal_lm,
            tmp_path / "a.tflite",
            quantization="int8",
            int8_io=True,
            validation_data=outside,
        )
    with pytest.raises(ValueError, match="`prompt_ids` must be a non-empty 1-D"):
        export.keras_greedy_decode(causal_lm, np.array([], "int32"))
    assert not list(tmp_path.iterdir())
