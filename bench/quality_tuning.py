"""Part `tuning` of `bench_quality.py`: does a 10-trial search find
distillation where it helps?

On the small-transfer-set setting of part 2 (a stratified 2 % of MNIST's
training images, the Hinton teacher trained on all of them, the
784-800-800-10 student), for each seed:

- the student alone and distilled with the library's defaults
  (`LogitsDistillation()`'s temperature and `Distiller`'s α, read from
  their signatures, not restated here);
- a `tf_distill.tuning.make_tuner` search (random, 10 trials) of
  `DistillerHyperModel`'s default space (T in [1, 20] log, α in [0, 1]),
  objective `val_accuracy`: the student's accuracy on a validation split
  carved from the training images outside the subset, never the test set;
- the best trial's student (its best-epoch checkpoint,
  `tuning.best_student`) on the test set, and the best hyperparameters
  retrained with the baselines' own protocol (`quality_mnist.distill_student`:
  same initial weights, batches and schedule), also on the test set.

Every run trains on the teacher's cached logits (`build_teacher_cache`), so
a trial costs what training the student alone costs.
"""

import inspect
import math
import shutil
import time

import common
import quality_mnist
import quality_report
import quality_stats as stats

import tf_distill
from tf_distill import tuning
from tf_distill.comparison import format_mean_std
from tf_distill.comparison import paired


def default_kd():
    """`{"temperature", "alpha"}`: what `Distiller(teacher, student, "kd")`
    trains with when nothing is set."""
    return {
        "temperature": tf_distill.LogitsDistillation().temperature,
        "alpha": inspect.signature(tf_distill.Distiller).parameters["student_loss_weight"].default,
    }


def split_subset(data, fraction, validation_size):
    """`(subset, validation)` index arrays: the stratified subset of part 2
    (the same images), and a stratified validation split of the others."""
    size = int(round(fraction * len(data.x_train)))
    chosen, rest = quality_mnist.stratified_indices(data.y_train, size, seed=0)
    picked, _ = quality_mnist.stratified_indices(data.y_train[rest], validation_size, seed=1)
    return chosen, rest[picked]


