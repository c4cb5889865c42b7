"""A search's results: the trials table, the search plot, the best student."""

import csv
import io
import math
import os

from tf_distill import saving
from tf_distill.files import atomic_path
from tf_distill.files import atomic_write
from tf_distill.files import atomic_write_json
from tf_distill.plotting import pyplot
from tf_distill.tuning.tuners import objective_direction

_TABLE_KEYS = ("temperature", "student_loss_weight", "learning_rate", "width")


def trial_number(trial_id):
    """The number Keras Tuner shows for a trial (`Trial #1` for id `"0"` or `"00"`)."""
    return int(trial_id) + 1


def searched_hyperparameters(tuner):
    """The names of the hyperparameters `tuner` searches, in declaration order.

    A value fixed by the search space (`hp.Fixed`) is not searched, nor is
    Keras Tuner's own bookkeeping (`tuner/epochs`, ...).
    """
    return [
        hp.name
        for hp in tuner.oracle.get_space().space
        # By class name: Keras Tuner exposes `Fixed` only as `HyperParameters.Fixed`.
        if type(hp).__name__ != "Fixed" and not hp.name.startswith("tuner/")
    ]


def trial_rows(tuner):
    """One dict per trial, in start order: id, number, status, values, score.

    Keys: `trial` (Keras Tuner's trial id, `"0"`, `"1"`, ...), `number`
    (the `Trial #` Keras Tuner shows: 1, 2, ...), `status` (COMPLETED,
    FAILED, RUNNING, ...), every hyperparameter value (searched or fixed),
    `score` (the best objective value, None for a failed trial),
    `best_epoch`, `message` (first line of a failure).
    """
    oracle = tuner.oracle
    trial_ids = list(getattr(oracle, "start_order", [])) or sorted(oracle.trials)
    rows = []
    for trial_id in trial_ids:
        trial = oracle.trials[trial_id]
        row = {"trial": trial_id, "number": trial_number(trial_id), "status": trial.status}
        for key, value in trial.hyperparameters.values.items():
            if not key.startswith("tuner/"):
                row[key] = value
        score = trial.score
        row["score"] = None if score is None or not math.isfinite(score) else float(score)
        row["best_epoch"] = None if trial.best_step is None else int(trial.best_step) + 1
        message = (trial.message or "").strip().splitlines()
        row["message"] = _failure_line(message)
        rows.append(row)
    return rows


def _failure_line(lines):
    for line in reversed(lines):
        if "Error" in line or "NaN" in line or "nan" in line:
            return line.strip()[:200]
    return lines[-1].strip()[:200] if lines else ""


_NOT_HYPERPARAMETERS = ("trial", "number", "status", "score", "best_epoch", "message")


def _hyperparameter_keys(rows):
    keys = {k for r in rows for k in r} - set(_NOT_HYPERPARAMETERS)
    return [k for k in _TABLE_KEYS if k in keys] + sorted(keys - set(_TABLE_KEYS))


