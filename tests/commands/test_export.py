"""`tf-distill export`: the student and the data of a run folder (issue 11).

Exporting a 32×32×3 student used to calibrate it on the 8×8×1 `digits` data
without a word, and failed deep in the converter. These tests drive the real
entry point, `cli.main`, on hand-made run folders (untrained models: no
training needed) and check which model and data each export used.
"""

import json

import numpy as np
import pytest
import yaml

from tf_distill import architectures
from tf_distill import cli
from tf_distill import saving
from tf_distill.commands import config as config_lib

pytestmark = pytest.mark.slow  # runs and exports end to end


def _run_folder(tmp_path, input_shape=(8, 8, 1), data=None, seeds=None, config=True):
    """A folder laid out as `tf-distill run` leaves it: student, metrics.json, config.yaml."""
    folder = tmp_path / "run"
    folder.mkdir()
    student = architectures.build("mlp", input_shape, 10, size="small")
    name = "student.keras" if seeds is None else f"student_seed{seeds[0]}.keras"
    saving.save_model(student, folder / name)
    (folder / "metrics.json").write_text(json.dumps({"seeds": seeds or [0]}))
    if config:
        raw = {"data": data or {"source": "digits"}, "output": str(folder)}
        if seeds is not None:
            raw["training"] = {"seeds": seeds}
        validated = config_lib.validate(raw)
        (folder / "config.yaml").write_text(yaml.safe_dump(validated, sort_keys=False))
    return folder


