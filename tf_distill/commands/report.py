"""The run report: the comparison over paired seeds, in words, tables and plots."""

import os

from tf_distill.catalog import DETAILS
from tf_distill.comparison import format_mean_std
from tf_distill.comparison import mean_std
from tf_distill.comparison import paired
from tf_distill.comparison import verdict
from tf_distill.files import atomic_path
from tf_distill.files import atomic_write
from tf_distill.plotting import pyplot


def rows_by_seed(rows):
    """`(seeds, alone, distilled)`: the seeds that have both a "student alone"
    and a "distilled student" row, in the distilled rows' order, and
    `{seed: row}` for each kind."""
    alone = {r["seed"]: r for r in rows if r["model"] == "student alone"}
    distilled = {r["seed"]: r for r in rows if r["model"] == "distilled student"}
    return [seed for seed in distilled if seed in alone], alone, distilled


def compare_seeds(rows, key):
    """Pairs the distilled student with the student alone, seed by seed, on `key`.

    Args:
        rows: The run's model rows (`model`, `seed`, `key`, ...).
        key: The figure compared, lower is better (`"test_errors"`,
            `"test_perplexity"`).

    Returns:
        None without both kinds of rows; else a dict with the `seeds` that
        have both, the per-seed values (`alone`, `distilled`), `improved`
        and `worse` (how many seeds distillation lowered or raised the
        figure on), means and sample standard deviations (`alone_mean`,
        `alone_std`, `distilled_mean`, `distilled_std`) and the `verdict`
        of `tf_distill.comparison.verdict` without the t test: "better" only
        when distillation lowered the figure on every one of at least two
        seeds, "worse" when it raised it on every one.
    """
    seeds, alone, distilled = rows_by_seed(rows)
    if not seeds:
        return None
    alone_values = [alone[s][key] for s in seeds]
    distilled_values = [distilled[s][key] for s in seeds]
    differences = paired(alone_values, distilled_values)
    alone_mean, alone_std = mean_std(alone_values)
    distilled_mean, distilled_std = mean_std(distilled_values)
    return {
        "seeds": seeds,
        "alone": alone_values,
        "distilled": distilled_values,
        "improved": differences["improved"],
        "worse": differences["worsened"],
        "alone_mean": alone_mean,
        "alone_std": alone_std,
        "distilled_mean": distilled_mean,
        "distilled_std": distilled_std,
        "verdict": verdict(differences, t_test=False),
    }


# What a single seed's comparison says: what the verdict needs (`compare_seeds`).
ONE_SEED = ('one seed cannot show one: list 2 or more `training.seeds`; "helped" needs '
            "{measure} on every seed")


def tuning_advice(losses=None):
    """What to search when distillation made the student worse, for these losses.

    Args:
        losses: The config's `distillation.losses` (names or `{name: ...}`
            mappings); None for the usual soft-label losses.

    Returns:
        The words after "try": the temperature and α when a loss has a
        temperature (or is not a built-in one), else α and the losses' weights
        (FitNets, feature and relation losses have no temperature).
    """
    names = [
        str(item if isinstance(item, str) else item.get("name", "")).strip().lower()
        for item in (losses or [])
    ]
    if not names or any(n not in DETAILS or "temperature" in DETAILS[n][1] for n in names):
        return "`tf-distill tune` to search the temperature and α"
    return (
        "`tf-distill tune` to search α, and other weights in `distillation.loss_weights` "
        f"({', '.join(dict.fromkeys(names))} ha{'s' if len(set(names)) == 1 else 've'} "
        "no temperature)"
    )


def seed_comparison(rows, losses=None):
    """Compares the distilled student with the student alone, seed by seed.

    Args:
        rows: The run's model rows (`model`, `seed`, `test_errors`, ...).
        losses: The config's `distillation.losses`, which say what the
            advice after a worse result asks to search (`tuning_advice`).

    Returns:
        None without both kinds of rows; else `compare_seeds(rows,
        "test_errors")` with the `test_examples`, the `teachers`' error
        counts (`{name: errors}`, trained once) and the `sentence` that says
        the verdict (`"better"`, `"worse"` or `"no reliable difference"`).

    The verdict is "better" only when distillation gave fewer errors on
    every one of at least two seeds, "worse" when it gave more on every one;
    anything else is no reliable difference, as is a single seed.
    """
    comparison = compare_seeds(rows, "test_errors")
    if comparison is None:
        return None
    n, improved, worse = len(comparison["seeds"]), comparison["improved"], comparison["worse"]
    _, alone, _ = rows_by_seed(rows)
    total = alone[comparison["seeds"][0]]["test_examples"]
    # Teachers are trained once, whatever the seeds: one count each.
    teachers = {r["model"]: r["test_errors"] for r in rows if r["seed"] is None}
    if n == 1:  # no spread, and the seed's counts are the means
        counts = (f"{comparison['alone'][0]} → {comparison['distilled'][0]} test errors of "
                  f"{total:,} (student alone → distilled")
    else:
        counts = (
            f"{format_mean_std(comparison['alone'])} → "
            f"{format_mean_std(comparison['distilled'])} "
            f"test errors of {total:,} (student alone → distilled; per seed "
            f"{comparison['alone']} → {comparison['distilled']}"
        )
    if teachers:
        counts += "; " + ", ".join(f"{name} {errors}" for name, errors in teachers.items())
    counts += ")"
    if comparison["verdict"] == "better":
        sentence = f"Distillation helped: fewer errors on {improved} of {n} seeds, {counts}."
    elif comparison["verdict"] == "worse":
        sentence = (
            f"Distillation made the student worse: more errors on {worse} of {n} seeds, "
            f"{counts}. Try {tuning_advice(losses)}."
        )
    else:
        why = (
            ONE_SEED.format(measure="fewer errors")
            if n == 1
            else f"fewer errors on {improved}, more on {worse} of {n} seeds"
        )
        sentence = f"No reliable difference between distilled and alone ({why}): {counts}."
        if comparison["distilled_mean"] > comparison["alone_mean"]:
            sentence += (
                f" On average distillation made the student worse: try {tuning_advice(losses)}."
            )
    comparison.update(test_examples=total, teachers=teachers, sentence=sentence)
    return comparison


