"""tf_distill.comparison: mean ± std, paired differences and the verdict, on hand-checked numbers."""

import math

import numpy as np
import pytest

from tf_distill import comparison


def test_mean_std_is_the_sample_std():
    # Mean 10; squared deviations 4 + 4 + 0 = 8; 8 / (3 - 1) = 4; std 2.
    assert comparison.mean_std([12, 8, 10]) == (10.0, 2.0)
    values = [224.197, 223.973, 232.486]
    assert comparison.mean_std(values) == pytest.approx((np.mean(values), np.std(values, ddof=1)))
    assert comparison.format_mean_std([12, 8, 10]) == "10.0 ± 2.0"
    assert comparison.format_mean_std([1.5, 2.5], digits=3) == "2.000 ± 0.707"


def test_mean_std_of_one_value_has_no_spread():
    assert comparison.mean_std([7]) == (7.0, 0.0)


def test_one_value_prints_alone_and_counts_agree_with_their_noun():
    assert comparison.format_mean_std([32.292], digits=3) == "32.292"
    assert [comparison.counted(n, "epoch") for n in (0, 1, 2)] == [
        "0 epochs", "1 epoch", "2 epochs"]


def test_mean_std_of_nothing_raises():
    with pytest.raises(ValueError, match="`values` must hold at least one number"):
        comparison.mean_std([])


def test_paired_differences_and_t():
    result = comparison.paired([150, 160, 155], [120, 125, 121])
    assert result["differences"] == [30.0, 35.0, 34.0]
    assert result["improved"] == 3 and result["worsened"] == 0 and result["n"] == 3
    # Mean 33, std sqrt(((-3)² + 2² + 1²) / 2) = sqrt(7); t = 33 / (sqrt(7) / sqrt(3)).
    assert result["mean"] == pytest.approx(33.0)
    assert result["std"] == pytest.approx(math.sqrt(7))
    assert result["t"] == pytest.approx(33.0 / (math.sqrt(7) / math.sqrt(3)))


def test_paired_t_is_undefined_for_one_seed_or_no_difference():
    assert comparison.paired([150], [100])["t"] is None
    assert comparison.paired([10, 12], [10, 12])["t"] is None
    assert comparison.paired([10, 10, 10], [8, 8, 8])["t"] == math.inf
    assert comparison.paired([8, 8], [10, 10])["t"] == -math.inf


def test_paired_needs_one_value_per_seed_each():
    with pytest.raises(ValueError, match="one value per seed each. Received lengths 2 and 1"):
        comparison.paired([1, 2], [1])


def test_t_test_verdicts():
    better = comparison.paired([150, 160, 155], [120, 125, 121])
    assert comparison.verdict(better) == "better"
    worse = comparison.paired([120, 125, 121], [150, 160, 155])
    assert comparison.verdict(worse) == "worse"
    # Fewer errors on every seed, but spread too wide for 3 seeds.
    noisy = comparison.paired([150, 160, 155], [149, 130, 154])
    assert noisy["improved"] == 3
    assert comparison.verdict(noisy) == "no reliable difference"
    assert comparison.verdict(noisy, t_test=False) == "better"
    # Mixed signs.
    mixed = comparison.paired([150, 160, 155], [140, 165, 150])
    assert comparison.verdict(mixed) == "no reliable difference"
    assert comparison.verdict(mixed, t_test=False) == "no reliable difference"
    # Identical non-zero differences: infinitely sure.
    assert comparison.verdict(comparison.paired([10, 10, 10], [8, 8, 8])) == "better"


@pytest.mark.parametrize("t_test", [True, False])
def test_one_seed_never_decides(t_test):
    one = comparison.paired([150], [100])
    assert comparison.verdict(one, t_test=t_test) == "no reliable difference"


@pytest.mark.parametrize("t_test", [True, False])
def test_a_tie_on_one_seed_is_no_reliable_difference(t_test):
    tie = comparison.paired([12, 13, 11], [8, 13, 7])
    assert tie["improved"] == 2 and tie["worsened"] == 0
    assert comparison.verdict(tie, t_test=t_test) == "no reliable difference"
    all_tied = comparison.paired([12, 13], [12, 13])
    assert comparison.verdict(all_tied, t_test=t_test) == "no reliable difference"


def test_two_seeds():
    # Sign rule: both seeds improved is enough.
    two = comparison.paired([12, 13], [8, 10])
    assert comparison.verdict(two, t_test=False) == "better"
    assert comparison.verdict(comparison.paired([8, 9], [12, 10]), t_test=False) == "worse"
    # t test, 1 degree of freedom: differences 4 and 3, t = 3.5 / (0.7071 / 1.4142) = 7
    # < 12.706, so not beyond the noise; differences 4 and 4.2 give t = 41 > 12.706.
    assert two["t"] == pytest.approx(7.0)
    assert comparison.verdict(two) == "no reliable difference"
    assert comparison.verdict(comparison.paired([12, 13], [8, 8.8])) == "better"


def test_t_critical_values():
    assert comparison.t_critical_95(1) == pytest.approx(12.706)
    assert comparison.t_critical_95(2) == pytest.approx(4.303)
    assert comparison.t_critical_95(50) == comparison.t_critical_95(10)
    with pytest.raises(ValueError, match="`degrees_of_freedom` must be >= 1"):
        comparison.t_critical_95(0)


def test_verdicts_are_the_documented_words():
    assert comparison.VERDICTS == ("better", "worse", "no reliable difference")
