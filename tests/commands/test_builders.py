"""`builder: module:function` finds a module in the folder `tf-distill` runs in.

A user writes `my_models.py` next to the config and runs the command there,
as they run a script next to their module: no PYTHONPATH. Each test uses a
module name of its own, so no test finds another's module in `sys.modules`.
"""

import json
import sys

import pytest
import yaml

from tf_distill import cli
from tf_distill.commands import common
from tf_distill.commands import config as config_lib
from tf_distill.commands.config import ConfigError
from tf_distill.data import from_arrays

MODELS = '''
import keras


def make_teacher(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(hidden))


def make_student(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs)))
'''


@pytest.fixture
def fresh_module():
    """A module name no test has imported; forgotten after the test."""
    name = "my_models_in_cwd"
    assert name not in sys.modules
    yield name
    sys.modules.pop(name, None)


@pytest.mark.slow  # a run, end to end
def test_run_imports_a_builder_module_from_the_current_folder(
    tmp_path, monkeypatch, capsys, fresh_module
):
    name = fresh_module
    (tmp_path / f"{name}.py").write_text(MODELS)
    job = {
        "data": {"source": "digits", "batch_size": 64, "train_size": 300,
                 "validation_size": 100, "test_size": 100},
        "teacher": {"builder": f"{name}:make_teacher", "epochs": 1},
        "student": {"builder": f"{name}:make_student"},
        "training": {"epochs": 1, "seed": 0, "cache": "off"},
        "output": "run",
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    monkeypatch.chdir(tmp_path)
    sys_path = list(sys.path)

    code = cli.main(["run", "job.yaml", "--unsafe", "--quiet"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    rows = {row["model"]: row for row in metrics["models"]}
    # The builders' models, not built-in ones: 64·32+32+32·10+10 and 64·10+10 weights.
    assert rows["teacher"]["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
    assert rows["distilled student"]["parameters"] == 64 * 10 + 10
    assert sys.path == sys_path  # The folder was searched, not left on the path.


def _tiny_data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 1)).astype("float32")
    y = np.arange(40) % 10
    return from_arrays(x, y, validation_size=10, test_size=10, name="tiny")


def test_a_missing_builder_module_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_lib.validate(
        {"student": {"builder": "no_such_models_here:make"}, "unsafe": True}
    )
    with pytest.raises(ConfigError) as caught:
        common.build_student(config, _tiny_data())
    message = str(caught.value)
    assert "No module named 'no_such_models_here'" in message
    assert f"the current folder ({tmp_path})" in message
    assert "PYTHONPATH" in message
    assert "\n" not in message


def test_a_builder_module_that_imports_something_missing_says_so(tmp_path, monkeypatch):
    (tmp_path / "my_models_needing_more.py").write_text("import no_such_dependency_here\n")
    monkeypatch.chdir(tmp_path)
    config = config_lib.validate(
        {"student": {"builder": "my_models_needing_more:make"}, "unsafe": True}
    )
    with pytest.raises(ConfigError) as caught:
        common.build_student(config, _tiny_data())
    message = str(caught.value)
    assert message.startswith("`student.builder`'s module cannot be imported: ")
    assert "No module named 'no_such_dependency_here'" in message
    assert "current folder" not in message
