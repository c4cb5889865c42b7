"""The wording helpers of bench/bench_quality.py, on fixed numbers (mean ± std,
the paired differences and the verdict are tested in test_comparison.py)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))

import quality_stats as stats  # noqa: E402

from tf_distill import comparison  # noqa: E402


def test_gap_closed_reproduces_hinton():
    assert stats.gap_closed(146, 67, 74) == pytest.approx(72 / 79)
    assert stats.gap_closed(100, 100, 90) is None  # no gap: no share
    assert stats.gap_closed(100, 50, 120) == pytest.approx(-0.4)  # worse than alone


def test_goal_text_says_met_or_by_how_much_missed():
    assert stats.goal_text(0.91, 0.8) == "**met** (91 % ≥ 80 %)"
    assert stats.goal_text(0.68, 0.8) == "**missed** by 12 points (68 % < 80 %)"
    assert "not measurable" in stats.goal_text(None, 0.8)


def test_verdict_sentence_carries_the_numbers():
    sentence = stats.verdict_sentence(comparison.paired([12, 13, 11], [8, 9, 7]))
    assert sentence.startswith("distilled vs alone: fewer errors on 3 of 3 seeds, more on 0")
    assert "+4.0 ± 0.0 errors" in sentence
    assert sentence.endswith("**better beyond the noise**")
    sentence = stats.verdict_sentence(comparison.paired([12, 13, 11], [13, 12, 11]))
    assert sentence.endswith("**no reliable difference**")


def test_at_least_as_good_as_the_best_baseline_per_seed_and_on_the_mean():
    tuned, alone, default_kd = [30, 41, 35], [40, 40, 50], [31, 45, 36]
    per_seed, on_mean = stats.at_least_as_good(tuned, alone, default_kd)
    # Seed 1: 41 > 40 (alone); ties count as at least as good.
    assert per_seed == [True, False, True]
    assert on_mean  # 35.3 <= min(43.3, 37.3)
    assert stats.at_least_as_good([31, 41], [31, 40], [31, 40]) == ([True, False], False)
    with pytest.raises(ValueError, match="one value per seed"):
        stats.at_least_as_good([1, 2], [1])
    with pytest.raises(ValueError, match="at least one list"):
        stats.at_least_as_good([1, 2])


# --- The method table's runs: fingerprinted, cached, seeded per run ------------


def _description(**changes):
    import quality_methods

    shared = {"data": "arrays:sha256:d", "teacher": "t", "code": "c",
              "tensorflow": "2", "keras": "3"}
    arguments = {"key": "crd", "factor": 1.0, "seed": 0, "settings": {"epochs": 15},
                 "shared": shared, **changes}
    return quality_methods.run_description(
        arguments["key"], arguments["factor"], arguments["seed"], arguments["settings"],
        arguments["shared"],
    )


def test_a_cached_run_is_read_back_and_a_changed_fingerprint_trains_again(tmp_path):
    import quality_methods

    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return {"test": value, "validation": 1, "seconds": 2.0}

        return run

    first = quality_methods.cached_run(str(tmp_path), _description(), compute(7))
    again = quality_methods.cached_run(str(tmp_path), _description(), compute(8))
    assert (first["test"], first["cached"], again["test"], again["cached"]) == (7, False, 7, True)
    assert calls == [7]
    for changed in ({"factor": 0.1}, {"seed": 1}, {"settings": {"epochs": 16}},
                    {"shared": {"data": "other"}}):
        run = quality_methods.cached_run(str(tmp_path), _description(**changed), compute(9))
        assert not run["cached"]
    with pytest.raises(quality_methods.NotCached):
        quality_methods.cached_run(str(tmp_path), _description(seed=5), None)


def test_a_runs_description_holds_its_method_and_revision():
    import quality_methods

    crd = _description()
    assert crd["method"]["key"] == "crd" and crd["revision"] == quality_methods.revision("crd")
    assert quality_methods.revision("crd") == 2 and quality_methods.revision("kd") == 1
    alone = _description(key=None)
    assert alone["method"] is None and alone["revision"] is None


def test_each_run_has_its_own_seed_whatever_ran_before():
    import quality_methods

    seeds = {quality_methods.run_seed(_description(key=key, factor=factor, seed=seed))
             for key in ("crd", "dkd", None) for factor in (0.1, 1.0) for seed in (0, 1)}
    assert len(seeds) == 12
    assert quality_methods.run_seed(_description()) == quality_methods.run_seed(_description())


def test_the_changes_since_measured_name_the_rows_of_issue_23():
    import quality_methods

    assert sorted(quality_methods.CHANGES) == ["crd", "ctkd", "kd_standardized"]
    assert quality_methods.changes_since("crd", 1) and not quality_methods.changes_since("crd", 2)
    assert not quality_methods.changes_since("kd", 1)


def test_the_summary_marks_a_row_measured_before_its_method_changed():
    import quality_report

    runs = {"1.0": {"test": {0: 10, 1: 12}, "validation": {0: 5, 1: 6}}}
    part = {"alone": {"test": [11, 13]}, "seeds": [0, 1], "methods": {
        "crd": {"runs": runs, "chosen_factor": 1.0},  # measured at revision 1
        "kd_standardized": {"runs": runs, "chosen_factor": 1.0, "revision": 2},
        "kd": {"runs": runs, "chosen_factor": 1.0},
    }}
    summary = quality_report.method_summary(part)
    assert "other classes" in summary["crd"]["changed_since_measured"][0]
    assert summary["kd_standardized"]["changed_since_measured"] == []
    assert summary["kd"]["changed_since_measured"] == []
