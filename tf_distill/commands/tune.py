"""`tf-distill tune`: a search of T and α (and more) from a config.

It runs standalone, or as the chief or a worker of Keras Tuner's
distributed mode, configured by the `KERASTUNER_TUNER_ID`,
`KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` environment variables:
the chief obtains the teacher (as `tf-distill run` does: loaded, reused or
trained, checked against the data), serves the oracle and writes the
results; each worker loads the teacher the chief saved, caches its outputs,
and runs trials.
"""

import os
import shutil
import time

from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.cache import build_teacher_cache
from tf_distill.commands import common
from tf_distill.commands.caching import should_cache
from tf_distill.commands.config import ConfigError
from tf_distill.commands.config import teacher_outputs
from tf_distill.commands.config import validate_tuning
from tf_distill.commands.example_indices import any_asks
from tf_distill.commands.scheme_config import check_scheme_free
from tf_distill.files import atomic_write_json
from tf_distill.losses import get as get_loss
from tf_distill.tuning import DistillerHyperModel
from tf_distill.tuning import make_tuner
from tf_distill.tuning import resolve_role
from tf_distill.tuning import search
from tf_distill.tuning import trial_number
from tf_distill.tuning import write_results
from tf_distill.tuning.distributed import record_trials
from tf_distill.tuning.distributed import serve_oracle
from tf_distill.tuning.distributed import wait_for_oracle


def search_teacher(config, data, output_dir, role, overwrite, say, verbose):
    """The search's teacher, obtained exactly as `tf-distill run` obtains it.

    A worker loads the teacher the chief saved (or `teacher.path`). A resumed
    search must keep the teacher its first trials distilled from, so a
    search folder whose teacher was trained for another config is refused
    unless `tuning.overwrite` is set.
    """
    if isinstance(config["teacher"], list):
        raise ConfigError(
            "`tf-distill tune` searches with one teacher; give `teacher` as one mapping. "
            f"Received: {len(config['teacher'])} teachers."
        )
    if config.get("stages"):
        raise ConfigError(
            "`tf-distill tune` searches a teacher → student distillation; `stages` "
            f"runs with `tf-distill run`. Received: {len(config['stages'])} stage(s)."
        )
    check_scheme_free(config, "tune")
    if isinstance(config["teacher"], dict) and config["teacher"].get("preprocessing"):
        raise ConfigError(
            "`tf-distill tune` does not search with `teacher.preprocessing` yet; run it "
            "with `tf-distill run`. Received: teacher.preprocessing="
            f"{config['teacher']['preprocessing']!r}"
        )
    if any_asks(config["distillation"]["losses"]):
        raise ConfigError(
            "`tf-distill tune` does not search losses with a memory bank indexed by "
            "example (CRD) yet; run them with `tf-distill run`. Received: "
            f"distillation.losses={config['distillation']['losses']!r}"
        )
    if role == "worker" and not config["teacher"]["path"]:
        # The chief saved its teacher before starting the oracle.
        path = os.path.join(output_dir, common.teacher_file("teacher"))
        teacher = saving.load_model(path, unsafe=config.get("unsafe", False))
        common.check_model_fits_data(teacher, "teacher", data)
        return teacher
    (plan,) = common.prepare_teachers(
        config, data, output_dir, log=say, unsafe=config.get("unsafe", False)
    )
    if plan.needs_training:
        if not overwrite and os.path.isdir(os.path.join(output_dir, "search")):
            raise ConfigError(
                f"The search in {output_dir!r} distilled from a teacher of another "
                "config (data, teacher or seed changed). Resuming it would mix "
                "teachers: set `tuning.overwrite: true`, or use another output folder."
            )
        plan.train(config, data, output_dir, log=say, verbose=verbose)
        say(f"Trained the teacher in {plan.seconds:.1f} s")
    return plan.model


def _space(tuning, key, enabled=True):
    if not enabled:
        return None
    low, high = tuning[f"{key}_min"], tuning[f"{key}_max"]
    return (low, high) if low < high else low



