"""`tf-distill export RUN_DIR` of a `task: language` run: a `.litertlm` and its report."""

import json

import keras_hub
import pytest
import tiny_tokenizers
import yaml

from tf_distill import cli
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.export import runtime_generate
from tf_distill.language import build_causal_lm

pytestmark = pytest.mark.slow  # each exports through the runtime


def _run_folder(tmp_path, architecture, max_sequence_length=48):
    corpus = tmp_path / "text"
    corpus.mkdir()
    (corpus / "a.txt").write_text(tiny_tokenizers.SHORT_TEXT)
    output = tmp_path / "run"
    output.mkdir()
    config = {
        "task": "language",
        "data": {"source": str(corpus), "sequence_length": max_sequence_length},
        "student": {"architecture": architecture, "num_layers": 1, "hidden_dim": 16,
                    "num_heads": 2},
        "output": str(output),
    }
    (output / "config.yaml").write_text(yaml.safe_dump(config))
    return output


def test_a_byte_level_run_exports_a_litertlm_the_runtime_runs(tmp_path, capsys):
    output = _run_folder(tmp_path, "gpt2")
    keras.utils.set_random_seed(0)
    student = build_causal_lm("gpt2", vocabulary_size=256, num_layers=1, hidden_dim=16,
                              num_heads=2, max_sequence_length=48)
    saving.save_model(student, output / "student.keras")
    code = cli.main(["export", str(output), "--quantization", "int8", "--latency-runs", "0"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    path = output / "student_int8.litertlm"
    assert f"Wrote {path}" in printed and "| `int8` |" in printed and "| yes |" in printed
    report = json.loads((output / "student_int8.json").read_text())
    assert report["cache_length"] == 48 and report["prefill_length"] == 24
    # Opened anew, the file writes what the export's runtime check saw after "the".
    num_tokens = len(report["greedy_tokens"][0])
    assert runtime_generate(path, ["the"], num_tokens) == report["runtime_texts"][:1]


def test_a_run_with_a_sentencepiece_student_packs_its_preset_tokenizer(tmp_path, capsys):
    from tf_distill.language import presets

    output = _run_folder(tmp_path, "gemma")
    tokenizer = tiny_tokenizers.small_sentencepiece_tokenizer("gemma")
    keras.utils.set_random_seed(0)
    student = build_causal_lm("gemma", vocabulary_size=tokenizer.vocabulary_size(),
                              num_layers=1, hidden_dim=16, num_heads=2, max_sequence_length=48)
    saving.save_model(student, output / "student.keras")
    # What a run writes beside a student with a tokenizer.
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(tokenizer, sequence_length=48)
    presets.save_causal_lm_preset(student, str(output / "student_preset"), preprocessor)
    code = cli.main(["export", str(output), "--quantization", "float32", "--latency-runs", "0"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((output / "student_float32.json").read_text())
    assert report["verified"] and report["greedy_agreement"] == 1.0
    # The test windows were read in the SentencePiece tokens, not bytes.
    assert report["num_tokens"] < 16 * (48 - 24)
    assert any(report["runtime_texts"])


def test_a_mode_without_a_litertlm_form_is_refused_in_one_line(tmp_path, capsys):
    output = _run_folder(tmp_path, "gpt2")
    student = build_causal_lm("gpt2", vocabulary_size=256, num_layers=1, hidden_dim=16,
                              num_heads=2, max_sequence_length=48)
    saving.save_model(student, output / "student.keras")
    assert cli.main(["export", str(output), "--quantization", "float16"]) == 2
    error = capsys.readouterr().err
    assert "Expected one of ('float32', 'int8', 'int4'). Received: quantization='float16'" in error
    # int4's blocks of 32 do not divide a width of 16.
    assert cli.main(["export", str(output), "--quantization", "int4"]) == 2
    error = capsys.readouterr().err
    assert "widths must be multiples of 32. Received: hidden_dim=16, " in error
    assert "Use 'int8' for this model." in error
    assert not list(output.glob("*.litertlm"))