def _images_npz(tmp_path, shape=(32, 32, 3), count=120):
    """A small .npz data set of `shape` images (a stand-in for CIFAR-10)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, x=rng.random((count, *shape), dtype=np.float32), y=np.arange(count) % 10)
    return path


def _exit_and_error(capsys, argv):
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.err.splitlines(), captured.out


def test_a_model_that_does_not_fit_the_data_is_refused_before_converting(tmp_path, capsys):
    # The case: a 32×32×3 student, exported without `--data`.
    model = tmp_path / "cifar_student.keras"
    saving.save_model(architectures.build("cnn", (32, 32, 3), 10, size="small"), model)
    code, err, out = _exit_and_error(capsys, ["export", model, "--quantization", "int8"])
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("tf-distill: error: ")
    assert "(32, 32, 3)" in err[0] and "(8, 8, 1)" in err[0]
    assert "conv.cc" not in err[0]
    # The data it would have used is said, not silent.
    assert "Data: digits (the default" in out
    assert list(tmp_path.glob("*.tflite")) == []


def test_export_of_a_run_folder_uses_its_student_and_its_data(tmp_path, capsys):
    data = _images_npz(tmp_path)
    folder = _run_folder(
        tmp_path, input_shape=(32, 32, 3), data={"source": str(data), "test_size": 30}
    )
    code, err, out = _exit_and_error(
        capsys, ["export", folder, "--quantization", "float32", "--latency-runs", "0"]
    )
    assert code == 0, err
    assert f"Data: {data} (from {folder / 'config.yaml'})" in out
    written = folder / "student_float32.tflite"
    assert written.stat().st_size > 0
    report = json.loads((folder / "student_float32.json").read_text())
    # Verified on the run's own test split: 30 of the 32×32×3 images.
    assert report["num_examples"] == 30


def test_a_run_with_seeds_exports_the_first_seeds_student(tmp_path, capsys):
    folder = _run_folder(tmp_path, seeds=[3, 5], data={"source": "digits", "test_size": 40})
    code, err, out = _exit_and_error(
        capsys, ["export", folder, "--quantization", "float32", "--latency-runs", "0"]
    )
    assert code == 0, err
    assert f"Model: {folder / 'student_seed3.keras'}" in out
    assert (folder / "student_seed3_float32.tflite").stat().st_size > 0
    report = json.loads((folder / "student_seed3_float32.json").read_text())
    assert report["num_examples"] == 40


def test_seed_chooses_which_seeds_student_to_export(tmp_path, capsys):
    folder = _run_folder(tmp_path, seeds=[3, 5], data={"source": "digits", "test_size": 40})
    other = architectures.build("mlp", (8, 8, 1), 10, size="small", name="seed5_student")
    saving.save_model(other, folder / "student_seed5.keras")
    code, err, out = _exit_and_error(
        capsys, ["export", folder, "--seed", "5", "--quantization", "float32",
                 "--latency-runs", "0"]
    )
    assert code == 0, err
    assert f"Model: {folder / 'student_seed5.keras'}" in out
    assert (folder / "student_seed5_float32.tflite").stat().st_size > 0
    assert not (folder / "student_seed3_float32.tflite").exists()


def test_the_verification_shows_its_progress_unless_quiet(tmp_path, capsys):
    folder = _run_folder(tmp_path, data={"source": "digits", "test_size": 40})
    argv = ["export", folder, "--quantization", "float32", "--latency-runs", "0"]
    code, err, out = _exit_and_error(capsys, argv)
    assert code == 0, err
    assert "40/40" in out  # in a log, the one line of Keras's verbose=2
    code, err, out = _exit_and_error(capsys, [*argv, "--quiet"])
    assert code == 0, err
    assert "40/40" not in out and "Wrote " in out


def test_a_seed_the_run_did_not_train_is_refused_naming_its_seeds(tmp_path, capsys):
    folder = _run_folder(tmp_path, seeds=[3, 5])
    code, err, out = _exit_and_error(capsys, ["export", folder, "--seed", "7"])
    assert code == 2
    assert len(err) == 1, err
    assert "no student of seed 7" in err[0] and "it trained seeds [3, 5]" in err[0]
    assert "Model:" not in out
    # A single-seed run has the seed it trained (metrics.json says [0]) and no other.
    (tmp_path / "single").mkdir()
    single = _run_folder(tmp_path / "single", data={"source": "digits"})
    code, err, _ = _exit_and_error(capsys, ["export", single, "--seed", "1"])
    assert code == 2 and len(err) == 1 and "it trained seeds [0]" in err[0]


def test_seed_with_a_model_file_is_refused(tmp_path, capsys):
    model = tmp_path / "student.keras"
    saving.save_model(architectures.build("mlp", (8, 8, 1), 10, size="small"), model)
    code, err, _ = _exit_and_error(capsys, ["export", model, "--seed", "0"])
    assert code == 2
    assert len(err) == 1 and "--seed chooses the student of a run folder" in err[0]


def test_data_overrides_the_runs_data(tmp_path, capsys):
    folder = _run_folder(tmp_path, input_shape=(32, 32, 3), data={"source": str(_images_npz(
        tmp_path))})
    code, err, out = _exit_and_error(capsys, ["export", folder, "--data", "digits"])
    assert code == 2
    assert "Data: digits (--data)" in out
    assert len(err) == 1 and "(32, 32, 3)" in err[0] and "(8, 8, 1)" in err[0]
    assert list(folder.glob("*.tflite")) == []


def test_a_run_folder_without_its_config_asks_for_data(tmp_path, capsys):
    folder = _run_folder(tmp_path, config=False)
    code, err, _ = _exit_and_error(capsys, ["export", folder])
    assert code == 2
    assert len(err) == 1 and "has no config.yaml" in err[0] and "--data" in err[0]


def test_a_folder_without_a_student_is_refused(tmp_path, capsys):
    code, err, _ = _exit_and_error(capsys, ["export", tmp_path])
    assert code == 2
    assert len(err) == 1 and "holds no distilled student" in err[0]


def test_help_shows_every_default_and_each_quantization_mode(capsys):
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    options = ["--quantization", "--data", "--seed", "--output", "--max-accuracy-drop", "--int8-io",
               "--per-tensor", "--allow-tf-ops", "--latency-runs", "--representative-size",
               "--quiet", "--unsafe"]
    for option in options:
        described = text.split(f" {option} ")[-1]
        assert "(default: " in described.split(" --")[0], option
    for mode, words in (("float32", "no quantization"),
                        ("dynamic", "int8 weights, float activations"),
                        ("float16", "half-precision weights"),
                        ("int8", "full integer: int8 weights and activations")):
        assert f"{mode} {words}" in text