def weak_teacher_warning(teacher_accuracy, alone_accuracy, seed_text=""):
    """The warning for a teacher no better than the student alone, or None.

    Args:
        teacher_accuracy: `{teacher name: validation accuracy}`.
        alone_accuracy: The student trained alone's validation accuracy.
    """
    name, best = max(teacher_accuracy.items(), key=lambda item: item[1])
    if best > alone_accuracy:
        return None
    return (
        f"The {name} is no better than the student trained alone on the validation "
        f"data{seed_text} ({best:.4f} vs {alone_accuracy:.4f}): distilling from it "
        "can only pass its mistakes on. Train the teacher longer or use a larger one."
    )


# The series each panel of `curves.png` draws, by preference. A distiller's
# `loss` is its whole objective (α·labels + (1 − α)·distillation), on another
# scale than the student alone's `loss`: its label loss is `student_loss`.
# Validation first; a run that validates no epoch (a language run) has only
# the training split's.
CURVE_PANELS = (
    ("accuracy", ("val_accuracy", "accuracy")),
    ("loss (labels)", ("val_student_loss", "val_loss", "student_loss", "loss")),
)


def curve_panels(histories):
    """What `plot_curves` draws: per panel, its title and each run's series.

    Args:
        histories: `{label: history_dict}` (Keras `History.history`).

    Returns:
        A list of dicts, one per panel that has a series (no empty panel):
        `title` ("Validation accuracy", "Training loss (labels)", ...),
        `ylabel` and `series`, `{label: (history key, values)}`. A run
        without the validation key a panel draws is labeled "(training)"
        where others have it.
    """
    panels = []
    for quantity, keys in CURVE_PANELS:
        series = {}
        for label, history in histories.items():
            key = next((key for key in keys if history.get(key)), None)
            if key is not None:
                series[label] = (key, list(history[key]))
        if not series:
            continue
        validated = [key.startswith("val_") for key, _ in series.values()]
        split = "Validation" if all(validated) else "Training" if not any(validated) else None
        if split is None:  # some runs without validation: say which
            split = "Validation"
            series = {(label if key.startswith("val_") else f"{label} (training)"): (key, values)
                      for label, (key, values) in series.items()}
        panels.append({"title": f"{split} {quantity}", "ylabel": quantity, "series": series})
    return panels


def plot_curves(histories, path, title="Training curves"):
    """Plots each run's accuracy and label loss per epoch (`curve_panels`).

    Args:
        histories: `{label: history_dict}` (Keras `History.history`).
        path: The PNG to write.
        title: The figure's title.

    Returns:
        `curve_panels(histories)`, each panel with the `epoch_ticks` drawn
        (whole epochs). Nothing is written without a series to draw.
    """
    panels = curve_panels(histories)
    if not panels:
        return panels
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        for label, (_, values) in panel["series"].items():
            axis.plot(range(1, len(values) + 1), values, marker="o", label=label)
        axis.set(title=panel["title"], xlabel="epoch", ylabel=panel["ylabel"])
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend()  # every series has a label: no empty legend
        panel["epoch_ticks"] = [float(tick) for tick in axis.get_xticks()]
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
    return panels


