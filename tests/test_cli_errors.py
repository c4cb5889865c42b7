"""No user error reaches the user as a traceback (issue 12, item 2).

Each error a user can cause is driven through the real `tf-distill` entry
point, `cli.main`, and must come out as exactly one line on stderr with its
exit status: 2 for a mistake, 3 for a diverged run, 4 for a refused export.
One case runs `python -m tf_distill.cli` in a real process, to show that
nothing else (TensorFlow's start-up lines, a traceback) reaches stderr there.
Most cases fail before any training; those that train use an MLP on digits
for one epoch.
"""

import errno
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from tf_distill import architectures
from tf_distill import cli
from tf_distill import losses
from tf_distill import saving
from tf_distill.backend import tf

pytestmark = pytest.mark.slow  # the real command in a process

TINY = {
    "data": {"source": "digits", "batch_size": 64, "train_size": 300},
    "teacher": {"architecture": "mlp", "size": "small", "epochs": 1},
    "student": {"architecture": "mlp", "size": "small"},
    "training": {"epochs": 1, "seed": 0, "baseline": False},
}


@losses.register("test_nan_at_once", "test only: NaN from the first step")
class NanAtOnce(losses.DistillationLoss):
    """A loss whose every value is NaN: the run diverges at its first step."""

    def call(self, teacher_outputs, student_outputs, mask=None):
        values = tf.reduce_mean(tf.square(teacher_outputs - student_outputs), axis=-1)
        return values + np.nan


def _config(tmp_path, **sections):
    raw = {**TINY, "output": str(tmp_path / "out"), **sections}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _one_line(capsys, argv, status=2, prefix="tf-distill: error: "):
    """Runs `tf-distill argv`; returns its only stderr line."""
    code = cli.main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    assert code == status, err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


def _saved_student(tmp_path, input_shape=(8, 8, 1), classes=10, name="model.keras"):
    path = tmp_path / name
    saving.save_model(architectures.build("mlp", input_shape, classes, size="small"), path)
    return path


# Configs.


def test_a_missing_config_file(tmp_path, capsys):
    line = _one_line(capsys, ["run", tmp_path / "nope.yaml"])
    assert "Cannot read the config file" in line and "No such file or directory" in line


def test_a_config_that_is_a_directory(tmp_path, capsys):
    line = _one_line(capsys, ["run", tmp_path])
    assert f"Cannot read the config file {str(tmp_path)!r}: Is a directory" in line


def test_invalid_yaml_is_one_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    # PyYAML's message spans several lines ("while parsing …", "in …, line 1").
    path.write_text("training: {epochs: [1, 2}\n")
    line = _one_line(capsys, ["run", path])
    assert line == (
        f"tf-distill: error: The config file {str(path)!r} is not valid YAML at line 1, "
        "column 25: expected ',' or ']', but got '}'."
    )


