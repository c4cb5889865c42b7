"""Aggregation over seeds for `bench_quality.py`: mean ± std, paired
differences, the share of a gap closed, and verdicts in words.

Pure Python on lists of numbers (test-error counts), so the wording of every
claim in the report is decided here, from the numbers, and tested.
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


def t_critical_95(degrees_of_freedom):
    """Two-sided 95 % critical value of Student's t (1.96 beyond 10 df is
    not used: above 10 the value for 10 is returned, a conservative bound)."""
    if degrees_of_freedom < 1:
        raise ValueError(
            f"`degrees_of_freedom` must be >= 1. Received: degrees_of_freedom={degrees_of_freedom!r}"
        )
    return _T_CRITICAL_95[min(int(degrees_of_freedom), 10)]


def mean_std(values):
    """`(mean, sample standard deviation)`; the std of one value is 0."""
    values = [float(value) for value in values]
    if not values:
        raise ValueError("`values` must hold at least one number. Received: values=[]")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std


def format_mean_std(values, digits=1):
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def paired(baseline, method):
    """Paired comparison of two lists of error counts (one entry per seed).

    Returns a dict: `differences` (baseline − method per seed: positive
    means the method made fewer errors), their `mean` and `std`, `improved`
    and `worsened` (counts of seeds), `n`, and the paired t statistic `t`
    (`None` when it is undefined: one seed, or all differences equal).
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


def verdict(comparison):
    """`"better"`, `"worse"` or `"no reliable difference"` from `paired`.

    Better (worse) beyond the noise: fewer (more) errors on every seed and
    a paired t statistic beyond the two-sided 95 % critical value. One seed
    never gives a verdict other than "no reliable difference".
    """
    n, t = comparison["n"], comparison["t"]
    if n < 2 or t is None:
        return "no reliable difference"
    critical = t_critical_95(n - 1)
    if comparison["improved"] == n and t > critical:
        return "better"
    if comparison["worsened"] == n and t < -critical:
        return "worse"
    return "no reliable difference"


def verdict_sentence(comparison, name="distilled", baseline_name="alone"):
    """One sentence, e.g. "fewer errors on 3 of 3 seeds: 12.0 → 8.0 (paired
    difference 4.0 ± 1.0): better beyond the noise"."""
    word = verdict(comparison)
    n = comparison["n"]
    text = (
        f"{name} vs {baseline_name}: fewer errors on {comparison['improved']} of {n} "
        f"seed{'s' if n != 1 else ''}, more on {comparison['worsened']}; paired "
        f"difference ({baseline_name} − {name}) {comparison['mean']:+.1f} ± "
        f"{comparison['std']:.1f} errors"
    )
    if word == "better":
        return text + ": **better beyond the noise**"
    if word == "worse":
        return text + ": **worse beyond the noise**"
    return text + ": **no reliable difference**"


def gap_closed(worse, better, reached):
    """Share of the gap from `worse` to `better` that `reached` closes.

    `(worse − reached) / (worse − better)`, e.g. Hinton's MNIST figures:
    `gap_closed(146, 67, 74)` = 0.91. `None` when there is no gap
    (`worse <= better`), since a share of nothing means nothing.
    """
    gap = float(worse) - float(better)
    if gap <= 0:
        return None
    return (float(worse) - float(reached)) / gap


def format_share(share):
    return "n/a (no gap)" if share is None else f"{100 * share:.0f} %"


def goal_text(share, goal):
    """`"**met** (91 % ≥ 80 %)"` or `"**missed** by 12 points (68 % < 80 %)"`."""
    if share is None:
        return "**not measurable** (the reference shows no gap)"
    if share >= goal:
        return f"**met** ({100 * share:.0f} % ≥ {100 * goal:.0f} %)"
    return (
        f"**missed** by {100 * (goal - share):.0f} points "
        f"({100 * share:.0f} % < {100 * goal:.0f} %)"
    )


def at_least_as_good(method, *baselines):
    """Does `method` make no more errors than the best of `baselines`?

    Each argument holds one error count per seed. Returns `(per_seed,
    on_mean)`: a list of booleans, one per seed (against the best baseline
    on that seed), and one boolean for the means (against the best mean).
    """
    if not baselines:
        raise ValueError("`baselines` must hold at least one list of errors. Received none.")
    if any(len(baseline) != len(method) for baseline in baselines):
        raise ValueError(
            "`method` and each baseline must hold one value per seed. Received lengths "
            f"{len(method)} and {[len(baseline) for baseline in baselines]}."
        )
    per_seed = [m <= min(values) for m, *values in zip(method, *baselines)]
    best_mean = min(mean_std(baseline)[0] for baseline in baselines)
    return per_seed, mean_std(method)[0] <= best_mean
