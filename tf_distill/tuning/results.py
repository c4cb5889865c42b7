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


def trial_rows(tuner):
    """One dict per trial, in start order: id, status, values, score.

    Keys: `trial`, `status` (COMPLETED, FAILED, RUNNING, ...), the
    hyperparameter values, `score` (the best objective value, None for a
    failed trial), `best_epoch`, `message` (first line of a failure).
    """
    oracle = tuner.oracle
    trial_ids = list(getattr(oracle, "start_order", [])) or sorted(oracle.trials)
    rows = []
    for trial_id in trial_ids:
        trial = oracle.trials[trial_id]
        row = {"trial": trial_id, "status": trial.status}
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


def _table_columns(rows):
    keys = ["trial", "status"] + [k for k in _TABLE_KEYS if any(k in r for r in rows)]
    extra = sorted({k for r in rows for k in r} - set(keys) - {"score", "best_epoch", "message"})
    return keys + extra + ["score", "best_epoch", "message"]


def write_trials(rows, output_dir, objective="val_accuracy"):
    """Writes `trials.csv` and `trials.md`; returns the Markdown table."""
    columns = _table_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write(os.path.join(output_dir, "trials.csv"), buffer.getvalue())

    def cell(key, value):
        if value is None or value == "":
            return "—"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    headers = [objective if c == "score" else c.replace("_", " ") for c in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(c, row.get(c)) for c in columns) + " |")
    table = "\n".join(lines)
    atomic_write(os.path.join(output_dir, "trials.md"), table + "\n")
    return table


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
        axis.set_xscale("log")
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


def best_student(tuner):
    """The best trial's student, with the weights of its best epoch."""
    return tuner.get_best_models(num_models=1)[0].student


def write_results(tuner, output_dir, objective="val_accuracy"):
    """Writes the search's results into `output_dir`.

    Files: `best_hyperparameters.json`, `trials.csv`, `trials.md`,
    `search.png` and `student.keras` (the best student alone, without the
    teacher or optimizer).

    Returns:
        `{"best_hyperparameters": {...}, "best_score": float, "trials":
        rows, "student_path": path, "student": model}`.

    Raises:
        RuntimeError: if no trial completed.
    """
    os.makedirs(output_dir, exist_ok=True)
    rows = trial_rows(tuner)
    write_trials(rows, output_dir, objective)
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
        },
    )
    return {
        "best_hyperparameters": best,
        "best_score": float(best_trial.score),
        "best_trial": best_trial.trial_id,
        "trials": rows,
        "student_path": student_path,
        "student": student,
    }