def write_trials(rows, output_dir, objective="val_accuracy", hyperparameters=None):
    """Writes `trials.csv` and `trials.md`; returns the Markdown table.

    Trials are numbered as Keras Tuner shows them (`#1`, `#2`, ...).

    Args:
        rows: The rows of `trial_rows`.
        output_dir: The folder to write into.
        objective: The objective's name, the score column's header.
        hyperparameters: The searched hyperparameters (see
            `searched_hyperparameters`), one column each; a value that is
            the same in every trial because the space fixes it gets a line
            under the Markdown table instead. `None`: a column for every
            hyperparameter in `rows`.
    """
    present = _hyperparameter_keys(rows)
    searched = present if hyperparameters is None else [
        k for k in present if k in hyperparameters
    ]
    columns = ["trial", "status", *searched, "score", "best_epoch", "message"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = {k: ("" if row.get(k) is None else row.get(k)) for k in columns}
        values["trial"] = _number(row)
        writer.writerow(values)
    atomic_write(os.path.join(output_dir, "trials.csv"), buffer.getvalue())

    def cell(key, value):
        if key == "trial":
            return f"#{value}"
        if value is None or value == "":
            return "—"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    headers = [objective if c == "score" else c.replace("_", " ") for c in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        shown = {**row, "trial": _number(row)}
        lines.append("| " + " | ".join(cell(c, shown.get(c)) for c in columns) + " |")
    fixed = [k for k in present if k not in searched]
    if fixed and rows:
        values = ", ".join(f"{k.replace('_', ' ')} = {_plain(rows[0].get(k))}" for k in fixed)
        lines += ["", f"Fixed (not searched): {values}."]
    table = "\n".join(lines)
    atomic_write(os.path.join(output_dir, "trials.md"), table + "\n")
    return table


def _number(row):
    return row["number"] if row.get("number") is not None else trial_number(row["trial"])


def _plain(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_search(rows, path, objective="val_accuracy"):
    """Scatter plot of the search: temperature against α, coloured by score.

    Failed trials are grey crosses; the best trial is circled.
    """
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    done = [r for r in rows if r.get("score") is not None and "temperature" in r]
    failed = [r for r in rows if r.get("score") is None and "temperature" in r]
    if done:
        points = axis.scatter(
            [r["temperature"] for r in done],
            [r.get("student_loss_weight", 0.5) for r in done],
            c=[r["score"] for r in done],
            cmap="viridis",
            s=60,
            edgecolors="black",
            linewidths=0.5,
        )
        figure.colorbar(points, ax=axis, label=objective)
        pick = min if objective_direction(objective) == "min" else max
        best = pick(done, key=lambda r: r["score"])
        axis.scatter(
            [best["temperature"]],
            [best.get("student_loss_weight", 0.5)],
            s=250,
            facecolors="none",
            edgecolors="red",
            linewidths=1.5,
            label="best",
        )
    if failed:
        axis.scatter(
            [r["temperature"] for r in failed],
            [r.get("student_loss_weight", 0.5) for r in failed],
            marker="x",
            color="grey",
            s=60,
            label="failed",
        )
    temperatures = [r["temperature"] for r in done + failed]
    if temperatures and min(temperatures) > 0:
        _plain_log_axis(axis.xaxis, min(temperatures), max(temperatures))
    axis.set(
        xlabel="temperature T (log scale)",
        ylabel="student loss weight α",
        title=f"Search: {len(rows)} trials, colour = {objective}",
        ylim=(-0.05, 1.05),
    )
    axis.grid(alpha=0.3)
    if done or failed:
        axis.legend(loc="best")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)


def log_ticks(low, high):
    """A few plain tick values for a log axis spanning `[low, high]` (> 0).

    1, 2, 5 times the powers of ten inside the range; where fewer than two
    fall inside (a range within one decade), four values evenly spaced on
    the log scale, rounded to two significant digits.
    """
    if high <= low:
        return [float(f"{low:.2g}")]
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks = [m * 10.0**d for d in decades for m in (1, 2, 5) if low <= m * 10.0**d <= high]
    if len(ticks) < 2:
        ratio = (high / low) ** (1 / 3)
        ticks = sorted({float(f"{low * ratio**i:.2g}") for i in range(4)})
    return ticks


def _plain_log_axis(axis, low, high):
    # Matplotlib labels a log axis within one decade with every minor tick in
    # scientific notation ("3×10⁰4×10⁰"), which overlap: a few plain ticks instead.
    from matplotlib import ticker

    axis.axes.set_xscale("log")
    axis.set_major_locator(ticker.FixedLocator(log_ticks(low, high)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())
    margin = (high / low) ** 0.05 if high > low else 1.2
    axis.axes.set_xlim(low / margin, high * margin)


def best_student(tuner):
    """The best trial's student, with the weights of its best epoch."""
    return tuner.get_best_models(num_models=1)[0].student


def write_results(tuner, output_dir, objective="val_accuracy"):
    """Writes the search's results into `output_dir`.

    Files: `best_hyperparameters.json`, `trials.csv`, `trials.md`,
    `search.png` and `student.keras` (the best student alone, without the
    teacher or optimizer).

    Returns:
        A dict: `best_hyperparameters` (searched and fixed values),
        `searched` (their names), `best_score`, `best_trial` (Keras Tuner's
        id), `best_trial_number` (its `Trial #`), `trials` (the rows),
        `student_path` and `student`.

    Raises:
        RuntimeError: if no trial completed.
    """
    os.makedirs(output_dir, exist_ok=True)
    rows = trial_rows(tuner)
    searched = searched_hyperparameters(tuner)
    write_trials(rows, output_dir, objective, hyperparameters=searched)
    plot_search(rows, os.path.join(output_dir, "search.png"), objective)
    completed = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    if not completed:
        raise RuntimeError(
            f"No trial of the search in {output_dir} completed; see trials.md for why each failed."
        )
    best = tuner.get_best_hyperparameters(1)[0].values
    best = {k: v for k, v in best.items() if not k.startswith("tuner/")}
    best_trial = tuner.oracle.get_best_trials(1)[0]
    student = best_student(tuner)
    student_path = os.path.join(output_dir, "student.keras")
    saving.save_model(student, student_path)
    atomic_write_json(
        os.path.join(output_dir, "best_hyperparameters.json"),
        {
            "hyperparameters": best,
            "objective": objective,
            "score": float(best_trial.score),
            "trial": best_trial.trial_id,
            "trial_number": trial_number(best_trial.trial_id),
            "searched": searched,
        },
    )
    return {
        "best_hyperparameters": best,
        "searched": searched,
        "best_score": float(best_trial.score),
        "best_trial": best_trial.trial_id,
        "best_trial_number": trial_number(best_trial.trial_id),
        "trials": rows,
        "student_path": student_path,
        "student": student,
    }
