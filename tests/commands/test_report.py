"""The run report's comparison over paired seeds: the numbers and the sentence."""

import warnings

import numpy as np
import pytest

from tf_distill.commands.report import plot_curves
from tf_distill.commands.report import seed_comparison
from tf_distill.commands.report import write_report
from tf_distill.comparison import mean_std


def _rows(alone, distilled, total=270):
    rows = [{"model": "teacher", "seed": None, "test_errors": 5, "test_examples": total}]
    for seed, (a, d) in enumerate(zip(alone, distilled)):
        rows.append({"model": "student alone", "seed": seed, "test_errors": a,
                     "test_examples": total})
        rows.append({"model": "distilled student", "seed": seed, "test_errors": d,
                     "test_examples": total})
    return rows


def test_mean_std_is_the_sample_deviation():
    assert mean_std([12, 8, 10]) == pytest.approx((10.0, np.std([12, 8, 10], ddof=1)))
    assert mean_std([7]) == (7.0, 0.0)


def test_better_on_every_seed():
    comparison = seed_comparison(_rows([12, 13, 11], [8, 9, 7]))
    assert comparison["verdict"] == "better"
    assert comparison["improved"] == 3
    assert comparison["sentence"].startswith(
        "Distillation helped: fewer errors on 3 of 3 seeds, 12.0 ± 1.0 → 8.0 ± 1.0 test errors of 270"
    )
    assert "[12, 13, 11] → [8, 9, 7]; teacher 5)" in comparison["sentence"]
    assert comparison["teachers"] == {"teacher": 5}


def test_mixed_seeds_are_no_reliable_difference():
    comparison = seed_comparison(_rows([12, 13, 11], [8, 14, 11]))
    assert comparison["verdict"] == "no reliable difference"
    assert "fewer errors on 1, more on 1 of 3 seeds" in comparison["sentence"]
    assert "tune" not in comparison["sentence"]  # the mean improved


def test_worse_on_every_seed_points_to_tuning():
    comparison = seed_comparison(_rows([8, 9], [12, 10]))
    assert comparison["verdict"] == "worse"
    assert comparison["sentence"].startswith("Distillation made the student worse: more errors on 2 of 2")
    assert "tf-distill tune" in comparison["sentence"]


def test_worse_on_average_says_so_even_without_a_reliable_difference():
    comparison = seed_comparison(_rows([8, 9, 10], [12, 9, 11]))
    assert comparison["verdict"] == "no reliable difference"
    assert "On average distillation made the student worse" in comparison["sentence"]
    assert "tf-distill tune" in comparison["sentence"]


def test_one_seed_is_never_a_reliable_difference():
    comparison = seed_comparison(_rows([13], [8]))
    assert comparison["verdict"] == "no reliable difference"
    # The advice asks for what the verdict needs (2 seeds can say "helped"),
    # and one seed's counts show no "± 0.0" spread.
    assert comparison["sentence"] == (
        "No reliable difference between distilled and alone (one seed cannot show one: "
        'list 2 or more `training.seeds`; "helped" needs fewer errors on every seed): '
        "13 → 8 test errors of 270 (student alone → distilled; teacher 5).")
    assert seed_comparison(_rows([13, 12], [8, 9]))["verdict"] == "better"


def test_one_language_seed_shows_its_perplexities_without_spread():
    from tf_distill.commands.language_report import language_comparison

    rows = [{"model": "teacher", "seed": None, "test_perplexity": 20.5},
            {"model": "student alone", "seed": 0, "test_perplexity": 32.35},
            {"model": "distilled student", "seed": 0, "test_perplexity": 32.292}]
    assert language_comparison(rows)["sentence"] == (
        "No reliable difference between distilled and alone (one seed cannot show one: "
        'list 2 or more `training.seeds`; "helped" needs lower perplexity on every seed): '
        "test perplexity 32.350 → 32.292 (student alone → distilled; teacher 20.500).")


def test_no_baseline_gives_no_comparison():
    rows = [r for r in _rows([13], [8]) if r["model"] != "student alone"]
    assert seed_comparison(rows) is None


def test_report_lists_its_files_and_says_the_verdict(tmp_path):
    rows = _rows([12, 13, 11], [8, 9, 7])
    results = {
        "data": {"name": "digits", "train": 1, "validation": 1, "test": 270, "num_classes": 10},
        "models": rows,
        "comparison": seed_comparison(rows),
        "warnings": ["The teacher is no better than the student trained alone."],
    }
    histories = {"distilled student": {"val_accuracy": [0.5, 0.6], "val_loss": [1.0, 0.8]}}
    written = write_report(str(tmp_path), results, histories)
    assert written == ["curves.png", "comparison.png", "report.md"]
    report = (tmp_path / "report.md").read_text()
    assert "**Distillation helped: fewer errors on 3 of 3 seeds" in report
    assert "> **Warning:** The teacher is no better" in report
    assert (tmp_path / "comparison.png").stat().st_size > 1000