def test_an_empty_config_file(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing but a comment\n")
    line = _one_line(capsys, ["run", path])
    assert "is empty" in line and "tf-distill demo" in line


def test_an_unknown_key(tmp_path, capsys):
    path = _config(tmp_path, training={**TINY["training"], "epochz": 2})
    line = _one_line(capsys, ["run", path])
    assert "Unknown key(s) ['epochz']" in line
    assert not (tmp_path / "out").exists()


def test_an_alias_bomb_is_refused_fast_and_bounded(tmp_path, capsys):
    # Nine levels of nine aliases: 9**9 (387 million) strings once expanded.
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    lines.append("training: {epochs: *a9}")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    line = _one_line(capsys, ["run", path])
    elapsed = time.perf_counter() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert "expands to more than 100,000 YAML nodes" in line
    assert len(line) < 400
    # Expanded, the bomb passed 2 GB and ran past 45 s; refused, it costs
    # neither. The bounds are loose so that a loaded machine cannot fail them.
    assert grown_mib < 200 and elapsed < 30


def test_training_distribute_multi_worker_without_tf_config(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    path = _config(tmp_path, training={**TINY["training"], "distribute": "multi_worker"})
    line = _one_line(capsys, ["run", path])
    assert "TF_CONFIG, which is not set" in line
    assert not (tmp_path / "out").exists()


# Output folders.


def test_an_output_that_is_an_existing_file(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    line = _one_line(capsys, ["run", _config(tmp_path), "--output", taken, "--quiet"])
    assert "is an existing file" in line and str(taken) in line
    assert taken.read_text() == "mine"


def test_an_output_below_an_existing_file(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    line = _one_line(capsys, ["run", _config(tmp_path), "--output", taken / "run", "--quiet"])
    assert "is not writable" in line and repr(str(taken)) in line


def test_an_unwritable_output_folder(tmp_path, capsys, monkeypatch):
    # The tests may run as root, whom file modes do not stop; so this
    # simulates a folder the user may not write to by making `os.access`
    # answer as it would for one. What is checked is the refusal before any
    # training, and its one line.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: os.fspath(path) != str(locked)
        and real_access(path, mode, **kw)
    )
    line = _one_line(capsys, ["run", _config(tmp_path), "--output", locked / "run", "--quiet"])
    assert "is not writable" in line and repr(str(locked)) in line
    assert os.listdir(locked) == []


def test_an_os_error_during_a_run_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    # Simulates a full disk: an `OSError` from deep inside a job, which no
    # check can foresee, still reaches the user as one line.
    from tf_distill.commands import run as job

    def full_disk(config, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x.keras"))

    monkeypatch.setattr(job, "run", full_disk)
    line = _one_line(capsys, ["run", _config(tmp_path), "--quiet"])
    assert line == f"tf-distill: error: {str(tmp_path / 'out' / 'x.keras')!r}: No space left on device"


@pytest.mark.parametrize("claimed", [False, True])
def test_ctrl_c_during_a_run_says_in_one_line_whether_it_resumes(
        tmp_path, capsys, monkeypatch, claimed):
    from tf_distill.commands import run as job

    def interrupted(config, **kwargs):
        if claimed:  # as a run does before its first training
            job.Job(config, verbose=0, log=lambda *_: None).claim()
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "run", interrupted)
    line = _one_line(capsys, ["run", _config(tmp_path), "--quiet"], status=130,
                     prefix="tf-distill: interrupted")
    output = tmp_path / "out"
    if claimed:
        assert line == (
            "tf-distill: interrupted. Run the same command again to resume from the last "
            f"finished epoch (the output folder {output} keeps it); delete that folder to "
            "start over.")
    else:
        assert line == "tf-distill: interrupted; nothing was written"
        assert not output.exists()


# Model files.


@pytest.mark.parametrize("damage", ["truncated", "not a zip"])
def test_a_damaged_teacher_file(tmp_path, capsys, damage):
    teacher = _saved_student(tmp_path, name="teacher.keras")
    data = teacher.read_bytes()
    teacher.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"junk" * 100)
    path = _config(tmp_path, teacher={"path": str(teacher)})
    line = _one_line(capsys, ["run", path, "--quiet"])
    assert repr(str(teacher)) in line and "not a valid `.keras` archive" in line
    assert not (tmp_path / "out" / "run_state.json").exists()


def test_a_teacher_with_the_wrong_class_count(tmp_path, capsys):
    teacher = _saved_student(tmp_path, classes=5, name="teacher5.keras")
    path = _config(tmp_path, teacher={"path": str(teacher)})
    line = _one_line(capsys, ["run", path, "--quiet"])
    assert "The teacher outputs 5 classes but the data has 10" in line
    assert not (tmp_path / "out" / "run_state.json").exists()


def test_export_of_a_missing_model(tmp_path, capsys):
    line = _one_line(capsys, ["export", tmp_path / "nothing.keras"])
    assert "No model file" in line and str(tmp_path / "nothing.keras") in line


def test_a_refused_export_exits_4_with_one_line(tmp_path, capsys):
    model = _saved_student(tmp_path)
    output = tmp_path / "model.tflite"
    # float32 loses (about) nothing, which is more than a drop of -1 point
    # allows: the verification refuses it, whatever the model.
    line = _one_line(
        capsys,
        ["export", model, "--quantization", "float32", "--output", output,
         "--max-accuracy-drop", "-1", "--latency-runs", "1", "--representative-size", "10"],
        status=4,
        prefix="tf-distill: export refused: ",
    )
    assert "max_accuracy_drop=-1.0" in line
    assert not output.exists() and not (tmp_path / "model.md").exists()


# Training.


def test_a_diverged_run_exits_3_with_one_line(tmp_path, capsys):
    path = _config(tmp_path, distillation={"losses": ["test_nan_at_once"]})
    line = _one_line(capsys, ["run", path, "--quiet"], status=3)
    assert "loss became nan" in line
    assert not (tmp_path / "out" / "student.keras").exists()


# The real process.


def test_the_real_command_prints_one_line_and_exits_2(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env.get("PYTHONPATH", "")]
    )
    finished = subprocess.run(
        [sys.executable, "-m", "tf_distill.cli", "run", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert finished.returncode == 2, finished.stderr
    assert finished.stderr.splitlines() == [
        f"tf-distill: error: Cannot read the config file {str(tmp_path)!r}: Is a directory."
    ]
    assert finished.stdout == ""
