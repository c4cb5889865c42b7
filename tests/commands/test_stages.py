"""`tf-distill run` with `stages:` (teacher → assistant → student): the
config checks and a tiny end-to-end run through the CLI."""

import json

import numpy as np
import pytest
import yaml

from tf_distill import cli
from tf_distill import saving
from tf_distill.commands import config as config_lib
from tf_distill.commands.config import ConfigError
from tf_distill.commands.stages_config import stage_config

pytestmark = pytest.mark.slow  # runs end to end

TINY = {
    "data": {"source": "digits", "batch_size": 64, "train_size": 300,
             "validation_size": 100, "test_size": 100},
    "teacher": {"architecture": "mlp", "size": "large", "epochs": 1},
    "stages": [{"name": "assistant", "student": {"architecture": "mlp", "size": "medium"},
                "distillation": {"losses": [{"name": "kd", "temperature": 2.0}],
                                 "student_loss_weight": 0.2},
                "training": {"epochs": 2, "optimizer": "sgd", "learning_rate": 0.05}}],
    "student": {"architecture": "mlp", "size": "small"},
    "training": {"epochs": 1, "seed": 0, "cache": "off", "jit_compile": False,
                 "baseline": False},
}


def test_a_stage_inherits_the_run_sections_it_leaves_out():
    config = config_lib.validate({**TINY, "stages": [
        {"student": {"size": "small"}, "training": {"epochs": 3}}]})
    (stage,) = config["stages"]
    assert stage["name"] == "assistant"
    assert stage["student"]["architecture"] == "cnn" and stage["student"]["size"] == "small"
    assert stage["training"]["epochs"] == 3
    assert stage["training"]["learning_rate"] == config["training"]["learning_rate"]
    assert stage["distillation"]["losses"] == config["distillation"]["losses"]
    first, last = stage_config(config, 0), stage_config(config, 1)
    assert first["teacher"] == config["teacher"] and first["student"] == stage["student"]
    assert first["training"]["epochs"] == 3 and first["training"]["seed"] == 0
    assert last["teacher"] == {"teacher_outputs": "logits"}
    assert last["student"] == config["student"] and last["training"] == config["training"]
    # A stage's own losses do not take the run's loss weights.
    config = config_lib.validate({**TINY, "distillation": {"losses": ["kd", "dist"],
                                                           "loss_weights": [1, 2]}})
    assert config["stages"][0]["distillation"]["loss_weights"] is None
    # Without `stages`, a config is as it was (its fingerprint too).
    plain = config_lib.validate({k: v for k, v in TINY.items() if k != "stages"})
    assert "stages" not in plain and stage_config(plain, 0) is plain


def test_bad_stages_are_all_refused_at_once():
    raw = {**TINY, "distillation": {"losses": [{"name": "kd", "teacher": "teacher"}]},
           "stages": [
               {"name": "teacher", "student": {"size": "huge"}, "colour": 1},
               {"distillation": {"losses": ["kd"], "loss_weights": [1, 2]},
                "training": {"epochs": 0}},
               {"name": "twin", "student": {"architecture": "mlp"},
                "distillation": {"losses": [{"name": "kd", "teacher": "teacher"}]}},
               {"name": "twin", "student": {"path": "missing.keras"}},
           ]}
    with pytest.raises(ConfigError) as error:
        config_lib.validate(raw)
    messages = error.value.messages
    expected = [
        "Unknown key(s) ['colour'] in section `stages[0]`",
        "Invalid value for `stages[0].student.size`",
        "`stages[1].student` is required",
        "`stages[1].training.epochs` must be >= 1",
        "`stages[1].distillation.loss_weights` has 2 entries for 1 losses",
        "`stages[2].distillation.losses[0].teacher` names a teacher",
        "`stages[3].student.path` is not a readable file",
        "Each stage needs its own `name`. Received: names ['teacher', 'assistant_2', 'twin', 'twin']",
        "must differ from ['teacher', 'student', 'student alone', 'distilled student']",
        "`distillation.losses[0].teacher` names a teacher, but with `stages`",
    ]
    for text in expected:
        assert any(text in message for message in messages), (text, messages)
    with pytest.raises(ConfigError, match="must be a non-empty list of stages"):
        config_lib.validate({**TINY, "stages": []})
    with pytest.raises(ConfigError, match=r"must differ from .*Received: \['teacher'\]"):
        config_lib.validate({**TINY, "stages": [{"name": "teacher", "student": {}}]})


def test_bad_stages_through_the_cli_are_one_line_before_any_work(tmp_path, capsys):
    raw = {**TINY, "output": str(tmp_path / "out"),
           "stages": [{"student": {"size": "huge"}, "training": {"epochs": 0}}]}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("tf-distill: error: 2 errors")
    assert "stages[0].student.size" in err and "stages[0].training.epochs" in err
    assert not (tmp_path / "out").exists()


def test_teacher_assistant_student_runs_end_to_end(tmp_path, capsys):
    output = tmp_path / "out"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**TINY, "output": str(output)}))
    assert cli.main(["run", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Distilling stage 1 of 1: the teacher teaches 'assistant'" in out
    assert "| taught by |" in out
    results = json.loads((output / "metrics.json").read_text())
    rows = {row["model"]: row for row in results["models"]}
    assert list(rows) == ["teacher", "assistant", "distilled student"]
    assert rows["assistant"]["taught_by"] == "teacher"
    assert rows["distilled student"]["taught_by"] == "assistant"
    assert "taught_by" not in rows["teacher"]
    assert rows["teacher"]["parameters"] > rows["assistant"]["parameters"] > rows[
        "distilled student"]["parameters"]
    assert len(results["histories"]["stage assistant"]["loss"]) == 2
    # The row reports the saved assistant.
    assistant = saving.load_model(output / "assistant_assistant.keras")
    from tf_distill.commands import common

    data = common.load_data(config_lib.load(path)["data"])
    wrong = int(np.sum(np.argmax(assistant.predict(data.x_test, verbose=0), -1) != data.y_test))
    assert rows["assistant"]["test_errors"] == wrong
    report = (output / "report.md").read_text()
    assert "| assistant | teacher |" in report
    assert "| distilled student | assistant |" in report
    # A second run reuses the trained teacher and assistant.
    assert cli.main(["run", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Reusing the stage 'assistant' distilled before" in out
    assert "Distilling stage" not in out


def test_tune_refuses_stages(tmp_path):
    from tf_distill.commands import tune as tune_command

    config = config_lib.validate({**TINY, "output": str(tmp_path), "tuning": {}})
    with pytest.raises(ConfigError, match=r"`stages` runs with `tf-distill run`. Received: 1 "):
        tune_command.run_from_config(config, tmp_path, verbose=0)
    assert not (tmp_path / "teacher.keras").exists()
