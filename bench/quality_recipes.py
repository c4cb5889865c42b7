"""Writes `tf_distill/recipes/NAME.yaml` (examples/recipes links there) from the method table's results.

Each recipe is a `tf-distill run` config of the setting the method table
measured (bench/quality_methods.py: MNIST subset, CNN "large" teacher, CNN
"small" student), with the weights the table chose on validation data and
the measured result in a comment, so that `tf-distill losses NAME` can show
what worked and how well.

Usage (after `python bench/bench_quality.py --write --results runs/quality.json`):

    python bench/quality_recipes.py runs/quality.json
"""

import argparse
import copy
import json
import os
import textwrap

import yaml

from tf_distill import schedules
from tf_distill.comparison import mean_std

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES_DIR = os.path.join(REPO_ROOT, "tf_distill", "recipes")

# The recipes, by name (a registered loss's name, or the method's), and the
# table's row each is made from.
RECIPE_ROWS = {
    "kd": "kd",
    "kd_standardized": "kd_standardized",
    "ctkd": "ctkd",
    "dkd": "dkd",
    "dist": "dist",
    "fitnets": "fitnets",
    "attention_transfer": "attention_transfer",
    "rkd_distance": "rkd",
    "rkd_angle": "rkd",
    "similarity_preserving": "similarity_preserving",
    "pkt": "pkt",
    "crd": "crd",
    "mutual": "mutual",
    "self_ema": "self_ema",
    "teacher_assistant": "teacher_assistant",
    "born_again": "born_again",
}


def _errors(summary):
    return f"{summary['mean']:.1f} ± {summary['std']:.1f} ({' / '.join(map(str, summary['test_errors']))})"


def _losses(losses, train_size):
    """The row's losses as a config gives them; CRD's negatives as the table capped them
    (the run fills in `num_examples` from the training split)."""
    import quality_methods

    completed = [quality_methods.loss_config(config, train_size) for config in losses]
    return [{k: v for k, v in config.items() if k != "num_examples"} for config in completed]


def _rounded(schedule):
    return {key: float(f"{value:.10g}") if isinstance(value, float) else value
            for key, value in schedule.items()}


def recipe_config(name, row, settings):
    """The `tf-distill run` config of one row, in the table's setting."""
    # Rounded: the chosen weight is the paper's times 0.1 or 10 (no 0.08000000000000002).
    weights = [float(f"{float(w):.10g}") for w in row["best_weights"]]
    warmup = min(row.get("warmup_epochs") or 0, settings["epochs"])
    if warmup > 1:
        # DKD's warm-up, as the table ran it: min(epoch / warmup, 1), epochs from 1.
        weights = [_rounded(schedules.serialize(schedules.linear_warmup(w, warmup)))
                   for w in weights]
    distillation = {
        "student_loss_weight": float(row["student_loss_weight"]),
        "losses": _losses(row["losses"], settings["train_size"]),
        "loss_weights": weights,
    }
    scheme, options = row.get("scheme", "teacher"), row.get("options", {})
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
        "distillation": distillation,
        "training": {
            "epochs": settings["epochs"],
            "learning_rate": settings["learning_rate"],
            # The table's Adam decays its learning rate to 0 on a cosine.
            "schedule": "cosine",
            "seeds": [0, 1, 2],
        },
        "output": f"runs/recipe_{name}",
    }
    if scheme == "teacher_assistant":
        config["stages"] = [{
            "name": "assistant",
            "student": {"architecture": "cnn", "size": options["assistant_size"]},
            "distillation": copy.deepcopy(distillation),  # no YAML anchors
            "training": {"epochs": settings["epochs"],
                         "learning_rate": settings["learning_rate"]},
        }]
        config = {key: config[key] for key in
                  ("data", "teacher", "stages", "student", "distillation", "training", "output")}
    elif scheme != "teacher":
        del config["teacher"]  # the scheme's teachers are the student's own
        keys = {"mutual": ("peers",), "self": ("decay", "adaptive_decay"),
                "born_again": ("generations",)}[scheme]
        heading = {"scheme": scheme, **{key: options[key] for key in keys}}
        if scheme == "mutual":  # every peer's label loss has weight 1
            del distillation["student_loss_weight"]
        config["distillation"] = {**heading, **distillation}
    return config


