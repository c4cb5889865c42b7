"""`task: language` configs: checked up front, and `tf-distill run` end to end on tiny text."""

import json
import math
import os
import warnings

import pytest
import yaml
from interruptions import InterruptAfterEpoch

from tf_distill import cli
from tf_distill.commands import config as config_lib
from tf_distill.commands import language_config
from tf_distill.commands.checks import ConfigError
from tf_distill.commands.language_report import language_comparison
from tf_distill.commands.language_run import LanguageJob
from tf_distill.commands.language_run import run as language_run
from tf_distill.commands.language_run import weak_teacher_warnings

pytestmark = pytest.mark.slow  # language runs end to end


def tiny_config(corpus, output, **distillation):
    model = {"architecture": "gpt2", "num_layers": 1, "hidden_dim": 16, "num_heads": 2,
             "intermediate_dim": 32}
    return {
        "task": "language",
        "data": {"source": str(corpus), "sequence_length": 8, "batch_size": 8},
        # Each fit costs a trace of seconds: the teacher stays untrained here.
        "teacher": {**model, "hidden_dim": 32, "intermediate_dim": 64, "epochs": 0},
        "student": model,
        "distillation": {"losses": [{"name": "kd", "temperature": 1.0}],
                         "sampling": {"sample_windows": 4, "prompt_length": 4},
                         **distillation},
        # XLA compiles cost more than these few steps.
        "training": {"epochs": 1, "steps_per_epoch": 2, "seeds": [0], "jit_compile": False},
        "output": str(output),
    }


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "text"
    folder.mkdir()
    (folder / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 12)
    (folder / "b.txt").write_text("pack my box with five dozen liquor jugs! " * 12)
    return folder


def test_defaults_fill_every_section(corpus, tmp_path):
    config = config_lib.validate(tiny_config(corpus, tmp_path / "run"))
    assert config["task"] == "language"
    assert config["student"]["max_sequence_length"] == 8  # from data.sequence_length
    assert config["distillation"]["on_policy"] == 0.0
    assert config["distillation"]["sampling"]["temperature"] == 1.0
    assert config["training"]["clipnorm"] == 1.0
    assert language_config.default()["data"]["source"] == "/usr/share/common-licenses"
    # `task: classification` is the classifier config, as without the key.
    assert "task" not in config_lib.validate({"task": "classification"})


@pytest.mark.parametrize("change, message", [
    ({"distillation": {"top_k": 256}},
     "`distillation.top_k` must be < the vocabulary size 256 (bytes)"),
    ({"student": {"max_sequence_length": 4}},
     "`data.sequence_length` is longer than the student's maximum: 8 > "
     "student.max_sequence_length=4"),
    ({"teacher": {"hidden_dim": 30, "num_heads": 4}},
     "`teacher.hidden_dim` must be a multiple of `teacher.num_heads`"),
    ({"distillation": {"on_policy": 1.5}}, "`distillation.on_policy` must be <= 1"),
    ({"student": {"architecture": "bert"}}, "Invalid value for `student.architecture`"),
    ({"training": {"cache": "auto"}}, "Unknown key(s) ['cache'] in section `training`"),
    ({"distillation": {"top_k": 8, "on_policy": 0.5}},
     "`distillation.top_k` and `distillation.on_policy` do not combine"),
    ({"distillation": {"sampling": {"prompt_length": 8}}},
     "`distillation.sampling.prompt_length` must be < `data.sequence_length`"),
])
def test_bad_config_is_refused_in_one_line(corpus, tmp_path, change, message):
    raw = tiny_config(corpus, tmp_path / "run")
    for section, values in change.items():
        raw[section] = {**raw[section], **values}
    with pytest.raises(ConfigError) as error:
        config_lib.validate(raw)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_an_unknown_task_is_refused():
    with pytest.raises(ConfigError, match=r"Invalid value for `task`. Expected one of "
                                          r"\['classification', 'language'\]"):
        config_lib.validate({"task": "translation"})