def _plot(histories, path):
    """`plot_curves`, with any warning (an empty legend's) an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return plot_curves(histories, str(path))


def test_curves_plot_each_students_label_loss_in_whole_epochs(tmp_path):
    # A distiller's `val_loss` is its whole objective, on another scale than
    # the student alone's: the label loss of both is what compares.
    histories = {
        "teacher": {"val_accuracy": [0.8, 0.9], "val_loss": [0.6, 0.3]},
        "student alone": {"val_accuracy": [0.5, 0.6, 0.7], "val_loss": [1.5, 1.2, 1.0],
                          "loss": [1.6, 1.3, 1.1]},
        "distilled student": {"val_accuracy": [0.5, 0.7, 0.8], "val_loss": [9.8, 3.0, 0.5],
                              "val_student_loss": [1.4, 0.9, 0.8], "loss": [12.0, 4.0, 1.0]},
    }
    panels = _plot(histories, tmp_path / "curves.png")
    assert [(p["title"], p["ylabel"]) for p in panels] == [
        ("Validation accuracy", "accuracy"), ("Validation loss (labels)", "loss (labels)")]
    assert panels[1]["series"] == {
        "teacher": ("val_loss", [0.6, 0.3]),
        "student alone": ("val_loss", [1.5, 1.2, 1.0]),
        "distilled student": ("val_student_loss", [1.4, 0.9, 0.8]),
    }
    assert panels[0]["series"]["distilled student"] == ("val_accuracy", [0.5, 0.7, 0.8])
    for panel in panels:
        assert panel["epoch_ticks"] and all(tick == int(tick) for tick in panel["epoch_ticks"])
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_language_curves_draw_the_training_label_loss_and_no_empty_panel(tmp_path):
    # A language run validates no epoch and has no accuracy: one panel, the
    # label loss per token (a distiller's `student_loss`, not its total).
    histories = {
        "student alone": {"loss": [5.5, 5.0]},
        "distilled student": {"loss": [12.0, 10.0], "student_loss": [5.4, 4.9],
                              "distillation_loss": [20.0, 16.0], "total_loss": [12.0, 10.0]},
    }
    panels = _plot(histories, tmp_path / "curves.png")
    assert [p["title"] for p in panels] == ["Training loss (labels)"]
    assert panels[0]["series"] == {"student alone": ("loss", [5.5, 5.0]),
                                   "distilled student": ("student_loss", [5.4, 4.9])}
    assert all(tick == int(tick) for tick in panels[0]["epoch_ticks"])


def test_a_run_without_validation_is_labeled_training_beside_validated_ones(tmp_path):
    histories = {"teacher": {"val_loss": [0.6, 0.3]}, "reused": {"loss": [0.9, 0.7]}}
    panels = _plot(histories, tmp_path / "curves.png")
    assert panels[0]["title"] == "Validation loss (labels)"
    assert list(panels[0]["series"]) == ["teacher", "reused (training)"]


def test_nothing_to_plot_writes_no_curves(tmp_path):
    assert _plot({"teacher": {}}, tmp_path / "curves.png") == []
    assert not (tmp_path / "curves.png").exists()


def test_run_table_shows_percent_with_two_decimals_as_the_export_table_does():
    from tf_distill.commands.report import RESULT_COLUMNS
    from tf_distill.commands.report import markdown_table
    from tf_distill.export import ExportReport
    from tf_distill.export import reports_table

    row = {"model": "distilled student", "seed": 0, "test_errors": 5, "test_examples": 300,
           "test_accuracy": 1 - 5 / 300, "test_error": 5 / 300}
    table = markdown_table([row], RESULT_COLUMNS)
    assert "| test errors | test accuracy (%) | test error (%) |" in table
    assert "| distilled student | 0 | 5 | 98.33 | 1.67 |" in table
    export = reports_table([ExportReport(path=None, quantization="int8", file_size_bytes=1,
                                         keras_accuracy=1 - 5 / 300)])
    assert "acc. (%)" in export and "| 98.33 |" in export


def test_advice_without_a_temperature_names_what_the_losses_have():
    # FitNets, feature and relation losses have no temperature to search.
    for losses in ([{"name": "fitnets", "teacher_layer_name": "a", "student_layer_name": "b"}],
                   ["rkd_distance", {"name": "attention_transfer"}]):
        for alone, distilled in (([8, 9], [12, 10]), ([8, 9, 10], [12, 9, 11])):
            sentence = seed_comparison(_rows(alone, distilled), losses)["sentence"]
            assert "temperature and α" not in sentence
            assert "search α, and other weights in `distillation.loss_weights`" in sentence
            assert "no temperature" in sentence
    sentence = seed_comparison(_rows([8, 9], [12, 10]), ["kd", "fitnets"])["sentence"]
    assert "search the temperature and α" in sentence
