"""The language run's report: held-out perplexity over paired seeds, in words and tables."""

import os

from tf_distill.commands.report import markdown_table
from tf_distill.commands.report import mean_std
from tf_distill.commands.report import plot_curves
from tf_distill.commands.report import verdict_lines
from tf_distill.files import atomic_write

LANGUAGE_COLUMNS = [
    ("model", "model", "s"),
    ("seed", "seed", "d"),
    ("test_perplexity", "test perplexity", ".3f"),
    ("validation_perplexity", "validation perplexity", ".3f"),
    ("sample_nll", "teacher NLL of own samples", ".4f"),
    ("parameters", "parameters", ",d"),
    ("tokens_per_second", "training tokens/s", ",.0f"),
    ("train_seconds", "training time (s)", ".1f"),
]


def language_comparison(rows):
    """Compares the distilled student's test perplexity with the student alone's, seed by seed.

    Returns:
        None without both kinds of rows; else the per-seed perplexities
        (`alone`, `distilled`), their means and standard deviations, the
        teacher's, `improved` (seeds where distillation lowered perplexity),
        the `verdict` and the `sentence` that says it: "better" only when
        distillation lowered it on every one of at least two seeds, "worse"
        when it raised it on every one.
    """
    alone = {r["seed"]: r for r in rows if r["model"] == "student alone"}
    distilled = {r["seed"]: r for r in rows if r["model"] == "distilled student"}
    seeds = [seed for seed in distilled if seed in alone]
    if not seeds:
        return None
    alone_values = [alone[s]["test_perplexity"] for s in seeds]
    distilled_values = [distilled[s]["test_perplexity"] for s in seeds]
    improved = sum(d < a for a, d in zip(alone_values, distilled_values))
    worse = sum(d > a for a, d in zip(alone_values, distilled_values))
    alone_mean, alone_std = mean_std(alone_values)
    distilled_mean, distilled_std = mean_std(distilled_values)
    teacher = [r["test_perplexity"] for r in rows if r["model"] == "teacher"]
    shown = ", ".join(f"{v:.3f}" for v in alone_values)
    shown_distilled = ", ".join(f"{v:.3f}" for v in distilled_values)
    numbers = (f"test perplexity {alone_mean:.3f} ± {alone_std:.3f} → {distilled_mean:.3f} ± "
               f"{distilled_std:.3f} (student alone → distilled; per seed [{shown}] → "
               f"[{shown_distilled}]" + (f"; teacher {teacher[0]:.3f}" if teacher else "") + ")")
    n = len(seeds)
    if n >= 2 and improved == n:
        verdict, sentence = "better", f"Distillation helped on {n} of {n} seeds: {numbers}."
    elif n >= 2 and worse == n:
        verdict = "worse"
        sentence = f"Distillation made the student worse on {n} of {n} seeds: {numbers}."
    else:
        verdict = "no reliable difference"
        why = ("one seed cannot show one: set `training.seeds` (3 or more)" if n == 1
               else f"lower on {improved}, higher on {worse} of {n} seeds")
        sentence = f"No reliable difference between distilled and alone ({why}): {numbers}."
    comparison = {
        "seeds": seeds, "alone": alone_values, "distilled": distilled_values,
        "improved": improved, "worse": worse,
        "alone_mean": alone_mean, "alone_std": alone_std,
        "distilled_mean": distilled_mean, "distilled_std": distilled_std,
        "teacher": teacher[0] if teacher else None,
        "verdict": verdict, "sentence": sentence,
    }
    samples = [(alone[s].get("sample_nll"), distilled[s].get("sample_nll")) for s in seeds]
    if all(a is not None and d is not None for a, d in samples):
        comparison["sample_nll_alone"] = [a for a, _ in samples]
        comparison["sample_nll_distilled"] = [d for _, d in samples]
    return comparison


def write_language_report(output_dir, results, histories, config_text=None):
    """Writes `report.md` (and `curves.png`) into `output_dir`; returns the names written."""
    written = []
    if histories:
        plot_curves(histories, os.path.join(output_dir, "curves.png"),
                    title="Training curves (loss per token)")
        written.append("curves.png")
    data = results["data"]
    lines = [
        "# tf_distill language run report",
        "",
        f"Text: **{data['name']}** — {data['train']:,} train, {data['validation']:,} "
        f"validation, {data['test']:,} test tokens (byte-level, vocabulary "
        f"{data['vocabulary_size']}), windows of {data['sequence_length']}.",
        "",
    ]
    lines += verdict_lines(results)
    lines += [
        markdown_table(results["models"], LANGUAGE_COLUMNS),
        "",
        "Perplexity is `exp(mean NLL)` per byte over the held-out split. The teacher's "
        "NLL of own samples scores each student's continuations of test prompts: "
        "lower means its samples stray less from what the teacher finds likely "
        "(the exposure-bias measure).",
        "",
    ]
    if histories:
        lines += ["## Training curves", "", "![training curves](curves.png)", ""]
    if config_text:
        lines += ["## Config", "", "```yaml", config_text.rstrip(), "```", ""]
    atomic_write(os.path.join(output_dir, "report.md"), "\n".join(lines))
    written.append("report.md")
    return written
