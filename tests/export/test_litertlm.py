"""`.litertlm` files that `litert_lm.Engine` runs (export.litertlm), with real tokenizers
built here: SentencePiece for Gemma and Llama, byte-level BPE for GPT-2, bytes."""

import json
import os

import keras_hub
import numpy as np
import pytest
import tiny_tokenizers

import tf_distill
from tf_distill.backend import keras
from tf_distill.export import ExportError
from tf_distill.export import export_causal_lm
from tf_distill.export import export_litertlm
from tf_distill.export import runtime_generate
from tf_distill.export.litertlm_tokenizer import write_tokenizer
from tf_distill.language import build_causal_lm

MAX_SEQUENCE_LENGTH = 64
PROMPTS = ("the quick brown fox", "once upon a time", "a b c")


def _tokenizer(family):
    if family == "gpt2":
        return tiny_tokenizers.small_gpt2_tokenizer()
    if family == "bytes":
        return keras_hub.tokenizers.ByteTokenizer(lowercase=False)
    return tiny_tokenizers.small_sentencepiece_tokenizer(family)


def _model(architecture, tokenizer, seed=3):
    keras.utils.set_random_seed(seed)
    return build_causal_lm(architecture, vocabulary_size=int(tokenizer.vocabulary_size()),
                           num_layers=2, hidden_dim=32, num_heads=2,
                           max_sequence_length=MAX_SEQUENCE_LENGTH)


def _token_data(tokenizer, count=3, length=24):
    ids = np.asarray(tokenizer(tiny_tokenizers.SHORT_TEXT[:3000])).reshape(-1)
    return ids[: count * length].reshape(count, length).astype("int32")


def _keras_text(model, tokenizer, prompt, num_tokens):
    """What Keras generates greedily after the runtime's own start token."""
    start = getattr(tokenizer, "start_token_id", None)
    ids = np.asarray(tokenizer(prompt)).reshape(-1).tolist()
    generated = tf_distill.export.keras_generate(
        model, np.array(([start] if start is not None else []) + ids), num_tokens
    ).tolist()
    stop = {tokenizer.end_token_id} if getattr(tokenizer, "end_token_id", None) else {0}
    for position, token in enumerate(generated):
        if token in stop:
            generated = generated[:position]
            break
    text = tokenizer.detokenize(np.array(generated, np.int32)) if generated else ""
    text = text.numpy() if hasattr(text, "numpy") else text
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


@pytest.mark.slow  # a conversion, a quantization and the runtime, per case
@pytest.mark.parametrize("architecture, family, quantization", [
    ("gemma", "gemma", "float32"),  # SentencePiece
    ("gpt2", "gpt2", "float32"),  # tokenizer.json, byte-level BPE
    ("llama", "llama", "int8"),
    ("gpt2", "bytes", "int4"),  # a `task: language` run's byte tokenizer
])
def test_the_runtime_generates_kerass_greedy_text(tmp_path, architecture, family, quantization):
    tokenizer = _tokenizer(family)
    model = _model(architecture, tokenizer)
    path = tmp_path / "student.litertlm"
    report = export_litertlm(model, path, _token_data(tokenizer), tokenizer=tokenizer,
                             quantization=quantization, prefill_length=16, prompts=PROMPTS,
                             num_tokens=24, latency_runs=2, report_path=tmp_path / "report.md")
    assert path.read_bytes()[:8] == b"LITERTLM"
    assert report.verified and report.path == str(path)
    assert report.file_size_bytes == path.stat().st_size
    assert report.cache_length == MAX_SEQUENCE_LENGTH and report.prefill_length == 16
    # The file, opened anew in the runtime, writes what the Keras model writes.
    texts = runtime_generate(path, PROMPTS, 24)
    assert texts == report.runtime_texts
    if quantization == "float32":
        assert report.greedy_agreement == 1.0
        assert report.max_abs_difference < 1e-4
        assert texts == [_keras_text(model, tokenizer, prompt, 24) for prompt in PROMPTS]
        assert any(texts)
    else:
        assert 0.0 <= report.greedy_agreement <= 1.0
        assert abs(report.perplexity_change_percent) < 5.0
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["runtime_texts"] == texts and written["quantization"] == quantization