def recipe_text(name, row, alone, settings, command):
    """The YAML text of one recipe: a comment with the evidence, then the config."""
    best = row["best"]
    paired = best["paired"]
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
        warmup = row["warmup_epochs"]
        lines.append(
            f"# DKD's warm-up as the table ran it: the weight times min(epoch / {warmup}, 1), "
            f"epochs from 1,\n# the `linear` schedule below (tf_distill.schedules.linear_warmup)."
        )
    if name != RECIPE_ROWS[name]:
        lines.append(f"# Measured together with the other losses below ({RECIPE_ROWS[name]}).")
    for why in row.get("changed_since_measured", ()):
        lines.extend(
            "# " + line
            for line in textwrap.wrap(f"Changed since measured: {why}; this recipe runs the "
                                      "method as it runs now.", 98)
        )
    config = recipe_config(name, row, settings)
    return "\n".join(lines) + "\n" + yaml.safe_dump(config, sort_keys=False)


def unmeasured_text(name, settings):
    """A recipe of a row the table has not measured yet: the paper's weights,
    and "not yet measured" where the evidence goes."""
    import quality_methods

    method = quality_methods.methods_by_key()[RECIPE_ROWS[name]]
    row = {"label": method.label, "losses": method.losses, "student_loss_weight": method.alpha,
           "best_weights": method.weights, "scheme": method.scheme,
           "warmup_epochs": method.warmup_epochs,
           "options": quality_methods.scheme_options(method)}
    setting = textwrap.wrap(method.setting.format(warmup=method.warmup_epochs), 76)
    lines = [
        f"# Recipe: {method.label} — `tf-distill run examples/recipes/{name}.yaml`",
        "#",
        f"# The method table's setting (bench/quality_methods.py): MNIST, "
        f"{settings['train_size']:,} training",
        f"# images, CNN \"small\" student, {settings['epochs']} epochs, 3 paired seeds; "
        "the paper's weights:",
        *(f"# {line}" for line in setting),
        "#",
        "# Measured result (test errors of 10,000):",
        "#   student alone  not yet measured",
        "#   this recipe    not yet measured",
        "# Run it, or add the row to the method table (bench/bench_quality.py --write).",
    ]
    config = recipe_config(name, row, settings)
    return "\n".join(lines) + "\n" + yaml.safe_dump(config, sort_keys=False)


def write_recipes(results, folder=RECIPES_DIR):
    """Writes one recipe per registered loss the table measured; returns the paths."""
    settings = results["settings"]["methods"]
    errors = results["methods"]["alone"]["test"]
    mean, std = mean_std(errors)
    alone = {
        "test_examples": settings["test_size"] or 10_000,  # None: MNIST's whole test set
        "test_errors": errors,
        "mean": mean,
        "std": std,
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


def write_unmeasured(names, folder=RECIPES_DIR, settings=None):
    """Writes the recipes `names` with "not yet measured"; returns the paths."""
    if settings is None:
        from bench_quality import FULL

        settings = FULL["methods"]
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name in names:
        path = os.path.join(folder, f"{name}.yaml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(unmeasured_text(name, settings))
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?",
                        help="the JSON written by bench_quality.py --results")
    parser.add_argument("--folder", default=RECIPES_DIR)
    parser.add_argument("--unmeasured", nargs="+", metavar="NAME", choices=list(RECIPE_ROWS),
                        help="write these recipes with the paper's weights, not yet measured")
    args = parser.parse_args(argv)
    if args.unmeasured:
        paths = write_unmeasured(args.unmeasured, args.folder)
    else:
        if args.results is None:
            parser.error("give the results JSON, or --unmeasured NAME ...")
        with open(args.results, encoding="utf-8") as handle:
            paths = write_recipes(json.load(handle), args.folder)
    for path in paths:
        print(f"Wrote {os.path.relpath(path, REPO_ROOT)}")


if __name__ == "__main__":
    main()