def plot_comparison(rows, path, title="Test errors"):
    """Test errors per model kind: mean bars, ± std error bars and each seed's point.

    The axis starts at 0 errors, so bar heights compare honestly.
    """
    plt = pyplot()
    groups = {}
    for row in rows:
        groups.setdefault(row["model"], []).append(row["test_errors"])
    labels = list(groups)
    stats = [mean_std(groups[label]) for label in labels]
    figure, axis = plt.subplots(figsize=(6.5, 3.8))
    colors = ["#888888", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2"]
    bars = axis.bar(
        labels, [m for m, _ in stats], yerr=[s for _, s in stats], capsize=6,
        color=[colors[i % len(colors)] for i in range(len(labels))], alpha=0.8,
    )
    for index, label in enumerate(labels):
        values = groups[label]
        axis.scatter([index] * len(values), values, color="black", s=12, zorder=3)
    for bar, (mean, std) in zip(bars, stats):
        text = f"{mean:.1f}" + (f" ± {std:.1f}" if std else "")
        axis.annotate(text, (bar.get_x() + bar.get_width() / 2, mean + std),
                      ha="center", va="bottom", fontsize=9)
    axis.set_ylim(0, max(m + s for m, s in stats) * 1.2 + 1)
    seeds = max(len(v) for v in groups.values())
    shown = f"mean ± std over {seeds} seeds; dots: each seed" if seeds > 1 else "1 seed"
    axis.set(title=f"{title} ({shown})", ylabel="test errors (count)")
    axis.title.set_fontsize(10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)


def percent(fraction):
    """A fraction as a percentage with 2 decimals (`0.98333` -> `"98.33"`), as the
    export table shows it."""
    return f"{100.0 * fraction:.2f}"


def markdown_table(rows, columns):
    """Renders `rows` (dicts) as a Markdown table of `columns` `[(key, header, fmt)]`.

    `fmt` is a format spec (`".4f"`) or a function of the value (`percent`).
    """
    lines = [
        "| " + " | ".join(header for _, header, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            if value is None:
                cells.append("—")
            else:
                cells.append(fmt(value) if callable(fmt) else format(value, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Accuracy and error in percent, as in the export table (`metrics.json` keeps
# fractions); the raw count of errors beside them.
RESULT_COLUMNS = [
    ("model", "model", "s"),
    ("seed", "seed", "d"),
    ("test_errors", "test errors", ",d"),
    ("test_accuracy", "test accuracy (%)", percent),
    ("test_error", "test error (%)", percent),
    ("test_loss", "test loss", ".4f"),
    ("parameters", "parameters", ",d"),
    ("file_bytes", "file size (bytes)", ",d"),
    ("train_seconds", "training time (s)", ".1f"),
]


def result_columns(rows):
    """`RESULT_COLUMNS`, with who taught each model when a row says (a run with `stages`)."""
    if not any(row.get("taught_by") for row in rows):
        return RESULT_COLUMNS
    return [RESULT_COLUMNS[0], ("taught_by", "taught by", "s"), *RESULT_COLUMNS[1:]]


def verdict_lines(results):
    """The report's lines under its heading: the comparison's sentence, then
    each warning, as Markdown."""
    lines = []
    comparison = results.get("comparison")
    if comparison:
        lines += [f"**{comparison['sentence']}**", ""]
    for warning in results.get("warnings") or []:
        lines += [f"> **Warning:** {warning}", ""]
    return lines


def resumed_lines(resumed):
    """The report's lines on trainings resumed after an interruption, if any.

    Args:
        resumed: `{model: the 1-based epoch its training went on from}`.
    """
    if not resumed:
        return []
    lines = [
        f"- The training of the {name} was interrupted and resumed at epoch {epoch} "
        f"(epochs 1–{epoch - 1} restored from the backup; the data's order and the "
        "history are those of an uninterrupted run)."
        if epoch > 2 else
        f"- The training of the {name} was interrupted and resumed at epoch {epoch} "
        "(epoch 1 restored from the backup; the data's order and the history are those "
        "of an uninterrupted run)."
        for name, epoch in resumed.items()
    ]
    return ["**Resumed run.**", "", *lines, ""]


def write_report(output_dir, results, histories, config_text=None):
    """Writes `report.md`, `curves.png` and `comparison.png` into `output_dir`.

    Args:
        output_dir: The run's folder.
        results: The run's metrics (`metrics.json` content).
        histories: `{label: history_dict}` for the curves.
        config_text: The config as YAML, quoted at the end.

    Returns:
        The names of the files written, in the order written.
    """
    written = []
    if plot_curves(histories, os.path.join(output_dir, "curves.png")):
        written.append("curves.png")
    plot_comparison(results["models"], os.path.join(output_dir, "comparison.png"))
    written.append("comparison.png")
    data = results["data"]
    lines = [
        "# tf_distill run report",
        "",
        f"Data: **{data['name']}** — {data['train']} train, {data['validation']} "
        f"validation, {data['test']} test examples, {data['num_classes']} classes.",
        "",
    ]
    lines += verdict_lines(results)
    lines += resumed_lines(results.get("resumed") or {})
    lines += [
        markdown_table(results["models"], result_columns(results["models"])),
        "",
        "## Test errors",
        "",
        "![comparison](comparison.png)",
        "",
    ]
    if "curves.png" in written:
        lines += ["## Training curves", "", "![training curves](curves.png)", ""]
    export = results.get("export")
    if export:
        lines += ["## LiteRT export", "", export.get("markdown", ""), ""]
    if config_text:
        lines += ["## Config", "", "```yaml", config_text.rstrip(), "```", ""]
    atomic_write(os.path.join(output_dir, "report.md"), "\n".join(lines))
    written.append("report.md")
    return written
