import pytest
import yaml

from tf_distill.commands import checks
from tf_distill.commands import config as config_lib
from tf_distill.commands.config import ConfigError


def test_defaults_fill_every_section():
    config = config_lib.validate({})
    assert config["data"]["source"] == "digits"
    assert config["distillation"]["losses"] == [{"name": "kd", "temperature": 4.0}]
    assert config["training"]["epochs"] == 10
    assert config["export"] is None


def test_given_values_are_kept():
    config = config_lib.validate(
        {"training": {"epochs": 3}, "distillation": {"student_loss_weight": 0.25}}
    )
    assert config["training"]["epochs"] == 3
    assert config["distillation"]["student_loss_weight"] == 0.25


def test_unknown_top_level_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['trainning'\].*Valid keys: \["):
        config_lib.validate({"trainning": {}})


def test_unknown_section_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"\['epoch'\] in section `training`.*'epochs'"):
        config_lib.validate({"training": {"epoch": 3}})


def test_a_misspelled_key_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['epoch'\] in section `training`\. "
                                          r"Did you mean 'epochs' for 'epoch'\? Valid keys: \["):
        config_lib.validate({"training": {"epoch": 3}})
    with pytest.raises(ConfigError) as info:
        config_lib.validate({"training": {"zzz": 3}})
    assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"distillation": {"losses": [{"name": "kd", "temperature": 0}]}},
         r"temperature.*Received: temperature=0"),
        ({"distillation": {"student_loss_weight": 1.5}},
         r"`distillation.student_loss_weight` must be <= 1. Received: .*=1.5"),
        ({"distillation": {"student_loss_weight": -0.1}}, r"must be >= 0"),
        ({"training": {"epochs": -1}}, r"`training.epochs` must be >= 1. Received: training.epochs=-1"),
        # An untrained "distilled student" at chance accuracy is no result.
        ({"training": {"epochs": 0}}, r"`training.epochs` must be >= 1. Received: training.epochs=0"),
        ({"training": {"seeds": []}}, r"`training.seeds` must be a non-empty list"),
        ({"data": {"unlabeled": "rest"}}, r"`data.unlabeled: rest`.*needs `data.transfer_size`"),
        ({"data": {"unlabeled": "all"}}, r"Expected one of \['none', 'rest'\]"),
        ({"training": {"seeds": [1, 1]}}, r"`training.seeds` must not repeat a seed"),
        ({"training": {"seeds": [0, -2]}}, r"`training.seeds\[1\]` must be >= 0"),
        ({"distillation": {"teacher_weights": [1, 2]}}, r"applies to several teachers"),
        ({"teacher": [{"name": "a"}, {"name": "a"}]}, r"Each teacher needs its own `name`"),
        ({"teacher": [{"name": "a"}, {"name": "b"}], "distillation": {"teacher_weights": [1]}},
         r"1 entries for 2 teachers"),
        ({"teacher": {"a": {}, "b": {}}, "distillation": {"teacher_weights": {"a": 1, "c": 2}}},
         r"must name each teacher once"),
        ({"teacher": {"a": {}, "b": {}},
          "distillation": {"losses": [{"name": "kd", "teacher": "c"}]}},
         r"`distillation.losses\[0\].teacher` must name one of the teachers \['a', 'b'\]"),
        ({"teacher": [{"name": "a", "teacher_outputs": "probabilities"}, {"name": "b"}]},
         r"same `teacher_outputs`"),
        ({"teacher": [{"name": "a", "sise": "large"}]}, r"Unknown key\(s\) \['sise'\] in section `teacher\[0\]`"),
        ({"teacher": [{"name": "a", "path": "/no/such.keras"}, {"name": "b"}]},
         r"`teacher\[0\].path` is not a readable file"),
        ({"training": {"epochs": "ten"}}, r"must be an integer. Received: training.epochs='ten'"),
        ({"training": {"optimizer": "adagrad"}}, r"Expected one of \['adam', 'adamw', 'rmsprop', 'sgd'\]"),
        ({"student": {"architecture": "resnet"}}, r"`student.architecture`.*Received: student.architecture='resnet'"),
        ({"distillation": {"losses": ["nope"]}}, r"Unknown distillation loss.*'kd'"),
        ({"distillation": {"loss_weights": [1, 2]}}, r"2 entries for 1 losses"),
        ({"teacher": {"path": "/no/such/teacher.keras"}}, r"`teacher.path` is not a readable file"),
        ({"data": {"batch_size": 0}}, r"`data.batch_size` must be >= 1"),
        ({"data": {"validation_size": 1.5}}, r"as a fraction must be in \[0, 1\)"),
        ({"training": {"baseline": "yes"}}, r"must be true or false"),
        ([1, 2], r"must be a mapping of sections"),
        ({"data": [1]}, r"`data` must be a mapping"),
    ],
)
def test_invalid_values_are_refused_with_the_key_and_value(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(raw)


def test_load_reads_yaml_safely(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("training: {epochs: 2}\noutput: out\n")
    assert config_lib.load(path)["training"]["epochs"] == 2
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text("!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_lib.load(hostile)


def test_load_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read the config file"):
        config_lib.load(tmp_path / "missing.yaml")


def test_default_round_trips_through_yaml():
    config = config_lib.default()
    assert config_lib.validate(yaml.safe_load(yaml.safe_dump(config))) == config


def test_the_demo_compares_over_at_least_three_paired_seeds():
    config = config_lib.default()
    assert config == config_lib.validate(config)
    assert config["output"] == "runs/demo"
    seeds = config["training"]["seeds"]
    assert len(seeds) >= 3 and len(set(seeds)) == len(seeds)
    assert config["training"]["baseline"]  # the comparison needs the student alone


def test_several_teachers_as_a_list_or_a_mapping():
    listed = config_lib.validate({
        "teacher": [{"name": "big", "size": "large"}, {"name": "mid", "size": "medium"}],
        "distillation": {"teacher_weights": [2, 1], "ensemble": "average_logits",
                         "losses": [{"name": "kd"}, {"name": "kd", "teacher": "mid"}]},
    })
    assert [name for name, _ in config_lib.teacher_sections(listed)] == ["big", "mid"]
    assert config_lib.teacher_sections(listed)[1][1]["size"] == "medium"
    assert listed["distillation"]["teacher_weights"] == [2.0, 1.0]
    mapped = config_lib.validate({"teacher": {"big": {}, "mid": {"size": "medium"}},
                                  "distillation": {"teacher_weights": {"big": 1, "mid": 3}}})
    assert [name for name, _ in config_lib.teacher_sections(mapped)] == ["big", "mid"]
    assert mapped["distillation"]["teacher_weights"] == {"big": 1.0, "mid": 3.0}
    single = config_lib.validate({"teacher": {"size": "medium"}})
    assert config_lib.teacher_sections(single) == [("teacher", single["teacher"])]


def test_an_empty_config_file_is_refused(tmp_path):
    for text in ("", "# nothing\n", "{}\n"):
        path = tmp_path / "empty.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match="is empty"):
            config_lib.load(path)


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 10):
        previous = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{previous}]")
    lines.append("training: {epochs: *a9}")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"expands to more than 100,000 YAML nodes"):
        config_lib.load(path)


