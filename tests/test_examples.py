"""The examples run as documented and give sensible results.

Each example runs as its own process (`python examples/x.py --fast`, or
`tf-distill run` on a fast copy of a config), and the tests read what it
printed or wrote. The processes of the selected tests are started together
when the first test needs one, so the slow part (importing TensorFlow,
tracing) overlaps on a machine with several cores.
"""

import difflib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow  # the examples, run end to end

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
CONFIGS = os.path.join(EXAMPLES, "config_run")
MNIST = os.path.join(os.path.dirname(REPO), "shared", "data", "mnist")
HAS_MNIST = os.path.isfile(os.path.join(MNIST, "train-images-idx3-ubyte.gz"))
NO_MNIST = "real MNIST is not in ../shared/data/mnist"

TF_DISTILL_IMPORT = "from tf_distill import Distiller, LogitsDistillation, FeatureDistillation"
KERAS_IMPORT = "from keras.distillation import Distiller, LogitsDistillation, FeatureDistillation"
# The import as the program's code has it (its docstring shows both lines).
IMPORT_LINE = TF_DISTILL_IMPORT + "  # noqa: E402"
HISTORY_KEYS = {"loss", "student_loss", "distillation_loss", "total_loss"}
TIMEOUT = 600

# The fast copies of the configs: few epochs, small batches (BatchNormalization's
# moving statistics need enough steps before inference-mode outputs mean anything).
DIGITS_FAST = {"teacher": {"epochs": 1}, "training": {"epochs": 1}, "data": {"batch_size": 16}}
MNIST_FAST = {
    "data": {"train_size": 1000, "validation_size": 500, "test_size": 1000, "batch_size": 16},
    "teacher": {"epochs": 2},
    "training": {"epochs": 1},
}


def _tf_distill_command():
    """The installed `tf-distill` entry point, or the module when not installed."""
    script = os.path.join(os.path.dirname(sys.executable), "tf-distill")
    if os.path.isfile(script):
        return [script]
    return [sys.executable, "-m", "tf_distill.cli"]


