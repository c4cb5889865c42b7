import pytest
import yaml

from tf_distill import config as config_lib
from tf_distill.config import ConfigError


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


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"distillation": {"losses": [{"name": "kd", "temperature": 0}]}},
         r"temperature.*Received: temperature=0"),
        ({"distillation": {"student_loss_weight": 1.5}},
         r"`distillation.student_loss_weight` must be <= 1. Received: .*=1.5"),
        ({"distillation": {"student_loss_weight": -0.1}}, r"must be >= 0"),
        ({"training": {"epochs": -1}}, r"`training.epochs` must be >= 0. Received: training.epochs=-1"),
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