def run_from_config(config, output_dir, verbose=1, role=None, log=print):
    """Runs `tf-distill tune`: a search of T and α (and more) from a config.

    The config is a `tf-distill run` config (validated by
    `tf_distill.config`) with a `tuning:` section (`TUNING_SCHEMA`; checked
    here too). The teacher is trained (or loaded from `teacher.path`) once,
    its outputs are cached once, and every trial distills a new student
    for `training.epochs` epochs.

    As the chief of a distributed search, the teacher is saved to
    `output_dir/teacher.keras` before the oracle starts, and the results are
    written when every worker has finished; a worker waits for the oracle
    (`tuning.wait_seconds`), then loads that teacher (or `teacher.path`).

    Args:
        config: A validated config dict.
        output_dir: The search's folder (shared by the chief and workers).
        verbose: 0 (quiet), 1 (progress) or 2 (one line per epoch).
        role: None (standalone, or as the environment says), `"chief"` or
            `"worker"`.
        log: A `print`-like callable for messages.

    Returns:
        A dict: `role`, and for a standalone run or the chief
        `best_hyperparameters`, `best_score`, `trials`, `student_path`,
        `models` (test metrics of the teacher, the tuned student and the
        student trained alone when `training.baseline`) and `summary`;
        written to `output_dir/tuning.json` as well.

    Raises:
        ConfigError: for an invalid `tuning:` section.
        ValueError: for an invalid role set-up.
        TimeoutError: if a worker finds no oracle within `wait_seconds`.
    """
    tuning = validate_tuning(config.get("tuning"))
    role = resolve_role(role)
    say = log if verbose else (lambda *args, **kwargs: None)
    os.makedirs(output_dir, exist_ok=True)
    training = config["training"]
    batch_size = config["data"]["batch_size"]
    keras.utils.set_random_seed(training["seed"])

    if role == "worker":
        say(f"Worker {os.environ['KERASTUNER_TUNER_ID']}: waiting for the oracle")
        wait_for_oracle(tuning["wait_seconds"])
    data = common.load_data(config["data"])
    teacher = search_teacher(config, data, output_dir, role, tuning["overwrite"], say, verbose)

    seed = tuning["seed"]
    if seed is None and tuning["executions_per_trial"] == 1:
        seed = training["seed"]
    losses = config["distillation"]["losses"]
    temperature_losses = any("temperature" in get_loss(loss).get_config() for loss in losses)
    hypermodel = DistillerHyperModel(
        teacher,
        lambda width=None: common.build_student(config, data, width=width),
        losses,
        temperature=_space(tuning, "temperature", temperature_losses),
        student_loss_weight=_space(tuning, "student_loss_weight"),
        learning_rate=(
            _space(tuning, "learning_rate")
            if tuning["tune_learning_rate"]
            else training["learning_rate"]
        ),
        width=_space(tuning, "width") if tuning["tune_width"] else None,
        distillation_loss_weights=config["distillation"]["loss_weights"],
        teacher_outputs=teacher_outputs(config),
        optimizer=training["optimizer"],
        seed=seed,
    )
    if tuning["overwrite"] and role != "worker":
        # Afresh: the old search's trial logs would stand beside the new ones.
        shutil.rmtree(os.path.join(output_dir, common.TENSORBOARD_FOLDER), ignore_errors=True)
    tuner = make_tuner(
        hypermodel,
        tuning["tuner"],
        objective=tuning["objective"],
        max_trials=tuning["max_trials"],
        executions_per_trial=tuning["executions_per_trial"],
        max_epochs=training["epochs"],
        hyperband_factor=tuning["hyperband_factor"],
        directory=output_dir,
        project_name="search",
        overwrite=tuning["overwrite"] and role != "worker",
        seed=training["seed"],
        max_consecutive_failed_trials=tuning["max_consecutive_failed_trials"],
    )

    ran = []  # The chief runs no trial.
    if role == "chief":
        tuner.oracle.verbose = verbose
        say(
            f"Chief: serving the oracle at {os.environ['KERASTUNER_ORACLE_IP']}:"
            f"{os.environ['KERASTUNER_ORACLE_PORT']}"
        )
        serve_oracle(tuner)
    else:
        mode, reason = should_cache(
            {**config, "training": {**training, "cache": tuning["cache"]}}, data
        )
        say(reason)
        pipelines = []
        for split in ("train", "validation"):
            shuffle = split == "train"
            if mode == "off":
                pipelines.append(
                    data.as_tf_dataset(split, batch_size, shuffle=shuffle, seed=training["seed"])
                )
                continue
            teacher_cache = build_teacher_cache(
                teacher,
                data,
                split=split,
                distillation_losses=losses,
                teacher_outputs=teacher_outputs(config),
                directory=os.path.join(output_dir, "teacher_cache", split)
                if mode == "disk"
                else None,
                log=say,
                verbose=verbose,
            )
            pipelines.append(
                teacher_cache.dataset(batch_size, shuffle=shuffle, seed=training["seed"])
            )
        ran = record_trials(tuner)
        start = time.perf_counter()
        # Keras Tuner gives each trial its own folder under the TensorBoard
        # callback's, with the trial's hyperparameters for the HParams dashboard.
        search(tuner, pipelines[0], pipelines[1], training["epochs"], verbose=verbose,
               callbacks=[common.tensorboard_callback(
                   os.path.join(output_dir, common.TENSORBOARD_FOLDER))])
        numbers = ", ".join(f"#{trial_number(trial_id)}" for trial_id in ran) or "none"
        say(f"Search finished in {time.perf_counter() - start:.1f} s; "
            f"this process ran trials {numbers}")
        if role == "worker":
            return {"role": role, "tuner_id": os.environ["KERASTUNER_TUNER_ID"], "trials_run": ran}

    results = write_results(tuner, output_dir, tuning["objective"])
    results["trials_run"] = ran
    student = results.pop("student")
    models = [
        {
            "model": "teacher",
            "parameters": int(teacher.count_params()),
            **common.test_metrics(teacher, data, batch_size),
        },
        {
            "model": "tuned distilled student",
            "parameters": int(student.count_params()),
            **common.test_metrics(student, data, batch_size),
        },
    ]
    if training["baseline"]:
        alone = common.build_student(
            config, data,
            width=results["best_hyperparameters"].get("width") if tuning["tune_width"] else None,
        )
        rate = results["best_hyperparameters"].get("learning_rate", training["learning_rate"])
        say(f"Training the student alone ({training['epochs']} epochs) for comparison")
        common.train_plain(alone, config, data, epochs=training["epochs"], learning_rate=rate,
                           seed=training["seed"], verbose=verbose)
        models.append(
            {
                "model": "student alone",
                "parameters": int(alone.count_params()),
                **common.test_metrics(alone, data, batch_size),
            }
        )
    searched = {k: v for k, v in results["best_hyperparameters"].items()
                if k in results["searched"]}
    summary = search_summary(models, searched, results["best_trial_number"])
    results.update({"role": role, "models": models, "summary": summary, "tuning": tuning})
    atomic_write_json(os.path.join(output_dir, "tuning.json"), results)
    # The summary, with the best values, is printed once: by the caller (`tf-distill tune`).
    return results


