import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tf_distill import cli
from tf_distill import saving

pytestmark = pytest.mark.slow  # the command run end to end

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")

FAST = {
    "data": {"source": "digits", "batch_size": 64},
    "teacher": {"architecture": "cnn", "size": "medium", "epochs": 3},
    "student": {"architecture": "mlp", "size": "small"},
    "distillation": {"student_loss_weight": 0.3, "losses": [{"name": "kd", "temperature": 4.0}]},
    "training": {"epochs": 2, "seed": 1},
}


def _write_config(tmp_path, **overrides):
    config = json.loads(json.dumps(FAST))
    for section, values in overrides.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    config.setdefault("output", str(tmp_path / "out"))
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def test_run_writes_student_metrics_and_report(tmp_path, capsys):
    path, config = _write_config(tmp_path)
    assert cli.main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    models = {row["model"]: row for row in metrics["models"]}
    assert set(models) == {"teacher", "student alone", "distilled student"}
    for row in models.values():
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["test_error"] == pytest.approx(1.0 - row["test_accuracy"])
    # Three epochs of a CNN on digits beat chance (0.1) by far.
    assert models["teacher"]["test_accuracy"] > 0.5
    assert models["distilled student"]["parameters"] < models["teacher"]["parameters"]
    # Saved files hold the model alone, no optimizer state: the same student
    # architecture gives the same size, trained alone or distilled.
    alone, distilled = (models[m]["file_bytes"] for m in ("student alone", "distilled student"))
    assert abs(alone - distilled) / distilled < 0.02
    import sklearn

    assert metrics["data"] == {"name": "digits", "train": 1257, "validation": 270,
                               "test": 270, "num_classes": 10,
                               "identity": f"digits:scikit-learn-{sklearn.__version__}"}
    history = metrics["histories"]["distilled student"]
    assert {"loss", "student_loss", "distillation_loss", "accuracy", "val_accuracy"} <= set(history)
    assert len(history["loss"]) == 2
    report = (out / "report.md").read_text()
    assert "![training curves](curves.png)" in report
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    student = saving.load_model(out / "student.keras")
    assert student.count_params() == models["distilled student"]["parameters"]
    x = np.zeros((1, 8, 8, 1), "float32")
    assert student(x).shape == (1, 10)
    printed = capsys.readouterr().out
    assert "| distilled student |" in printed


def test_loaded_teacher_with_wrong_class_count_is_refused_before_training(tmp_path, capsys):
    from tf_distill import architectures

    teacher = architectures.build("mlp", (8, 8, 1), 5, size="small")
    teacher_path = tmp_path / "teacher.keras"
    saving.save_model(teacher, teacher_path)
    path, _ = _write_config(tmp_path, teacher={"path": str(teacher_path)})
    assert cli.main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "The teacher outputs 5 classes but the data has 10" in err
    assert not (tmp_path / "out" / "student.keras").exists()


def test_a_softmax_teacher_is_refused_in_the_configs_words(tmp_path, capsys):
    from tf_distill.backend import keras

    teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(10, activation="softmax")])
    teacher_path = tmp_path / "teacher.keras"
    saving.save_model(teacher, teacher_path)
    path, _ = _write_config(tmp_path, teacher={"path": str(teacher_path)})
    assert cli.main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert ("The teacher ends with a softmax: its outputs are probabilities, and distilling "
            "them as logits would be wrong. Remove the softmax, or set "
            "`teacher_outputs: probabilities` in the config's `teacher` section.") in err
    assert "teacher_outputs='probabilities'" not in err


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"distillation": {"losses": [{"name": "kd", "temperature": 0}]}}, "Received: temperature=0"),
        ({"distillation": {"student_loss_weight": 2}}, "student_loss_weight` must be <= 1"),
        ({"data": {"source": "/no/such/folder"}}, "/no/such/folder"),
        ({"training": {"epochs": 1, "bogus": 1}}, "Unknown key(s) ['bogus']"),
    ],
)
def test_bad_configs_exit_2_with_a_clear_message(tmp_path, capsys, overrides, message):
    path, _ = _write_config(tmp_path, **overrides)
    assert cli.main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tf-distill: error:")
    assert message in err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_labels_outside_the_class_range_are_refused(tmp_path, capsys):
    npz = tmp_path / "bad.npz"
    x = np.random.default_rng(0).random((40, 8, 8, 1)).astype("float32")
    y = np.arange(40) % 4
    y[3] = -1
    np.savez(npz, x=x, y=y)
    path, _ = _write_config(tmp_path, data={"source": str(npz)})
    assert cli.main(["run", str(path), "--quiet"]) == 2
    assert "-1" in capsys.readouterr().err


