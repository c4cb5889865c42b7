"""The search's results as a user reads them: trial numbers, columns, the plot (issue 11).

The rows are built by hand, as `trial_rows` returns them: no search runs.
"""

import csv

import numpy as np
import pytest

from tf_distill import tuning
from tf_distill.backend import keras


def _rows():
    """Three trials of a search of T and α with the learning rate fixed; one failed."""
    rows = []
    for trial_id, temperature, alpha, score in (
        ("00", 3.2, 0.25, 0.91),
        ("01", 4.6, 0.75, None),
        ("02", 3.9, 0.5, 0.94),
    ):
        rows.append({
            "trial": trial_id,
            "number": tuning.trial_number(trial_id),
            "status": "COMPLETED" if score is not None else "FAILED",
            "temperature": temperature,
            "student_loss_weight": alpha,
            "learning_rate": 0.002,
            "score": score,
            "best_epoch": 3 if score is not None else None,
            "message": "" if score is not None else "`loss` turned nan at epoch 1",
        })
    return rows


def test_trial_numbers_are_keras_tuners():
    # Keras Tuner's ids count from "0" (zero-padded when max_trials >= 10);
    # it shows "Search: Running Trial #1" for the first.
    assert [tuning.trial_number(i) for i in ("0", "1", "00", "09", "10")] == [1, 2, 1, 10, 11]


def test_trials_table_numbers_trials_and_shows_only_searched_columns(tmp_path):
    table = tuning.write_trials(
        _rows(), tmp_path, "val_accuracy",
        hyperparameters=["temperature", "student_loss_weight"],
    )
    lines = table.splitlines()
    assert lines[0] == (
        "| trial | status | temperature | student loss weight | val_accuracy | best epoch "
        "| message |"
    )
    assert lines[2].startswith("| #1 | COMPLETED | 3.2 | 0.25 | 0.91 | 3 |")
    assert lines[3].startswith("| #2 | FAILED | 4.6 | 0.75 | — | — | `loss` turned nan")
    assert lines[4].startswith("| #3 | COMPLETED |")
    # The fixed learning rate is said once, under the table, not as a column.
    assert "learning rate" not in lines[0]
    assert lines[-1] == "Fixed (not searched): learning rate = 0.002."
    assert (tmp_path / "trials.md").read_text() == table + "\n"
    with open(tmp_path / "trials.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [row["trial"] for row in written] == ["1", "2", "3"]
    assert "learning_rate" not in written[0]
    assert float(written[2]["temperature"]) == pytest.approx(3.9)


def test_without_a_searched_list_every_hyperparameter_is_a_column(tmp_path):
    table = tuning.write_trials(_rows(), tmp_path)
    assert table.splitlines()[0].startswith(
        "| trial | status | temperature | student loss weight | learning rate |"
    )
    assert "Fixed" not in table


def test_searched_hyperparameters_leave_out_fixed_values(tmp_path):
    def build_student():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])

    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    hypermodel = tuning.DistillerHyperModel(
        teacher, build_student, temperature=(1.0, 20.0), student_loss_weight=0.5,
        learning_rate=[0.01, 0.001], seed=0,
    )
    tuner = tuning.make_tuner(hypermodel, "random", max_trials=1, directory=tmp_path,
                              overwrite=True)
    assert tuning.searched_hyperparameters(tuner) == ["temperature", "learning_rate"]


@pytest.mark.parametrize(
    "low, high, expected",
    [
        (1.0, 20.0, [1, 2, 5, 10, 20]),
        (0.5, 3.0, [0.5, 1, 2]),
        (3.2, 4.6, [3.2, 3.6, 4.1, 4.6]),
        (4.0, 4.0, [4.0]),
    ],
)
def test_log_ticks_are_a_few_plain_values(low, high, expected):
    assert tuning.log_ticks(low, high) == pytest.approx(expected)


def test_search_plot_has_plain_log_ticks(tmp_path, monkeypatch):
    # A search within one decade of T: matplotlib's own log labels were
    # "3×10⁰4×10⁰", overlapping. The axis's labels must be the plain ticks.
    from tf_distill.plotting import pyplot

    plt = pyplot()
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    path = tmp_path / "search.png"
    tuning.plot_search(_rows(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (figure,) = figures
    axis = figure.axes[0]
    figure.canvas.draw()
    shown = [label.get_text() for label in axis.get_xticklabels() if label.get_text()]
    assert shown == ["3.2", "3.6", "4.1", "4.6"]
    assert not [label.get_text() for label in axis.get_xticklabels(minor=True)
                if label.get_text()]
    assert np.all(np.diff(axis.get_xticks()) > 0)
    monkeypatch.undo()
    plt.close(figure)