def test_comparison_is_paired_by_seed():
    rows = [{"model": "teacher", "seed": None, "test_perplexity": 3.0}]
    for seed, alone, distilled in ((0, 6.0, 5.0), (1, 7.0, 6.5)):
        rows += [{"model": "student alone", "seed": seed, "test_perplexity": alone},
                 {"model": "distilled student", "seed": seed, "test_perplexity": distilled}]
    comparison = language_comparison(rows)
    assert comparison["verdict"] == "better" and comparison["improved"] == 2
    assert comparison["alone_mean"] == pytest.approx(6.5)
    assert comparison["distilled_std"] == pytest.approx(math.sqrt(2 * 0.75**2))  # 5.0, 6.5
    assert "[6.000, 7.000] → [5.000, 6.500]; teacher 3.000" in comparison["sentence"]
    rows[-1]["test_perplexity"] = 7.5
    assert language_comparison(rows)["verdict"] == "no reliable difference"


def test_run_end_to_end(corpus, tmp_path, capsys):
    output = tmp_path / "run"
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(tiny_config(corpus, output)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["run", str(path), "--quiet"]) == 0
    # Without `--verbose`, no warning of ours reaches the user: neither
    # Keras's "`shuffle=True` was passed, but will be ignored" (the pipeline
    # shuffles) nor matplotlib's empty legend (a panel with nothing to draw).
    leaked = [str(w.message) for w in caught
              if "shuffle" in str(w.message) or "legend" in str(w.message)]
    assert leaked == []
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["task"] == "language" and metrics["seeds"] == [0]
    models = [(row["model"], row["seed"]) for row in metrics["models"]]
    assert models == [("teacher", None), ("student alone", 0), ("distilled student", 0)]
    for row in metrics["models"]:
        # Bytes: an untrained model starts near the vocabulary's 256; two
        # steps leave every model far above 1.
        assert 100.0 < row["test_perplexity"] < 400.0
        assert row["test_nll"] == pytest.approx(math.log(row["test_perplexity"]))
        if row["seed"] is not None:
            assert math.isfinite(row["sample_nll"]) and row["tokens_per_second"] > 0
            assert row["train_seconds"] > 0
    comparison = metrics["comparison"]
    assert comparison["alone"] == [r["test_perplexity"] for r in metrics["models"]
                                   if r["model"] == "student alone"]
    report = (output / "report.md").read_text()
    assert comparison["sentence"] in report and "teacher NLL of own samples" in report
    assert (output / "student_seed0.keras").exists() and (output / "teacher.keras").exists()
    # Each phase's TensorBoard logs (training only: no validation pass per
    # epoch); the teacher, untrained here, has none.
    logs = output / "tensorboard"
    assert sorted(os.listdir(logs)) == ["baseline_seed0", "distill_seed0"]
    assert os.listdir(logs / "distill_seed0") == ["train"]
    printed = capsys.readouterr().out
    assert "test perplexity" in printed and str(output) in printed
    assert f"TensorBoard logs: tensorboard/ (tensorboard --logdir {logs})" in printed
    assert "Distilling into the student (seed 0) (1 epoch)" in printed
    assert "1 epochs" not in printed


def test_run_interrupted_in_distillation_resumes_to_the_uninterrupted_numbers(
        corpus, tmp_path, monkeypatch):
    raw = tiny_config(corpus, tmp_path / "whole")
    # 104 training windows, epochs of 40: epoch 3 starts mid-pass and crosses
    # into the next pass.
    raw["training"] = {**raw["training"], "epochs": 4, "steps_per_epoch": 5}
    whole = language_run(config_lib.validate(raw), verbose=0, log=lambda *_: None)
    resumable = LanguageJob.resumable
    monkeypatch.setattr(LanguageJob, "resumable", lambda self, phase: [
        *resumable(self, phase), *([InterruptAfterEpoch(1)] if phase == "distill_seed0" else [])])
    config = config_lib.validate({**raw, "output": str(tmp_path / "resumed")})
    with pytest.raises(KeyboardInterrupt):
        language_run(config, verbose=0, log=lambda *_: None)
    monkeypatch.setattr(LanguageJob, "resumable", resumable)
    lines = []
    resumed = language_run(config, verbose=0, log=lines.append)

    numbers = ("test_perplexity", "validation_perplexity", "sample_nll")
    assert [[row.get(key) for key in numbers] for row in resumed["models"]] == [
        [row.get(key) for key in numbers] for row in whole["models"]]
    # Every epoch, those before the interruption included, with the same values.
    assert resumed["histories"] == whole["histories"]
    assert len(resumed["histories"]["distilled student (seed 0)"]["loss"]) == 4
    assert resumed["resumed"] == {"distilled student (seed 0)": 3} and whole["resumed"] == {}
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["resumed"] == {"distilled student (seed 0)": 3}
    report = (tmp_path / "resumed" / "report.md").read_text()
    assert "distilled student (seed 0) was interrupted and resumed at epoch 3" in report
    assert "resumed" not in (tmp_path / "whole" / "report.md").read_text()
    assert any("resumed at epoch 3" in line for line in lines), lines