def _fast_config(name, changes, output):
    """Writes a copy of `examples/config_run/NAME.yaml` with `changes` merged in."""
    with open(os.path.join(CONFIGS, f"{name}.yaml"), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    for section, values in changes.items():
        config[section].update(values)
    config["output"] = str(output / "run")
    path = output / f"{name}_fast.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return str(path)


class _Run:
    """A started subprocess; `result()` waits and fails the test on errors."""

    def __init__(self, command, workdir=None):
        self.command = command
        self.workdir = workdir
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._output = None

    def result(self):
        if self._output is None:
            try:
                stdout, stderr = self.process.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                stdout, stderr = self.process.communicate()
                pytest.fail(f"{self.command} took over {TIMEOUT} s.\n{stdout[-3000:]}")
            self._output = (self.process.returncode, stdout, stderr)
        returncode, stdout, stderr = self._output
        assert returncode == 0, (
            f"{self.command} exited with {returncode}.\n"
            f"stdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
        )
        return stdout

    def json(self):
        """The last line of the output that is a JSON object."""
        lines = [line for line in self.result().splitlines() if line.startswith("{")]
        assert lines, f"{self.command} printed no JSON line:\n{self.result()[-3000:]}"
        return json.loads(lines[-1])


def _keras_variant_source():
    with open(os.path.join(EXAMPLES, "keras_distillation_switch.py"), encoding="utf-8") as handle:
        source = handle.read()
    lines = source.splitlines(keepends=True)
    assert lines.count(IMPORT_LINE + "\n") == 1
    keras_lines = [
        KERAS_IMPORT + "  # noqa: E402\n" if line == IMPORT_LINE + "\n" else line for line in lines
    ]
    return source, "".join(keras_lines)


def _launch(name, tmp_path_factory):
    python = sys.executable
    if name == "test_keras_io_mnist_fast":
        data = [] if HAS_MNIST else ["--data", "digits"]
        return {"run": _Run([python, "examples/keras_io_mnist.py", "--fast", *data])}
    if name == "test_keras_distillation_switch_only_import_changes":
        folder = tmp_path_factory.mktemp("switch")
        _, keras_source = _keras_variant_source()
        keras_program = folder / "keras_distillation_program.py"
        keras_program.write_text(keras_source, encoding="utf-8")
        return {
            "tf_distill": _Run([python, "examples/keras_distillation_switch.py", "--fast"]),
            "keras": _Run([python, str(keras_program), "--fast"]),
        }
    if name == "test_bring_your_own_model_fast":
        folder = tmp_path_factory.mktemp("byom")
        command = [python, "examples/bring_your_own_model.py", "--fast", "--output", str(folder)]
        return {"run": _Run(command), "dir": folder}
    if name == "test_config_run_digits_fast":
        folder = tmp_path_factory.mktemp("digits")
        config = _fast_config("digits", DIGITS_FAST, folder)
        return {"run": _Run([*_tf_distill_command(), "run", config, "--quiet"]), "dir": folder}
    if name == "test_config_run_mnist_tiny" and HAS_MNIST:
        folder = tmp_path_factory.mktemp("mnist")
        config = _fast_config("mnist", MNIST_FAST, folder)
        return {"run": _Run([*_tf_distill_command(), "run", config, "--quiet"]), "dir": folder}
    return None


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Starts the example processes of every selected test in this module at once."""
    selected = {
        item.originalname
        for item in request.session.items
        if getattr(item, "module", None) is request.module
    }
    started = {}
    for name in sorted(selected):
        launched = _launch(name, tmp_path_factory)
        if launched is not None:
            started[name] = launched
    yield started
    for launched in started.values():
        for value in launched.values():
            if isinstance(value, _Run) and value.process.poll() is None:
                value.process.kill()
                value.process.communicate()


def _check_accuracy(value, above):
    assert 0.0 <= value <= 1.0
    assert value > above


def test_keras_io_mnist_fast(runs):
    result = runs["test_keras_io_mnist_fast"]["run"].json()
    assert result["example"] == "keras_io_mnist"
    assert HISTORY_KEYS <= set(result["history_keys"])
    assert "sparse_categorical_accuracy" in result["history_keys"]
    if HAS_MNIST:
        assert result["data"] == "mnist"
        assert (result["train_examples"], result["test_examples"]) == (1000, 500)
        # One epoch on 1,000 images: well above chance (0.1), far from trained.
        _check_accuracy(result["teacher_accuracy"], 0.5)
        _check_accuracy(result["distilled_student_accuracy"], 0.2)
        _check_accuracy(result["student_from_scratch_accuracy"], 0.2)
    else:
        assert result["data"] == "digits"
        _check_accuracy(result["teacher_accuracy"], 0.5)
        _check_accuracy(result["distilled_student_accuracy"], 0.1)
        _check_accuracy(result["student_from_scratch_accuracy"], 0.1)


def test_keras_distillation_switch_only_import_changes(runs):
    source, keras_source = _keras_variant_source()
    # The docstring shows both lines; the two programs differ by the code's one.
    assert f"    {KERAS_IMPORT}\n    {TF_DISTILL_IMPORT}\n" in source
    changed = [
        line
        for line in difflib.unified_diff(source.splitlines(), keras_source.splitlines(), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == [f"-{IMPORT_LINE}", f"+{KERAS_IMPORT}  # noqa: E402"]

    ours = runs["test_keras_distillation_switch_only_import_changes"]["tf_distill"].json()
    theirs = runs["test_keras_distillation_switch_only_import_changes"]["keras"].json()
    assert ours["distiller"] == "tf_distill.distillers.distiller.Distiller"
    assert theirs["distiller"].startswith("keras.") and "distillation" in theirs["distiller"]
    assert ours["tf_distill_imported"] is True
    assert theirs["tf_distill_imported"] is False
    for result in (ours, theirs):
        assert HISTORY_KEYS <= set(result["history_keys"])
        assert "accuracy" in result["history_keys"]
        assert math.isfinite(result["final_loss"]) and result["final_loss"] > 0
        assert 0.0 <= result["test_accuracy"] <= 1.0
        _check_accuracy(result["teacher_accuracy"], 0.5)
    assert ours["history_keys"] == theirs["history_keys"]
    # One epoch of logits and feature distillation on the digits: well above chance.
    _check_accuracy(ours["test_accuracy"], 0.3)


def _check_job_output(folder, stdout):
    run = folder / "run"
    for name in ("metrics.json", "report.md", "student.keras", "teacher.keras"):
        assert (run / name).is_file(), f"{name} missing from {sorted(os.listdir(run))}"
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    rows = {row["model"]: row for row in metrics["models"]}
    assert set(rows) == {"teacher", "student alone", "distilled student"}
    for row in rows.values():
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["test_error"] == pytest.approx(1.0 - row["test_accuracy"])
    assert rows["teacher"]["parameters"] > 10 * rows["distilled student"]["parameters"]
    assert HISTORY_KEYS <= set(metrics["histories"]["distilled student"])
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "distilled student" in report
    assert "| teacher |" in stdout and "Wrote" in stdout
    return run, metrics, rows


def _reloaded_accuracy(path, x_test, y_test):
    from tf_distill import saving

    student = saving.load_model(str(path))
    logits = student.predict(x_test, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y_test))


def test_config_run_digits_fast(runs):
    launched = runs["test_config_run_digits_fast"]
    stdout = launched["run"].result()
    run, metrics, rows = _check_job_output(launched["dir"], stdout)
    assert metrics["data"]["name"] == "digits"
    _check_accuracy(rows["teacher"]["test_accuracy"], 0.5)
    _check_accuracy(rows["student alone"]["test_accuracy"], 0.3)
    _check_accuracy(rows["distilled student"]["test_accuracy"], 0.3)

    # The saved student is the distilled one: reloaded, it scores the same.
    from tf_distill import data

    splits = data.load("digits", validation_size=0.15, test_size=0.15, seed=0)
    assert len(splits.y_test) == metrics["data"]["test"]
    accuracy = _reloaded_accuracy(run / "student.keras", splits.x_test, splits.y_test)
    assert accuracy == pytest.approx(rows["distilled student"]["test_accuracy"], abs=1e-6)


@pytest.mark.skipif(not HAS_MNIST, reason=NO_MNIST)
def test_config_run_mnist_tiny(runs):
    launched = runs["test_config_run_mnist_tiny"]
    stdout = launched["run"].result()
    run, metrics, rows = _check_job_output(launched["dir"], stdout)
    assert metrics["data"]["name"] == "mnist"
    assert (metrics["data"]["train"], metrics["data"]["validation"], metrics["data"]["test"]) == (
        1000,
        500,
        1000,
    )
    # 126 teacher steps and 63 student steps: the teacher is well above chance.
    _check_accuracy(rows["teacher"]["test_accuracy"], 0.3)

    from tf_distill import data

    splits = data.load(MNIST, train_size=1000, validation_size=500, test_size=1000, seed=0)
    accuracy = _reloaded_accuracy(run / "student.keras", splits.x_test, splits.y_test)
    assert accuracy == pytest.approx(rows["distilled student"]["test_accuracy"], abs=1e-6)


def test_configs_are_valid():
    from tf_distill.commands import config

    digits = config.load(os.path.join(CONFIGS, "digits.yaml"))
    assert digits["data"]["source"] == "digits"
    assert [loss["name"] for loss in digits["distillation"]["losses"]] == ["kd", "fitnets"]
    mnist = config.load(os.path.join(CONFIGS, "mnist.yaml"))
    assert mnist["data"]["source"] == "../shared/data/mnist"
    for path in ("run.sh", "README.md"):
        with open(os.path.join(CONFIGS, path), encoding="utf-8") as handle:
            assert "tf-distill run" in handle.read()


def _fake_clone(tmp_path, with_venv):
    """A copy of run.sh in a repository layout whose `tf-distill` records its call."""
    root = tmp_path / "clone"
    (root / "examples" / "config_run").mkdir(parents=True)
    script = root / "examples" / "config_run" / "run.sh"
    script.write_bytes(open(os.path.join(CONFIGS, "run.sh"), "rb").read())
    script.chmod(0o755)
    if with_venv:
        fake = root / ".venv" / "bin" / "tf-distill"
        fake.parent.mkdir(parents=True)
        fake.write_text('#!/bin/sh\necho "cwd=$(pwd) args=$*"\n')
        fake.chmod(0o755)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return root, script, elsewhere


def test_run_sh_uses_the_clones_venv_from_any_folder(tmp_path):
    script = os.path.join(CONFIGS, "run.sh")
    assert os.access(script, os.X_OK), "run.sh must be executable"
    for name in ("digits", "mnist"):
        assert os.path.isfile(os.path.join(CONFIGS, f"{name}.yaml"))
    root, copy, elsewhere = _fake_clone(tmp_path, with_venv=True)
    # Nothing activated: no tf-distill on the PATH, started from another folder.
    env = {"PATH": "/usr/bin:/bin"}
    for argv, config in (([], "digits"), (["mnist"], "mnist")):
        result = subprocess.run([str(copy), *argv], cwd=elsewhere, env=env,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (
            f"cwd={root} args=run examples/config_run/{config}.yaml"
        )


def test_run_sh_without_the_venv_says_to_run_make_demo(tmp_path):
    _, copy, elsewhere = _fake_clone(tmp_path, with_venv=False)
    result = subprocess.run([str(copy)], cwd=elsewhere, env={"PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "make demo" in result.stderr and result.stdout == ""


def test_bring_your_own_model_fast(runs):
    launched = runs["test_bring_your_own_model_fast"]
    result = launched["run"].json()
    folder = launched["dir"]
    assert result["example"] == "bring_your_own_model"
    assert result["input_shape"] == [32, 32, 3]
    assert result["teacher"].startswith("mobilenetv2")
    assert result["student_parameters"] * 10 < result["teacher_parameters"]
    # FitNets between layers of different shapes: the regressor bridges them.
    assert result["fitnets_shapes"] == {"teacher": [4, 4, 16], "student": [8, 8, 32]}
    assert HISTORY_KEYS <= set(result["history_keys"])
    assert math.isfinite(result["final_loss"]) and result["final_loss"] > 0
    # The int8 file was written, verified against the Keras student.
    assert result["quantization"] == "int8"
    assert result["tflite_path"] == str(folder / "student_int8.tflite")
    assert (folder / "student_int8.tflite").stat().st_size == result["tflite_bytes"] > 0
    assert 0.0 <= result["litert_accuracy"] <= 1.0
    assert abs(result["litert_accuracy"] - result["keras_accuracy"]) <= 0.1
    assert (folder / "export.md").is_file()
    # The saved student is the student alone: no teacher, no FitNets regressor.
    from tf_distill import saving

    student = saving.load_model(str(folder / "student.keras"))
    assert student.count_params() == result["student_parameters"]
    assert student.input_shape == (None, 32, 32, 3)