@pytest.mark.slow  # a conversion
def test_int8_and_int4_weights_shrink_the_file_and_keep_the_predictions():
    from tf_distill.export.quantizer import quantize_language_model

    tokenizer = _tokenizer("llama")
    keras.utils.set_random_seed(0)
    # Wide enough for the weights to outweigh the file's fixed parts.
    model = build_causal_lm("llama", vocabulary_size=int(tokenizer.vocabulary_size()),
                            num_layers=2, hidden_dim=128, num_heads=2,
                            max_sequence_length=MAX_SEQUENCE_LENGTH)
    float_model, _ = tf_distill.export.convert_cached_lm(model, prefill_length=16)
    tokens = _token_data(tokenizer)[0]
    reference = tf_distill.export.CachedLMRunner(float_model).score(tokens)
    sizes = {"float32": len(float_model)}
    for quantization in ("int8", "int4"):
        quantized = quantize_language_model(float_model, quantization)
        sizes[quantization] = len(quantized)
        logits = tf_distill.export.CachedLMRunner(quantized).score(tokens)
        assert np.isfinite(logits).all()
        # An untrained model's logits are near ties: their values are compared.
        correlation = np.corrcoef(logits.ravel(), reference.ravel())[0, 1]
        assert correlation > (0.999 if quantization == "int8" else 0.95), correlation
    assert sizes["int8"] < 0.4 * sizes["float32"]
    assert sizes["int4"] < 0.75 * sizes["int8"]


@pytest.mark.slow  # saves and loads a preset, exports it twice
def test_a_preset_loaded_model_exports_its_preprocessors_tokenizer_set_aside(tmp_path):
    tokenizer = _tokenizer("gemma")
    backbone = _model("gemma", tokenizer).backbone
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(tokenizer, sequence_length=16)
    keras_hub.models.GemmaCausalLM(backbone, preprocessor).save_to_preset(str(tmp_path / "preset"))
    model = keras_hub.models.CausalLM.from_preset(str(tmp_path / "preset"))
    assert model.preprocessor is not None
    token_data = _token_data(tokenizer)
    # The tokenizer comes from the preprocessor; its lookup table stays out of the file.
    report = export_litertlm(model, tmp_path / "preset.litertlm", token_data,
                             cache_length=48, prefill_length=8, prompts=("a b c",),
                             num_tokens=8, latency_runs=0)
    assert report.verified and report.runtime_texts == [
        _keras_text(model, tokenizer, "a b c", 8)
    ]
    # The fixed-window export of the same model works too (it failed on tf.HashTableV2).
    fixed = export_causal_lm(model, tmp_path / "preset.tflite", token_data,
                             sequence_length=24, latency_runs=0)
    assert fixed.verified and fixed.tf_ops == []


@pytest.mark.slow  # a conversion
def test_a_distiller_exports_its_student(tmp_path):
    tokenizer = _tokenizer("llama")
    student = _model("llama", tokenizer, seed=1)
    teacher = _model("llama", tokenizer, seed=2)
    distiller = tf_distill.Distiller(teacher, student, "kd")
    report = export_litertlm(distiller, tmp_path / "student.litertlm", _token_data(tokenizer),
                             tokenizer=tokenizer, prompts=("a b c",), num_tokens=8,
                             latency_runs=0)
    assert report.runtime_texts == [_keras_text(student, tokenizer, "a b c", 8)]
    assert report.runtime_texts != [_keras_text(teacher, tokenizer, "a b c", 8)]