def search_seed(teacher, train, validation, epochs, seed, settings, data, directory):
    """One random search of the default space; returns the tuner."""
    batch_size = settings["student_batch_size"]
    total_steps = epochs * -(-len(train) // batch_size)
    hypermodel = tuning.DistillerHyperModel(
        teacher,
        lambda: quality_mnist.build_mlp(
            quality_mnist.STUDENT_HIDDEN,
            data.num_classes,
            data.input_shape,
            seed=1000 + seed,
            name="student",
        ),
        learning_rate=settings["learning_rate"],
        # The baselines' schedule: Adam, cosine-decayed to 0 over the run.
        optimizer=lambda learning_rate: common.adam(learning_rate, total_steps),
        seed=seed,
    )
    tuner = tuning.make_tuner(
        hypermodel,
        settings["tuner"],
        objective="val_accuracy",
        max_trials=settings["max_trials"],
        directory=directory,
        project_name=f"seed{seed}",
        overwrite=True,
        seed=seed,
    )
    # Validating on thousands of images after each 5-step pass over the
    # subset would cost more than the training: a trial's "epoch" is
    # `passes` passes (the same steps and schedule in all).
    passes = math.gcd(epochs, settings["passes_per_validation"])
    steps_per_pass = -(-len(train) // batch_size)
    tuner.search(
        train.dataset(batch_size=batch_size, shuffle=True, seed=seed, repeat=True),
        validation_data=validation,
        epochs=epochs // passes,
        steps_per_epoch=passes * steps_per_pass,
        verbose=0,
    )
    return tuner


def run_tuning(teacher, data, settings, seeds, directory):
    """Alone, default KD and a search, per seed, on the small transfer set.

    Args:
        settings: The Hinton part's settings with this part's: `fraction`,
            `validation_size`, `tuner`, `max_trials`, `passes_per_validation`
            (passes over the subset between two validations in a trial),
            and possibly its own `subset_steps`.
        directory: Where the trials are saved (removed at the end).

    Returns:
        A dict of per-seed lists: `alone`, `default_kd`, `tuned` (the best
        trial's checkpoint), `retrained` (test errors), `best` (the best
        hyperparameters and validation accuracy), `trials`, and `seconds`.
    """
    chosen, held_out = split_subset(data, settings["fraction"], settings["validation_size"])
    train = tf_distill.build_teacher_cache(teacher, (data.x_train[chosen], data.y_train[chosen]))
    validation = tf_distill.cache_teacher_outputs(
        teacher,
        (data.x_train[held_out], data.y_train[held_out]),
        batch_size=1000,
        shuffle=False,
    )
    epochs = quality_mnist.subset_epochs(len(chosen), settings)
    default = default_kd()
    part = {
        "seeds": list(seeds),
        "size": len(chosen),
        "validation_size": len(held_out),
        "epochs": epochs,
        "default_kd": default,
        "errors": {"alone": [], "default_kd": [], "tuned": [], "retrained": []},
        "best": [],
        "trials": [],
        "seconds": [],
    }
    errors = part["errors"]

    def timed(label, seed, function, *args):
        start = time.perf_counter()
        value = function(*args)
        common.log(f"tuning seed {seed} {label}: {time.perf_counter() - start:.0f} s")
        return value

    for seed in seeds:
        start = time.perf_counter()
        student = (teacher, train, epochs, seed)
        errors["alone"].append(
            timed("alone", seed, quality_mnist.distill_student, *student, settings, False, data)
        )
        errors["default_kd"].append(
            timed(
                "default KD",
                seed,
                quality_mnist.distill_student,
                *student,
                {**settings, **default},
                True,
                data,
            )
        )
        tuner = timed(
            f"search of {settings['max_trials']} trials",
            seed,
            search_seed,
            teacher,
            train,
            validation,
            epochs,
            seed,
            settings,
            data,
            directory,
        )
        best_trial = tuner.oracle.get_best_trials(1)[0]
        best = {
            k: float(best_trial.hyperparameters.values[k])
            for k in ("temperature", "student_loss_weight")
        }
        errors["tuned"].append(
            quality_mnist.count_errors(tuning.best_student(tuner), data.x_test, data.y_test)
        )
        tuned_settings = {
            **settings,
            "temperature": best["temperature"],
            "alpha": best["student_loss_weight"],
        }
        errors["retrained"].append(
            timed(
                "retrained best",
                seed,
                quality_mnist.distill_student,
                *student,
                tuned_settings,
                True,
                data,
            )
        )
        part["best"].append({**best, "val_accuracy": float(best_trial.score)})
        part["trials"].append(tuning.trial_rows(tuner))
        part["seconds"].append(time.perf_counter() - start)
        common.log(
            f"tuning seed {seed}: alone {errors['alone'][-1]}, default KD "
            f"{errors['default_kd'][-1]}, tuned {errors['tuned'][-1]} (retrained "
            f"{errors['retrained'][-1]}) errors; best T = {best['temperature']:.2f}, "
            f"α = {best['student_loss_weight']:.2f}"
        )
    shutil.rmtree(directory, ignore_errors=True)
    return part


# ----------------------------------------------------------------------
# The section.


def _verdict_text(name, tuned, alone, default_kd):
    per_seed, on_mean = stats.at_least_as_good(tuned, alone, default_kd)
    return (
        f"{name}: at least as good as the better of alone and default KD on "
        f"{sum(per_seed)} of {len(per_seed)} seeds, and "
        f"{'also' if on_mean else '**not**'} on the mean"
    )


def tuning_section(results):
    """The Markdown section of this part."""
    part = results["tuning"]
    settings = results["settings"]["hinton"]
    tuning_settings = results["settings"]["tuning"]
    errors = part["errors"]
    test = part["test_size"]
    default = part["default_kd"]
    seeds = range(len(errors["alone"]))
    names = part["seeds"]
    best_cell = [
        f"T = {b['temperature']:.2f}, α = {b['student_loss_weight']:.2f} "
        f"(val. acc. {100 * b['val_accuracy']:.2f} %)"
        for b in part["best"]
    ]
    header = [
        "seed",
        "alone",
        f"default KD (T = {default['temperature']:g}, α = {default['alpha']:g})",
        "tuned: best trial",
        "tuned: best values retrained",
        "best values found",
    ]
    rows = [
        [
            names[seed],
            errors["alone"][seed],
            errors["default_kd"][seed],
            errors["tuned"][seed],
            errors["retrained"][seed],
            best_cell[seed],
        ]
        for seed in seeds
    ]
    rows.append(
        ["mean ± std"]
        + [
            format_mean_std(errors[key])
            for key in ("alone", "default_kd", "tuned", "retrained")
        ]
        + [""]
    )
    table = common.rows_table(header, rows)
    versus = [
        stats.verdict_sentence(paired(errors["alone"], errors["tuned"]), "tuned", "alone"),
        stats.verdict_sentence(
            paired(errors["default_kd"], errors["tuned"]), "tuned", "default KD"
        ),
        stats.verdict_sentence(
            paired(errors["alone"], errors["default_kd"]), "default KD", "alone"
        ),
    ]
    goals = [
        _verdict_text(
            "Best trial's student", errors["tuned"], errors["alone"], errors["default_kd"]
        ),
        _verdict_text(
            "Best values retrained", errors["retrained"], errors["alone"], errors["default_kd"]
        ),
    ]
    minutes = sum(part["seconds"]) / 60
    passes = tuning_settings["passes_per_validation"]
    every = "after each epoch" if passes == 1 else f"every {passes} epochs"
    caveat = ""
    if part["validation_size"] > part["size"]:
        caveat = (
            " This labeled validation split is larger than the subset itself: a user "
            f"with only {part['size']:,} labels would validate on fewer, and choose less well."
        )
    trials = tuning_settings["max_trials"]
    teacher = results.get("hinton", {}).get("teacher_errors")
    teacher_text = "" if teacher is None else f"; {teacher} test errors"
    steps = tuning_settings.get("subset_steps", settings["subset_steps"])
    steps_text = ""
    if steps != settings["subset_steps"]:
        steps_text = (
            f" Fewer steps than part 2's {settings['subset_steps']}, to fit the time budget:"
            " the alone and default-KD figures here are this part's own, not part 2's."
        )
    return f"""## Quality 5: does a {trials}-trial search find distillation where it helps?

Goal (issue 9, item 5): on the small-transfer-set setting, over {len(names)} seeds, a
{trials}-trial search of `DistillerHyperModel`'s default space finds a
configuration at least as good as the better of the student alone and default KD.

Setting: part 2's stratified {100 * tuning_settings["fraction"]:g} % subset
({part["size"]:,} labeled images, the same images for every seed), the Hinton teacher
trained on all the training images (part 1{teacher_text}), the 784-800-800-10 student,
{part["epochs"]} epochs (about {steps} steps) of Adam
{settings["learning_rate"]:g} cosine-decayed to 0, batch {settings["student_batch_size"]},
on the teacher's cached logits.{steps_text} Default KD is what `Distiller(teacher, student, "kd")`
trains with: `LogitsDistillation()`'s T = {default["temperature"]:g} and `Distiller`'s
α = `student_loss_weight` = {default["alpha"]:g}. The search:
`tuning.make_tuner(DistillerHyperModel(teacher, build_student), "{tuning_settings["tuner"]}",
max_trials={tuning_settings["max_trials"]})`, the default space (T in [1, 20] log scale,
α in [0, 1]) and objective (`val_accuracy`, the best epoch's): the student's accuracy on
{part["validation_size"]:,} training images outside the subset (stratified; never the test
set), measured {every}, with the baselines' training
protocol.{caveat} A seed sets the student's initial weights, the order of the batches and
the tuner's draws. Columns: test errors of {test:,}; "best trial" is the best trial's
student at its best epoch (`tuning.best_student`); "retrained" trains the best values
again with exactly the baselines' protocol (same initial weights and batches, last epoch).

{table}

- {goals[0]}.
- {goals[1]}.
- {versus[0]}.
- {versus[1]}.
- {versus[2]}.

The part took {minutes:.1f} min ({len(part["seconds"])} seeds, each with its two baselines,
the search and the retraining).

{quality_report.footer(results)}
"""
