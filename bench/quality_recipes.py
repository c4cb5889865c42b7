"""Writes `examples/recipes/NAME.yaml` from the method table's results.

Each recipe is a `tf-distill run` config of the setting the method table
measured (bench/quality_methods.py: MNIST subset, CNN "large" teacher, CNN
"small" student), with the weights the table chose on validation data and
the measured result in a comment, so that `tf-distill losses NAME` can show
what worked and how well.

Usage (after `python bench/bench_quality.py --write --results runs/quality.json`):

    python bench/quality_recipes.py runs/quality.json
"""

import argparse
import json
import os
import statistics

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES_DIR = os.path.join(REPO_ROOT, "examples", "recipes")

# The table's rows, by the registered loss names whose recipe they are.
RECIPE_ROWS = {
    "kd": "kd",
    "kd_standardized": "kd_standardized",
    "dkd": "dkd",
    "dist": "dist",
    "fitnets": "fitnets",
    "attention_transfer": "attention_transfer",
    "rkd_distance": "rkd",
    "rkd_angle": "rkd",
    "similarity_preserving": "similarity_preserving",
    "pkt": "pkt",
}


def _errors(summary):
    return f"{summary['mean']:.1f} ± {summary['std']:.1f} ({' / '.join(map(str, summary['test_errors']))})"


def recipe_text(name, row, alone, settings, command):
    """The YAML text of one recipe: a comment with the evidence, then the config."""
    best = row["best"]
    paired = best["paired"]
    weights = [float(w) for w in row["best_weights"]]
    lines = [
        f"# Recipe: {row['label']} — `tf-distill run examples/recipes/{name}.yaml`",
        "#",
        f"# Measured by the method table (docs/BENCHMARKS.md, Quality 4; `{command}`):",
        f"# MNIST, {settings['train_size']:,} training images, CNN \"large\" teacher → CNN",
        f"# \"small\" student, {settings['epochs']} epochs, {paired['n']} paired seeds, test errors of",
        f"# {alone['test_examples']:,}:",
        f"#   student alone  {_errors(alone)}",
        f"#   this recipe    {_errors(best)}",
        f"#   paired (alone − this): {paired['mean']:+.1f} ± {paired['std']:.1f}; fewer errors on "
        f"{paired['improved']} of {paired['n']} seeds: {best['verdict']}.",
        f"# Weight ×{row['chosen_factor']:g} of the paper's, chosen on validation errors.",
    ]
    if best["verdict"] == "worse":
        lines.append(
            "# In this regime it made the student worse at every weight tried: prefer "
            "dist.yaml, the one method that helped beyond the noise here."
        )
    if row.get("warmup_epochs"):
        lines.append(
            f"# The table ramped the distillation weight up over {row['warmup_epochs']} epochs "
            "(DKD's warm-up); configs have no warm-up yet, so this recipe runs without it."
        )
    if name != RECIPE_ROWS[name]:
        lines.append(f"# Measured together with the other losses below ({RECIPE_ROWS[name]}).")
    config = {
        "data": {
            "source": "../shared/data/mnist",
            "train_size": settings["train_size"],
            "validation_size": settings["validation_size"],
            "batch_size": settings["batch_size"],
        },
        "teacher": {
            "architecture": "cnn",
            "size": "large",
            "epochs": settings["teacher_epochs"],
            "learning_rate": settings["teacher_learning_rate"],
        },
        "student": {"architecture": "cnn", "size": "small"},
        "distillation": {
            "student_loss_weight": float(row["student_loss_weight"]),
            "losses": row["losses"],
            "loss_weights": weights,
        },
        "training": {
            "epochs": settings["epochs"],
            "learning_rate": settings["learning_rate"],
            # The table's Adam decays its learning rate to 0 on a cosine.
            "schedule": "cosine",
            "seeds": [0, 1, 2],
        },
        "output": f"runs/recipe_{name}",
    }
    return "\n".join(lines) + "\n" + yaml.safe_dump(config, sort_keys=False)


def write_recipes(results, folder=RECIPES_DIR):
    """Writes one recipe per registered loss the table measured; returns the paths."""
    settings = results["settings"]["methods"]
    errors = results["methods"]["alone"]["test"]
    alone = {
        "test_examples": settings["test_size"] or 10_000,  # None: MNIST's whole test set
        "test_errors": errors,
        "mean": statistics.mean(errors),
        "std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
    }
    command = results.get("command", "python bench/bench_quality.py --write")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, key in RECIPE_ROWS.items():
        row = results["recipes"].get(key)
        if row is None:
            continue
        path = os.path.join(folder, f"{name}.yaml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(recipe_text(name, row, alone, settings, command))
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="the JSON written by bench_quality.py --results")
    parser.add_argument("--folder", default=RECIPES_DIR)
    args = parser.parse_args(argv)
    with open(args.results, encoding="utf-8") as handle:
        results = json.load(handle)
    for path in write_recipes(results, args.folder):
        print(f"Wrote {os.path.relpath(path, REPO_ROOT)}")


if __name__ == "__main__":
    main()