def test_a_teacher_no_better_than_the_student_alone_is_warned_about():
    rows = [{"model": "teacher", "seed": None, "validation_perplexity": 9.0},
            {"model": "student alone", "seed": 0, "validation_perplexity": 8.5},
            {"model": "distilled student", "seed": 0, "validation_perplexity": 8.0}]
    (warning,) = weak_teacher_warnings(rows)
    assert "(perplexity 9.000 vs 8.500)" in warning
    rows[0]["validation_perplexity"] = 8.4
    assert weak_teacher_warnings(rows) == []


def test_tune_refuses_a_language_config(corpus, tmp_path, capsys):
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(tiny_config(corpus, tmp_path / "run")))
    assert cli.main(["tune", str(path)]) != 0
    assert "a `task: language` config runs with `tf-distill run`" in capsys.readouterr().err


def test_a_teacher_shorter_than_the_windows_is_refused_before_it_is_scored(
    corpus, tmp_path, capsys
):
    from tf_distill import saving
    from tf_distill.language import build_causal_lm

    short = build_causal_lm("gpt2", vocabulary_size=256, num_layers=1, num_heads=2,
                            hidden_dim=8, intermediate_dim=16, max_sequence_length=8)
    saving.save_model(short, tmp_path / "short.keras")
    config = tiny_config(corpus, tmp_path / "run")
    config["data"]["sequence_length"] = 16
    config["teacher"] = {"path": str(tmp_path / "short.keras")}
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["run", str(path), "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "Traceback" not in error[0]
    assert "The teacher reads sequences of at most 8 tokens" in error[0]
    assert "Received: data.sequence_length=16" in error[0]


def test_restart_after_the_text_changed_starts_over_completely(corpus, tmp_path, capsys):
    output = tmp_path / "run"
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(tiny_config(corpus, output, top_k=8)))
    assert cli.main(["run", str(path), "--quiet"]) == 0
    assert (output / "topk_cache" / "manifest.json").exists()
    (corpus / "a.txt").write_text("sphinx of black quartz, judge my vow. " * 12)
    assert cli.main(["run", str(path), "--quiet"]) == 2  # another text: refused
    capsys.readouterr()
    # Its top-k cache was built from the old text: --restart removes it too.
    assert cli.main(["run", str(path), "--quiet", "--restart"]) == 0, capsys.readouterr().err
    assert "Starting over" in capsys.readouterr().out
    metrics = json.loads((output / "metrics.json").read_text())
    assert [row["model"] for row in metrics["models"]][-1] == "distilled student"


def test_export_of_a_run_folder_verifies_the_student_on_the_test_windows(
    corpus, tmp_path, capsys
):
    from tf_distill import saving
    from tf_distill.language import build_causal_lm

    output = tmp_path / "run"
    output.mkdir()
    (output / "config.yaml").write_text(yaml.safe_dump(tiny_config(corpus, output)))
    student = build_causal_lm("gpt2", vocabulary_size=256, num_layers=1, num_heads=2,
                              hidden_dim=8, intermediate_dim=16, max_sequence_length=8)
    saving.save_model(student, output / "student.keras")
    code = cli.main(["export", str(output), "--quantization", "float32", "--latency-runs", "0"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "/text (from " in printed  # the run's own text, not digits
    assert "LiteRT ppl." in printed and "| 8 |" in printed and "| yes |" in printed
    assert (output / "student_float32.litertlm").stat().st_size > 0
    assert (output / "student_float32.md").exists()
