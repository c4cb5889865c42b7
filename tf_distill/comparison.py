"""Comparison over paired seeds: mean ± std, per-seed differences, the verdict.

A distilled student and its baseline (the same student trained alone) are
trained on the same seeds, so each seed gives one paired difference. The run
report (`tf-distill run`) and the benchmarks under `bench/` judge those
differences here, with one set of numbers and one rule.

Pure Python on lists of numbers (error counts, perplexities): lower is better.
"""

import math
import statistics

# Two-sided 95 % critical values of Student's t, by degrees of freedom.
_T_CRITICAL_95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
}

VERDICTS = ("better", "worse", "no reliable difference")


def mean_std(values):
    """Mean and sample standard deviation (`ddof=1`) of a list of numbers.

    Both come from `statistics` (`fmean`, `stdev`): exact sums, so the same
    numbers give the same figures in every report. The deviation of a single
    value is 0, not undefined (`format_mean_std` shows one value alone).

    Args:
        values: The numbers, one per seed.

    Returns:
        `(mean, std)` as floats.

    Raises:
        ValueError: If `values` is empty.

    Example:

    >>> mean_std([12, 8, 10])
    (10.0, 2.0)
    """
    values = [float(value) for value in values]
    if not values:
        raise ValueError("`values` must hold at least one number. Received: values=[]")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std


def format_mean_std(values, digits=1):
    """`"10.0 ± 2.0"`: `mean_std(values)` with `digits` decimals each.

    One value has no spread to show: it prints alone (`"32.292"`, not
    `"32.292 ± 0.000"`).
    """
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def counted(number, noun):
    """`"1 seed"`, `"3 seeds"`: a count and its noun, plural unless one."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def t_critical_95(degrees_of_freedom):
    """Two-sided 95 % critical value of Student's t.

    Beyond 10 degrees of freedom the value for 10 (2.228) is returned: a
    conservative bound (the limit is 1.96).

    Raises:
        ValueError: If `degrees_of_freedom` is below 1.
    """
    if degrees_of_freedom < 1:
        raise ValueError(
            f"`degrees_of_freedom` must be >= 1. Received: degrees_of_freedom={degrees_of_freedom!r}"
        )
    return _T_CRITICAL_95[min(int(degrees_of_freedom), 10)]


def paired(baseline, method):
    """Paired comparison of two lists of values, one entry per seed each.

    Lower is better (error counts, perplexities): a positive difference
    `baseline - method` means the method did better on that seed.

    Args:
        baseline: The baseline's value per seed (the student alone).
        method: The method's value per seed, in the same seed order.

    Returns:
        A dict: `differences` (baseline − method, per seed), their `mean`
        and sample `std`, `improved` and `worsened` (how many seeds had a
        positive or a negative difference), `n` (seeds), and the paired t
        statistic `t` = mean / (std / √n): `None` when undefined (one seed,
        or every difference 0), ±inf when every difference is the same
        non-zero number.

    Raises:
        ValueError: If the two lists differ in length.

    Example:

    >>> paired([12, 13, 11], [8, 9, 7])["differences"]
    [4.0, 4.0, 4.0]
    """
    if len(baseline) != len(method):
        raise ValueError(
            "`baseline` and `method` must hold one value per seed each. "
            f"Received lengths {len(baseline)} and {len(method)}."
        )
    differences = [float(b) - float(m) for b, m in zip(baseline, method)]
    mean, std = mean_std(differences)
    n = len(differences)
    t = None
    if n > 1 and std > 0:
        t = mean / (std / math.sqrt(n))
    elif n > 1 and mean != 0:
        t = math.copysign(math.inf, mean)
    return {
        "differences": differences,
        "mean": mean,
        "std": std,
        "improved": sum(d > 0 for d in differences),
        "worsened": sum(d < 0 for d in differences),
        "n": n,
        "t": t,
    }


def verdict(comparison, t_test=True):
    """`"better"`, `"worse"` or `"no reliable difference"` from `paired(...)`.

    "better" (or "worse") needs at least two seeds, all of them improved (or
    all worsened). With `t_test=True`, the paired t statistic must also lie
    beyond the two-sided 95 % critical value for `n - 1` degrees of freedom
    (the benchmarks' rule); with `t_test=False` the sign on every seed is
    enough (the run report's rule, for the 2 or 3 seeds a run can afford).
    A single seed, or a tie on any seed, is never more than
    "no reliable difference".

    Args:
        comparison: What `paired` returned.
        t_test: Whether the paired t statistic must be significant too.

    Returns:
        One of `VERDICTS`.
    """
    n = comparison["n"]
    if n < 2:
        return "no reliable difference"
    if not t_test:
        if comparison["improved"] == n:
            return "better"
        if comparison["worsened"] == n:
            return "worse"
        return "no reliable difference"
    t = comparison["t"]
    if t is None:
        return "no reliable difference"
    critical = t_critical_95(n - 1)
    if comparison["improved"] == n and t > critical:
        return "better"
    if comparison["worsened"] == n and t < -critical:
        return "worse"
    return "no reliable difference"
