"""The aggregation and wording helpers of bench/bench_quality.py, on fixed numbers."""

import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))

import quality_stats as stats  # noqa: E402


def test_mean_std_is_the_sample_std():
    mean, std = stats.mean_std([12, 8, 10])
    assert mean == pytest.approx(10.0)
    assert std == pytest.approx(2.0)
    assert stats.mean_std([7]) == (7.0, 0.0)
    assert stats.format_mean_std([12, 8, 10]) == "10.0 ± 2.0"


def test_mean_std_of_nothing_raises():
    with pytest.raises(ValueError, match="at least one number"):
        stats.mean_std([])


def test_gap_closed_reproduces_hinton():
    assert stats.gap_closed(146, 67, 74) == pytest.approx(72 / 79)
    assert stats.gap_closed(100, 100, 90) is None  # no gap: no share
    assert stats.gap_closed(100, 50, 120) == pytest.approx(-0.4)  # worse than alone


def test_goal_text_says_met_or_by_how_much_missed():
    assert stats.goal_text(0.91, 0.8) == "**met** (91 % ≥ 80 %)"
    assert stats.goal_text(0.68, 0.8) == "**missed** by 12 points (68 % < 80 %)"
    assert "not measurable" in stats.goal_text(None, 0.8)


def test_paired_differences_and_t():
    comparison = stats.paired([150, 160, 155], [120, 125, 121])
    assert comparison["differences"] == [30.0, 35.0, 34.0]
    assert comparison["improved"] == 3 and comparison["worsened"] == 0
    mean, std = stats.mean_std([30, 35, 34])
    assert comparison["t"] == pytest.approx(mean / (std / math.sqrt(3)))


def test_paired_needs_one_value_per_seed_each():
    with pytest.raises(ValueError, match="one value per seed"):
        stats.paired([1, 2], [1])


def test_verdicts():
    better = stats.paired([150, 160, 155], [120, 125, 121])
    assert stats.verdict(better) == "better"
    worse = stats.paired([120, 125, 121], [150, 160, 155])
    assert stats.verdict(worse) == "worse"
    # Fewer errors on every seed, but spread too wide for 3 seeds.
    noisy = stats.paired([150, 160, 155], [149, 130, 154])
    assert noisy["improved"] == 3
    assert stats.verdict(noisy) == "no reliable difference"
    # Mixed signs.
    mixed = stats.paired([150, 160, 155], [140, 165, 150])
    assert stats.verdict(mixed) == "no reliable difference"
    # One seed never decides.
    assert stats.verdict(stats.paired([150], [100])) == "no reliable difference"
    # Identical non-zero differences: infinitely sure.
    assert stats.verdict(stats.paired([10, 10, 10], [8, 8, 8])) == "better"


def test_verdict_sentence_carries_the_numbers():
    sentence = stats.verdict_sentence(stats.paired([12, 13, 11], [8, 9, 7]))
    assert sentence.startswith("distilled vs alone: fewer errors on 3 of 3 seeds, more on 0")
    assert "+4.0 ± 0.0 errors" in sentence
    assert sentence.endswith("**better beyond the noise**")
    sentence = stats.verdict_sentence(stats.paired([12, 13, 11], [13, 12, 11]))
    assert sentence.endswith("**no reliable difference**")


def test_t_critical_values():
    assert stats.t_critical_95(2) == pytest.approx(4.303)
    assert stats.t_critical_95(50) == stats.t_critical_95(10)
    with pytest.raises(ValueError, match="degrees_of_freedom"):
        stats.t_critical_95(0)


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