def test_a_large_received_value_is_shown_truncated():
    huge = [[list(range(50))] * 50] * 50
    with pytest.raises(ConfigError) as error:
        config_lib.validate({"training": {"epochs": huge}})
    message = str(error.value)
    assert message.startswith("`training.epochs` must be an integer. Received: training.epochs=")
    assert len(message) < 200
    assert len(checks.show("x" * 10_000)) <= checks.MAX_SHOWN


def test_tuning_section_uses_student_loss_weight_names():
    tuning = config_lib.validate_tuning({"student_loss_weight_min": 0.2})
    assert (tuning["student_loss_weight_min"], tuning["student_loss_weight_max"]) == (0.2, 1.0)
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['alpha_min'\]"):
        config_lib.validate_tuning({"alpha_min": 0.2})


def test_every_error_of_a_config_is_reported_at_once():
    raw = {
        "trainning": {},
        "data": {"batch_size": 0, "source": ""},
        "student": {"architecture": "transformer"},
        "distillation": {"losses": [{"name": "kd", "temprature": 4.0}, {"name": "kdd"}]},
        "training": {"epochs": 0, "optimizer": "adagrad"},
    }
    with pytest.raises(ConfigError) as error:
        config_lib.validate(raw)
    messages = error.value.messages
    assert len(messages) == 8, messages
    text = str(error.value)
    assert text.startswith("8 errors in the config: (1) Unknown key(s) ['trainning']")
    for part in ("`data.batch_size` must be >= 1", "`data.source` must be a non-empty",
                 "Did you mean 'temperature'?", "Did you mean 'kd'?",
                 "`training.epochs` must be >= 1", "Received: training.optimizer='adagrad'",
                 "Received: student.architecture='transformer'"):
        assert part in text
    assert "\n" not in text