def test_losses_lists_the_registry(capsys):
    assert cli.main(["losses"]) == 0
    out = capsys.readouterr().out
    from tf_distill import losses

    # Every loss tf_distill registers (tests register a few of their own,
    # which a command never sees).
    built_in = [name for name in losses.names()
                if type(losses.get(name)).__module__.startswith("tf_distill.losses")]
    assert len(built_in) >= 10
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert listed == set(built_in)


# Runs `cli.main(ARGV)` in a fresh interpreter and reports its exit status and
# whether TensorFlow (or Keras) was imported.
_IMPORTS_AFTER_MAIN = """
import json, sys
from tf_distill import cli
try:
    status = cli.main(json.loads(sys.argv[1]))
except SystemExit as exit:
    status = exit.code
heavy = sorted(m for m in ("tensorflow", "keras", "numpy") if m in sys.modules)
print(json.dumps({"status": status, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv, status",
    [
        (["--help"], 0),
        (["run", "--help"], 0),
        (["export", "--help"], 0),
        (["losses"], 0),
        (["losses", "kd"], 0),
        (["losses", "nosuch"], 2),  # an unknown name: one line, with the names
        ([], 2),  # no command
        (["run"], 2),  # no config
        (["export", "model.keras", "--quantization", "int9"], 2),
        (["nonsense"], 2),
    ],
)
def test_help_listing_and_usage_errors_import_no_tensorflow(argv, status):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS_AFTER_MAIN, json.dumps(argv)],
        capture_output=True, text=True, cwd=root,
        env={**os.environ, "PYTHONPATH": root}, check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"status": status, "heavy": []}, done.stderr
    if argv == ["losses"]:
        assert done.stdout.splitlines()[0].startswith("attention_transfer ")
    if argv == ["losses", "kd"]:
        assert done.stdout.startswith("kd (LogitsDistillation): ")
        assert "\nRecipe: " in done.stdout and "no recipe yet" not in done.stdout
    if argv == ["losses", "nosuch"]:
        assert done.stderr.startswith("tf-distill: error: Unknown distillation loss.")


def test_the_package_loads_its_public_names_on_first_use():
    import tf_distill

    for name in tf_distill.__all__:
        assert name in dir(tf_distill)
        assert getattr(tf_distill, name) is not None
    from tf_distill import Distiller
    from tf_distill.distillers.distiller import Distiller as defined

    assert Distiller is defined
    with pytest.raises(AttributeError, match="no attribute 'Distiler'"):
        tf_distill.Distiler  # noqa: B018


def test_losses_name_prints_arguments_paper_and_example(capsys, monkeypatch, tmp_path):
    from tf_distill import catalog

    monkeypatch.setattr(catalog, "RECIPES_DIR", str(tmp_path))
    assert cli.main(["losses", "dkd"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dkd (DecoupledDistillation): ")
    assert "Paper: Zhao et al., CVPR 2022" in out
    lines = out.splitlines()
    arguments = lines[lines.index("Arguments (default):") + 1:]
    assert arguments[:3] == ["  alpha        1.0", "  beta         8.0", "  temperature  4.0"]
    example = yaml.safe_load(out.split("In a config:\n")[1].split("\n\n")[0])
    assert example == {"distillation": {"losses": [
        {"name": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 4.0}]}}
    assert out.rstrip().endswith("Recipe: no recipe yet.")


def test_losses_name_prints_its_recipe(capsys, monkeypatch, tmp_path):
    from tf_distill import catalog

    recipe = tmp_path / "kd.yaml"
    recipe.write_text("# 2.1 % test error, 3 seeds\ndistillation: {losses: [{name: kd}]}\n")
    monkeypatch.setattr(catalog, "RECIPES_DIR", str(tmp_path))
    assert cli.main(["losses", "kd"]) == 0
    out = capsys.readouterr().out
    assert "Paper: Hinton et al. 2015" in out
    assert out.rstrip().endswith(f"Recipe: {recipe}\n{recipe.read_text().rstrip()}")


def test_losses_unknown_name_is_one_line_with_the_closest(capsys):
    assert cli.main(["losses", "fitnet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("tf-distill: error: Unknown distillation loss. Expected one of [")
    assert "'similarity_preserving'" in captured.err
    assert captured.err.rstrip().endswith("Received: 'fitnet'. Did you mean 'fitnets'?")


def test_missing_config_file(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "Cannot read the config file" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir(MNIST), reason="../shared/data/mnist is absent")
def test_run_on_local_mnist(tmp_path):
    path, _ = _write_config(
        tmp_path,
        data={"source": MNIST, "train_size": 600, "validation_size": 200, "test_size": 300},
        teacher={"architecture": "mlp", "size": "small", "epochs": 2},
        training={"epochs": 1, "baseline": False},
    )
    assert cli.main(["run", str(path), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["data"]["name"] == "mnist"
    assert metrics["data"]["train"] == 600
    assert [row["model"] for row in metrics["models"]] == ["teacher", "distilled student"]


def test_run_with_export_section_and_export_command(tmp_path, capsys):
    path, _ = _write_config(
        tmp_path,
        teacher={"architecture": "mlp", "size": "small", "epochs": 2},
        training={"epochs": 2, "baseline": False},
        export={"quantization": "dynamic", "latency_runs": 5},
    )
    assert cli.main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["export"]["quantization"] == "dynamic"
    assert (out / "student_dynamic.tflite").stat().st_size > 0
    assert "LiteRT export" in (out / "report.md").read_text()

    # The run wrote its config, defaults filled in: `tf-distill export RUN_DIR` reads it.
    from tf_distill.commands import config as config_lib

    assert config_lib.load(out / "config.yaml") == config_lib.validate(yaml.safe_load(
        path.read_text()))
    tflite = tmp_path / "student_f32.tflite"
    capsys.readouterr()
    assert cli.main(["export", str(out), "--quantization", "float32",
                     "--output", str(tflite), "--latency-runs", "5"]) == 0
    assert tflite.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "float32" in printed
    assert f"Model: {out / 'student.keras'}" in printed
    assert f"Data: digits (from {out / 'config.yaml'})" in printed

    # An impossible accuracy guard refuses the export and writes nothing.
    refused = tmp_path / "refused.tflite"
    assert cli.main(["export", str(out / "student.keras"), "--quantization", "int8",
                     "--output", str(refused), "--max-accuracy-drop", "-1",
                     "--latency-runs", "5"]) == 4
    assert "export refused" in capsys.readouterr().err
    assert not refused.exists()


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((0, 8, 8, 1), "float32"), "y": np.zeros((0,), "int64")}, "empty"),
        ({"x": np.full((40, 8, 8, 1), np.nan, "float32"), "y": np.arange(40) % 4}, "NaN"),
    ],
)
def test_bad_data_is_refused_before_training(tmp_path, capsys, arrays, message):
    npz = tmp_path / "bad.npz"
    np.savez(npz, **arrays)
    path, _ = _write_config(tmp_path, data={"source": str(npz)})
    assert cli.main(["run", str(path), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "teacher.keras").exists()


def test_teacher_for_other_image_shapes_is_refused_before_training(tmp_path, capsys):
    from tf_distill import architectures

    teacher = architectures.build("mlp", (28, 28, 1), 10, size="small")
    teacher_path = tmp_path / "teacher28.keras"
    saving.save_model(teacher, teacher_path)
    path, _ = _write_config(tmp_path, teacher={"path": str(teacher_path)})
    assert cli.main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "(28, 28, 1)" in err and "(8, 8, 1)" in err
    assert not (tmp_path / "out" / "student.keras").exists()


def test_tune_command_searches_and_saves_the_best_student(tmp_path, capsys):
    path, _ = _write_config(
        tmp_path,
        teacher={"architecture": "mlp", "size": "small", "epochs": 2},
        training={"epochs": 1},
        tuning={"tuner": "random", "max_trials": 2, "seed": 0},
    )
    assert cli.main(["tune", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    best = json.loads((out / "best_hyperparameters.json").read_text())["hyperparameters"]
    assert 1.0 <= best["temperature"] <= 20.0
    assert 0.0 <= best["student_loss_weight"] <= 1.0
    assert (out / "search.png").read_bytes()[:4] == b"\x89PNG"
    student = saving.load_model(out / "student.keras")
    assert student.output.shape[-1] == 10
    assert "| tuned distilled student |" in capsys.readouterr().out


def test_run_caches_teacher_outputs_by_default_and_says_so(tmp_path, capsys):
    path, _ = _write_config(
        tmp_path,
        teacher={"architecture": "mlp", "size": "small", "epochs": 1},
        training={"epochs": 1, "baseline": False, "cache": "disk"},
    )
    assert cli.main(["run", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "cach" in printed.lower()
    assert (tmp_path / "out" / "teacher_cache").is_dir()


TINY = {
    "data": {"source": "digits", "batch_size": 64, "train_size": 300,
             "validation_size": 100, "test_size": 100},
    "teacher": {"architecture": "mlp", "size": "small", "epochs": 1},
    "student": {"architecture": "mlp", "size": "small"},
    "training": {"epochs": 2, "seed": 0, "cache": "off"},
}


def _run_piped(tmp_path, config, *flags):
    """`tf-distill run` in a child process, its stdout and stderr piped (a log)."""
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**config, "output": str(tmp_path / "out")}))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "tf_distill.cli", "run", str(path), *flags],
        capture_output=True, text=True, cwd=root, env={**env, "PYTHONPATH": root},
        check=False,
    )


def test_a_run_with_export_in_a_log_has_epoch_lines_and_no_native_lines(tmp_path):
    config = {**TINY, "export": {"quantization": "int8", "representative_size": 20,
                                 "latency_runs": 2, "max_accuracy_drop": 100}}
    done = _run_piped(tmp_path, config)
    assert done.returncode == 0, done.stderr
    # Nothing from TensorFlow, absl, the converter or the interpreter.
    assert done.stderr == ""
    # No progress bar: one line per epoch, without control codes.
    assert "\r" not in done.stdout and "\x1b" not in done.stdout
    assert "Epoch 2/2" in done.stdout
    epoch_lines = [line for line in done.stdout.splitlines() if "/step - " in line]
    assert len(epoch_lines) == 1 + 2 + 2  # teacher, student alone, distilled
    assert "| distilled student |" in done.stdout


def test_quiet_prints_the_phase_lines_and_the_table_but_no_epochs(tmp_path):
    done = _run_piped(tmp_path, TINY, "--quiet")
    assert done.returncode == 0, done.stderr
    for phase in ("Training the teacher", "Training the student alone",
                  "Distilling into the student", "| model |", "| distilled student |"):
        assert phase in done.stdout
    assert "Epoch " not in done.stdout and "/step" not in done.stdout