def search_summary(models, best, trial_number=None):
    """One paragraph: the best searched values, and the tuned student's test error.

    Args:
        models: The test metrics rows (`tuned distilled student`, and
            `student alone` when trained).
        best: The best values of the searched hyperparameters.
        trial_number: The best trial's `Trial #`, if known.
    """
    values = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(best.items())
    ) or "none searched"
    by_model = {m["model"]: m for m in models}
    tuned = by_model["tuned distilled student"]
    trial = f" (trial #{trial_number})" if trial_number is not None else ""
    text = (
        f"Best hyperparameters{trial}: {values}. "
        f"The tuned distilled student's test error is {error_text(tuned)}"
    )
    alone = by_model.get("student alone")
    if alone:
        # Both errors in percent, so the difference is in percentage points.
        change = (tuned["test_error"] - alone["test_error"]) * 100
        if round(change, 2) == 0:
            text += ", the same as the student trained alone's"
        else:
            text += (f", {abs(change):.2f} percentage points "
                     f"{'higher' if change > 0 else 'lower'} than the student trained "
                     f"alone's {error_text(alone)}")
    return text + "."


def error_text(row):
    """`"11.48 % (31 of 270)"`: a test error in percent, with its count where known."""
    text = f"{100 * row['test_error']:.2f} %"
    if row.get("test_errors") is not None and row.get("test_examples"):
        text += f" ({row['test_errors']:,} of {row['test_examples']:,})"
    return text