@pytest.mark.slow  # a conversion before the refusal
def test_a_refused_export_leaves_the_existing_file_intact(tmp_path):
    tokenizer = _tokenizer("llama")
    model = _model("llama", tokenizer)
    path = tmp_path / "student.litertlm"
    path.write_bytes(b"the previous good file")
    with pytest.raises(tf_distill.export.AccuracyDropError, match="Nothing was written") as caught:
        export_litertlm(model, path, _token_data(tokenizer), tokenizer=tokenizer,
                        quantization="int4", max_perplexity_increase=-50.0,
                        prompts=("a",), num_tokens=4, latency_runs=0)
    assert caught.value.report.perplexity_change_percent > -50.0
    # A model with NaN weights is refused before anything is written.
    weights = model.backbone.token_embedding.embeddings
    weights.assign(np.full(weights.shape, np.nan, np.float32))
    with pytest.raises(ExportError, match="The Keras model itself gives non-finite logits"):
        export_litertlm(model, path, _token_data(tokenizer), tokenizer=tokenizer,
                        prompts=("a",), num_tokens=4, latency_runs=0)
    assert path.read_bytes() == b"the previous good file"
    assert os.listdir(tmp_path) == ["student.litertlm"]


def test_a_tokenizer_the_container_cannot_hold_is_refused_naming_the_ones_it_can(tmp_path):
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=["[UNK]", "a", "b"])
    with pytest.raises(ValueError, match="SentencePieceTokenizer .* BytePairTokenizer .* "
                                         "ByteTokenizer. Received: a WordPieceTokenizer"):
        write_tokenizer(tokenizer, str(tmp_path))
    model = _model("gpt2", _tokenizer("bytes"))
    with pytest.raises(ValueError, match="Received: a WordPieceTokenizer"):
        export_litertlm(model, tmp_path / "m.litertlm", np.zeros((1, 4), "int32"),
                        tokenizer=tokenizer)
    assert not (tmp_path / "m.litertlm").exists()


def test_bad_arguments_are_refused_before_converting(tmp_path):
    model = _model("gpt2", _tokenizer("bytes"))
    data = np.zeros((1, 4), "int32")
    with pytest.raises(ValueError, match="`tokenizer` is required"):
        export_litertlm(model, tmp_path / "m.litertlm", data)
    with pytest.raises(ValueError, match=r"Expected one of \('float32', 'int8', 'int4'\)"):
        export_litertlm(model, tmp_path / "m.litertlm", data, tokenizer=_tokenizer("bytes"),
                        quantization="dynamic")
    with pytest.raises(ValueError, match="exceed the context of 32 tokens"):
        export_litertlm(model, tmp_path / "m.litertlm", data, tokenizer=_tokenizer("bytes"),
                        prompts=("x" * 20,), num_tokens=20)
    with pytest.raises(ValueError, match="`token_data` sequences have length 40"):
        export_litertlm(model, tmp_path / "m.litertlm", np.zeros((1, 40), "int32"),
                        tokenizer=_tokenizer("bytes"))


@pytest.mark.parametrize("family", ["gpt2", "bytes"])
def test_the_tokenizer_json_gives_kerashubs_ids_and_text(tmp_path, family):
    import tokenizers

    tokenizer = _tokenizer(family)
    written = write_tokenizer(tokenizer, str(tmp_path))
    hf_tokenizer = tokenizers.Tokenizer.from_file(written.path)
    text = "the fox ran, then the other fox: ü!"
    keras_ids = np.asarray(tokenizer(text)).reshape(-1).tolist()
    assert hf_tokenizer.encode(text).ids == keras_ids
    assert hf_tokenizer.decode(keras_ids) == text
    if family == "gpt2":
        end = tokenizer.end_token_id
        assert written.stop_token_ids == (end,) and written.start_token_id == end
        assert hf_tokenizer.encode("a<|endoftext|>").ids[-1] == end
    else:
        assert written.stop_token_ids == (0,) and written.start_token_id is None


def test_a_sentencepiece_tokenizer_is_packed_as_its_own_model(tmp_path):
    tokenizer = _tokenizer("gemma")
    written = write_tokenizer(tokenizer, str(tmp_path))
    assert written.kind == "sentencepiece"
    with open(written.path, "rb") as handle:
        assert handle.read() == tiny_tokenizers.small_sentencepiece_proto("gemma")
    assert written.start_token_id == tokenizer.start_token_id
    assert written.stop_token_ids == (tokenizer.end_token_id,)
