"""Tests for tf_distill.export's report: tables, Markdown and JSON files, notebooks."""

import json
import os

import pytest
from sklearn.datasets import load_digits

from tf_distill import export
from tf_distill.backend import keras

LATENCY_RUNS = 5


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8×8 digits, flat, in [0, 1]: (x_train, y_train, x_val, y_val)."""
    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int64")
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="module")
def classifier(digits):
    x_train, y_train, _, _ = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0)
    return model


def test_report_written_as_markdown_and_json(classifier, digits, tmp_path):
    _, _, x_val, y_val = digits
    report = export.export_litert(
        classifier,
        tmp_path / "student.tflite",
        quantization="dynamic",
        validation_data=(x_val, y_val),
        latency_runs=LATENCY_RUNS,
        report_path=tmp_path / "export_report.md",
    )
    markdown = (tmp_path / "export_report.md").read_text()
    lines = markdown.splitlines()
    assert lines[0].startswith("| Quantization | Size (bytes) |")
    assert lines[1].startswith("|---|")
    assert lines[2].startswith("| `dynamic` | ")
    assert f"{report.file_size_bytes:,}" in lines[2]
    assert f"{100 * report.litert_accuracy:.2f}" in lines[2]
    saved = json.loads((tmp_path / "export_report.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["quantization"] == "dynamic"
    assert saved["file_size_bytes"] == os.path.getsize(tmp_path / "student.tflite")

    # A `.json` report path receives the JSON, the table goes next to it.
    markdown_path, json_path = report.write(tmp_path / "r.json")
    assert (markdown_path, json_path) == (str(tmp_path / "r.md"), str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text())["latency_ms"] == report.latency_ms


def test_reports_table_has_one_row_per_report():
    reports = [
        export.ExportReport(path=None, quantization=mode, file_size_bytes=size)
        for mode, size in (("float32", 4000), ("int8", 1000))
    ]
    lines = export.reports_table(reports).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| `float32` | 4,000 | n/a |")
    assert lines[3].startswith("| `int8` | 1,000 | n/a |")
    assert lines[3].endswith("| None/None | no |")


def test_report_lists_its_files_and_shows_as_markdown(classifier, digits, tmp_path):
    _, _, x_val, y_val = digits
    report = export.export_litert(
        classifier,
        tmp_path / "student.tflite",
        validation_data=(x_val, y_val),
        latency_runs=0,
        report_path=tmp_path / "export.md",
    )
    written = [str(tmp_path / "export.md"), str(tmp_path / "export.json")]
    assert report.files == written
    assert sorted(os.listdir(tmp_path)) == ["export.json", "export.md", "student.tflite"]
    files_line = f"Files: `{tmp_path / 'student.tflite'}`, `{written[0]}`, `{written[1]}`"
    # A notebook shows the report as its table, followed by the files.
    shown = report._repr_markdown_()
    assert shown == report.to_markdown()
    assert shown.splitlines()[0].startswith("| Quantization | Size (bytes) |")
    assert shown.splitlines()[2].startswith("| `float32` | ")
    assert shown.rstrip().endswith(files_line)
    assert (tmp_path / "export.md").read_text() == shown
    assert json.loads((tmp_path / "export.json").read_text())["files"] == written


def test_report_without_files_is_its_table():
    report = export.ExportReport(path=None, quantization="int8", file_size_bytes=1000)
    assert report.files == []
    assert report._repr_markdown_() == export.reports_table([report])
