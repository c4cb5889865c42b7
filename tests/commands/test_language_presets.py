"""`tf-distill run` with KerasHub presets, real tokenizers and instruction data."""

import json

import keras_hub
import pytest
import tiny_tokenizers
import yaml

from tf_distill import cli
from tf_distill.commands import config as config_lib
from tf_distill.commands.checks import ConfigError
from tf_distill.commands.language_run import run as language_run


def _instructions(path, count=20):
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(json.dumps({"prompt": f"Count from {i}:",
                                     "response": f" {i} {i + 1} {i + 2}."}) + "\n")
    return str(path)


def _config(tmp_path, teacher, student, losses=None, source=None, **data):
    return {
        "task": "language",
        "data": {"source": source or _instructions(tmp_path / "train.jsonl"),
                 "sequence_length": 32, "batch_size": 4, "validation_fraction": 0.2,
                 "test_fraction": 0.2, **data},
        "teacher": teacher,
        "student": student,
        "distillation": {"losses": losses or [{"name": "token_kd"}]},
        "training": {"epochs": 1, "steps_per_epoch": 2, "seeds": [0], "jit_compile": False},
        "output": str(tmp_path / "run"),
    }


@pytest.mark.slow
def test_a_preset_teacher_and_a_student_from_its_blocks_give_a_student_preset(tmp_path):
    tiny_tokenizers.write_preset(tmp_path / "teacher", "gpt2", num_layers=2, hidden_dim=16)
    raw = _config(tmp_path, {"preset": str(tmp_path / "teacher")},
                  {"from_teacher": {"layers": [1]}})
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(path), "--quiet"]) == 0
    output = tmp_path / "run"
    metrics = json.loads((output / "metrics.json").read_text())
    assert [row["model"] for row in metrics["models"]] == [
        "teacher", "student alone", "distilled student"]
    for row in metrics["models"]:
        # Perplexity of the responses alone, over a BPE vocabulary of 400.
        assert 1.0 < row["test_perplexity"] < 2000.0 and "sample_nll" not in row
    student = keras_hub.models.CausalLM.from_preset(str(output / "student_seed0_preset"))
    assert isinstance(student.preprocessor.tokenizer, keras_hub.models.GPT2Tokenizer)
    assert student.backbone.num_layers == 1


@pytest.mark.slow
def test_a_bpe_teacher_and_a_byte_level_student_by_uld(tmp_path):
    tiny_tokenizers.write_preset(tmp_path / "teacher", "llama", num_layers=1, hidden_dim=16)
    raw = _config(tmp_path, {"preset": str(tmp_path / "teacher")},
                  {"architecture": "gpt2", "num_layers": 1, "hidden_dim": 16, "num_heads": 2,
                   "tokenizer": "bytes"},
                  losses=[{"name": "uld"}])
    lines = []
    metrics = language_run(config_lib.validate(raw), verbose=0, log=lines.append)
    assert any("the teacher reads its own LlamaTokenizer tokens" in line for line in lines)
    teacher, alone, distilled = metrics["models"]
    # The teacher is scored on its own tokens (a vocabulary of 300), the
    # students on bytes.
    assert teacher["test_perplexity"] < 400 and alone["test_perplexity"] < 400
    assert distilled["test_perplexity"] > 1.0
    assert not (tmp_path / "run" / "student_seed0_preset").exists()  # bytes: .keras only
    assert (tmp_path / "run" / "student_seed0.keras").exists()


def test_preset_configs_are_checked_before_any_work(tmp_path):
    teacher = {"preset": str(tmp_path / "teacher")}
    sizes = {"architecture": "gpt2", "num_layers": 1, "hidden_dim": 16, "num_heads": 2}
    cases = [
        (_config(tmp_path, {**teacher, "path": "t.keras"}, sizes),
         "`teacher.preset` and `teacher.path` name two teachers"),
        (_config(tmp_path, teacher, {"preset": "s", "from_teacher": {"layers": [0]}}),
         "`student.from_teacher` and `student.preset` name two starting points"),
        (_config(tmp_path, teacher, {"from_teacher": {"layers": [2, 1]}}),
         "`student.from_teacher.layers` must be increasing"),
        (_config(tmp_path, teacher, {"from_teacher": {}}),
         "`student.from_teacher.layers` is required"),
        (_config(tmp_path, teacher, {**sizes, "tokenizer": "bytes"}),
         "every loss must compare different tokenizers ('uld')"),
        (_config(tmp_path, teacher, {**sizes, "tokenizer": "bytes"}, [{"name": "uld"}],
                 source="/usr/share/common-licenses"),
         "Different tokenizers are aligned on instruction data"),
        (_config(tmp_path, {}, sizes, source="/usr/share/common-licenses", format="jsonl"),
         "Invalid value for `data.format`"),
    ]
    for raw, message in cases:
        with pytest.raises(ConfigError) as error:
            config_lib.validate(raw)
        assert message in str(error.value) and "\n" not in str(error.value)


def test_a_preset_folder_missing_files_is_one_line(tmp_path, capsys):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "config.json").write_text("{}")
    raw = _config(tmp_path, {"preset": str(tmp_path / "teacher")}, {"from_teacher": {"layers": [0]}})
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(path), "--quiet"]) != 0
    error = capsys.readouterr().err.strip()
    assert "`teacher.preset` is not a complete KerasHub preset folder: it lacks " \
           "metadata.json, model.weights.h5" in error
    assert len(error.splitlines()) == 1
