"""The wording of `bench_quality.py`'s claims: verdicts in words, the share
of a gap closed, goals met or missed.

Mean ± std, the paired differences and the verdict itself come from
`tf_distill.comparison`, the same numbers the run report uses. Pure Python on
lists of numbers (test-error counts), so the wording of every claim in the
report is decided here, from the numbers, and tested.
"""

from tf_distill.comparison import mean_std
from tf_distill.comparison import verdict


def verdict_sentence(comparison, name="distilled", baseline_name="alone"):
    """One sentence on `tf_distill.comparison.paired(...)`, with its t-test
    verdict, e.g. "distilled vs alone: fewer errors on 3 of 3 seeds, more on
    0; paired difference (alone − distilled) +4.0 ± 1.0 errors: **better
    beyond the noise**"."""
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
