"""The run report: a Markdown summary with training-curve plots."""

import os

from tf_distill.files import atomic_path
from tf_distill.files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(histories, path, title="Training curves"):
    """Plots validation accuracy and loss per epoch for each run.

    Args:
        histories: `{label: history_dict}` (Keras `History.history`).
        path: The PNG to write.
        title: The figure's title.
    """
    plt = _pyplot()
    figure, (accuracy_axis, loss_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for label, history in histories.items():
        for axis, key in ((accuracy_axis, "accuracy"), (loss_axis, "loss")):
            values = history.get(f"val_{key}") or history.get(key)
            if values:
                axis.plot(range(1, len(values) + 1), values, marker="o", label=label)
    accuracy_axis.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    loss_axis.set(title="Validation loss (labels)", xlabel="epoch", ylabel="loss")
    for axis in (accuracy_axis, loss_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)


def plot_comparison(rows, path, key="test_accuracy", title="Test accuracy"):
    """A bar chart of `key` for each row (`[{"model": ..., key: ...}]`)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    labels = [row["model"] for row in rows]
    values = [row[key] for row in rows]
    bars = axis.bar(labels, values, color=["#888888", "#4c72b0", "#dd8452", "#55a868"][: len(rows)])
    for bar, value in zip(bars, values):
        axis.annotate(f"{value:.4f}", (bar.get_x() + bar.get_width() / 2, value),
                      ha="center", va="bottom")
    low = min(values)
    axis.set_ylim(max(0.0, low - (1 - low) * 1.5 - 0.01), 1.0)
    axis.set(title=title, ylabel=key)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)


def markdown_table(rows, columns):
    """Renders `rows` (dicts) as a Markdown table of `columns` `[(key, header, fmt)]`."""
    lines = [
        "| " + " | ".join(header for _, header, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("—" if value is None else format(value, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


RESULT_COLUMNS = [
    ("model", "model", "s"),
    ("test_accuracy", "test accuracy", ".4f"),
    ("test_error", "test error", ".4f"),
    ("test_loss", "test loss", ".4f"),
    ("parameters", "parameters", ",d"),
    ("file_bytes", "file size (bytes)", ",d"),
    ("train_seconds", "training time (s)", ".1f"),
]


def write_report(output_dir, results, histories, config_text=None):
    """Writes `report.md`, `curves.png` and `comparison.png` into `output_dir`.

    Args:
        output_dir: The run's folder.
        results: The run's metrics (`metrics.json` content).
        histories: `{label: history_dict}` for the curves.
        config_text: The config as YAML, quoted at the end.

    Returns:
        The path of `report.md`.
    """
    plot_curves(histories, os.path.join(output_dir, "curves.png"))
    plot_comparison(results["models"], os.path.join(output_dir, "comparison.png"))
    lines = [
        "# tf_distill run report",
        "",
        f"Data: **{results['data']['name']}** — {results['data']['train']} train, "
        f"{results['data']['validation']} validation, {results['data']['test']} test "
        f"examples, {results['data']['num_classes']} classes.",
        "",
        markdown_table(results["models"], RESULT_COLUMNS),
        "",
    ]
    summary = results.get("summary")
    if summary:
        lines += [summary, ""]
    lines += [
        "## Training curves",
        "",
        "![training curves](curves.png)",
        "",
        "## Test accuracy",
        "",
        "![comparison](comparison.png)",
        "",
    ]
    export = results.get("export")
    if export:
        lines += ["## LiteRT export", "", export.get("markdown", ""), ""]
    if config_text:
        lines += ["## Config", "", "```yaml", config_text.rstrip(), "```", ""]
    path = os.path.join(output_dir, "report.md")
    atomic_write(path, "\n".join(lines))
    return path
