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