def test_one_error_is_reported_without_a_count():
    with pytest.raises(ConfigError) as error:
        config_lib.validate({"training": {"epochs": 0}})
    assert str(error.value) == "`training.epochs` must be >= 1. Received: training.epochs=0"


@pytest.mark.parametrize(
    "training, message",
    [
        ({"warmup_epochs": 1}, r"applies to `training.schedule: cosine`"),
        ({"schedule": "cosine", "warmup_epochs": 10, "epochs": 10}, r"must be < `training.epochs`"),
        ({"schedule": "linear"}, r"Expected one of \['constant', 'cosine'\]"),
        ({"weight_decay": -1}, r"`training.weight_decay` must be >= 0"),
        ({"clipnorm": 0}, r"`training.clipnorm` must be > 0"),
        ({"early_stopping": {"monitor": "val_accuracy", "patiense": 3}},
         r"\['patiense'\] in section `training.early_stopping`"),
    ],
)
def test_bad_training_keys_are_refused(training, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.validate({"training": training})


def test_training_keys_have_defaults_and_are_kept():
    assert {k: config_lib.validate({})["training"][k] for k in (
        "schedule", "warmup_epochs", "weight_decay", "clipnorm", "early_stopping")} == {
        "schedule": "constant", "warmup_epochs": 0, "weight_decay": None, "clipnorm": None,
        "early_stopping": None}
    training = config_lib.validate({"training": {
        "schedule": "cosine", "warmup_epochs": 2, "weight_decay": 0.01, "clipnorm": 1.0,
        "early_stopping": {"patience": 2}}})["training"]
    assert training["early_stopping"] == {"monitor": "val_accuracy", "patience": 2}
    assert (training["schedule"], training["warmup_epochs"]) == ("cosine", 2)


def test_teacher_preprocessing_takes_only_safe_steps(tmp_path):
    path = tmp_path / "teacher.keras"
    path.write_bytes(b"")  # only its existence is checked here
    steps = [{"resize": [32, 32]}, {"repeat_channels": 3}, {"rescale": 255.0, "offset": 0.0}]
    config = config_lib.validate({"teacher": {"path": str(path), "preprocessing": steps}})
    assert config["teacher"]["preprocessing"] == steps
    # Not given, it is not there: older runs keep their fingerprints.
    assert "preprocessing" not in config_lib.validate({})["teacher"]
    with pytest.raises(ConfigError) as error:
        config_lib.validate({"teacher": {"path": str(path),
                                         "preprocessing": [{"resize": [32, 32]}, {"lambda": "x"}]}})
    assert str(error.value) == (
        "Invalid step `teacher.preprocessing[1]`. Expected one of {resize: ...}, "
        "{repeat_channels: ...}, {rescale: ..., offset: ...}. Received: "
        "teacher.preprocessing[1]={'lambda': 'x'}")
    with pytest.raises(ConfigError, match="a teacher loaded from `teacher.path`"):
        config_lib.validate({"teacher": {"preprocessing": steps}})
    with pytest.raises(ConfigError, match=r"`teacher\[0\].preprocessing` applies to a single"):
        config_lib.validate({"teacher": [{"name": "a", "path": str(path), "preprocessing": steps},
                                         {"name": "b"}]})


def test_a_bad_preprocessing_step_is_one_line_from_the_command(tmp_path, capsys):
    from tf_distill import cli

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"teacher": {"preprocessing": [{"crop": 4}]}}))
    assert cli.main(["run", str(path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "Invalid step `teacher.preprocessing[0]`" in error[0]
    assert "{resize: ...}, {repeat_channels: ...}, {rescale: ..., offset: ...}" in error[0]
