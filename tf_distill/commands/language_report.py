"""The language run's report: held-out perplexity over paired seeds, in words and tables."""

import os

from tf_distill.commands.report import ONE_SEED
from tf_distill.commands.report import compare_seeds
from tf_distill.commands.report import markdown_table
from tf_distill.commands.report import plot_curves
from tf_distill.commands.report import resumed_lines
from tf_distill.commands.report import rows_by_seed
from tf_distill.commands.report import verdict_lines
from tf_distill.comparison import format_mean_std
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
        None without both kinds of rows; else `compare_seeds(rows,
        "test_perplexity")` (per-seed perplexities, means, standard
        deviations, `improved`, `worse` and the `verdict`: "better" only
        when distillation lowered perplexity on every one of at least two
        seeds, "worse" when it raised it on every one) with the `teacher`'s
        perplexity, the `sentence` that says the verdict and, where every
        row has one, the teacher's NLL of each student's own samples
        (`sample_nll_alone`, `sample_nll_distilled`).
    """
    comparison = compare_seeds(rows, "test_perplexity")
    if comparison is None:
        return None
    n, improved, worse = len(comparison["seeds"]), comparison["improved"], comparison["worse"]
    teacher = [r["test_perplexity"] for r in rows if r["model"] == "teacher"]
    shown = ", ".join(f"{v:.3f}" for v in comparison["alone"])
    shown_distilled = ", ".join(f"{v:.3f}" for v in comparison["distilled"])
    per_seed = f"; per seed [{shown}] → [{shown_distilled}]" if n > 1 else ""
    numbers = (f"test perplexity {format_mean_std(comparison['alone'], 3)} "
               f"→ {format_mean_std(comparison['distilled'], 3)} "
               f"(student alone → distilled{per_seed}"
               + (f"; teacher {teacher[0]:.3f}" if teacher else "") + ")")
    if comparison["verdict"] == "better":
        sentence = f"Distillation helped on {n} of {n} seeds: {numbers}."
    elif comparison["verdict"] == "worse":
        sentence = f"Distillation made the student worse on {n} of {n} seeds: {numbers}."
    else:
        why = (ONE_SEED.format(measure="lower perplexity") if n == 1
               else f"lower on {improved}, higher on {worse} of {n} seeds")
        sentence = f"No reliable difference between distilled and alone ({why}): {numbers}."
    comparison.update(teacher=teacher[0] if teacher else None, sentence=sentence)
    seeds, alone, distilled = rows_by_seed(rows)
    samples = [(alone[s].get("sample_nll"), distilled[s].get("sample_nll")) for s in seeds]
    if all(a is not None and d is not None for a, d in samples):
        comparison["sample_nll_alone"] = [a for a, _ in samples]
        comparison["sample_nll_distilled"] = [d for _, d in samples]
    return comparison


def write_language_report(output_dir, results, histories, config_text=None):
    """Writes `report.md` (and `curves.png`) into `output_dir`; returns the names written."""
    written = []
    # No epoch is validated (the validation perplexity is measured once, at
    # the end): the curves are the training split's label loss per token.
    if plot_curves(histories, os.path.join(output_dir, "curves.png"),
                   title="Training curves (loss per token)"):
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
    lines += resumed_lines(results.get("resumed") or {})
    lines += [
        markdown_table(results["models"], LANGUAGE_COLUMNS),
        "",
        "Perplexity is `exp(mean NLL)` per byte over the held-out split. The teacher's "
        "NLL of own samples scores each student's continuations of test prompts: "
        "lower means its samples stray less from what the teacher finds likely "
        "(the exposure-bias measure).",
        "",
    ]
    if "curves.png" in written:
        lines += ["## Training curves", "", "![training curves](curves.png)", ""]
    if config_text:
        lines += ["## Config", "", "```yaml", config_text.rstrip(), "```", ""]
    atomic_write(os.path.join(output_dir, "report.md"), "\n".join(lines))
    written.append("report.md")
    return written
