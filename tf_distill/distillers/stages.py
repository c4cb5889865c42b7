"""Multi-stage distillation: teacher assistants and born-again networks.

A run of stages distills a chain of students, the trained student of one
stage becoming the frozen teacher of the next:

- **Teacher assistants** (Mirzadeh et al., "Improved Knowledge Distillation
  via Teacher Assistant", AAAI 2020): teacher → assistant → student, an
  intermediate-size model bridging the gap between a large teacher and a
  small student (torchdistill's `stage1`/`stage2`).
- **Born-again networks** (Furlanello et al., "Born-Again Neural Networks",
  ICML 2018): generations of one architecture, each distilled from the
  previous one; the ensemble of the generations (BAN ensemble) is often
  better than any of them.

Each stage is a `Stage`: its student (a model, or a function that builds
one), its distillation losses and their weights, `student_loss_weight`, its
epochs, its optimizer and compile arguments. `distill_stages` runs the
stages with `tf_distill.Distiller` (each stage on the same data, or on its
own through `data`; resuming after the stages already `trained`);
`born_again` builds the stages of a chain of generations.
"""

from typing import NamedTuple

from tf_distill import losses as losses_lib
from tf_distill import schedules
from tf_distill.architectures import fresh_copy
from tf_distill.backend import keras
from tf_distill.distillers.distiller import Distiller
from tf_distill.schedules import check_loss_weight
from tf_distill.schedules import check_loss_weights
from tf_distill.teachers.ensemble import ENSEMBLE_KINDS
from tf_distill.teachers.ensemble import TeacherEnsemble
from tf_distill.validation import check_choice
from tf_distill.validation import check_count

# A label loss on integer labels, applied to logits (see `Distiller.compile`).
DEFAULT_LOSS = "sparse_categorical_crossentropy"


def _deserialize_value(value):
    if isinstance(value, list):
        return [_deserialize_value(item) for item in value]
    if isinstance(value, dict) and "class_name" in value:
        return keras.saving.deserialize_keras_object(value)
    return value


class Stage:
    """One stage of a multi-stage distillation: its student and how it trains.

    Args:
        student: The stage's student: a `keras.Model` (trained in place), or
            a function of no arguments that returns a new one (called when
            the stage runs). Its final output must be logits.
        distillation_losses: A `tf_distill.losses` name, config dict or
            object, or a list of them (see `Distiller`). Defaults to `"kd"`.
        distillation_loss_weights: One weight per loss (default 1 each).
        student_loss_weight: `α` in [0, 1], the weight of the label loss,
            or a schedule of it (see `tf_distill.schedules`).
        epochs: The stage's epochs, an integer >= 1.
        optimizer: An optimizer name, config dict or instance. Each run of
            the stage gets a fresh optimizer built from its config, so one
            `Stage` can run twice.
        compile_kwargs: More arguments of `Distiller.compile`: `loss`
            (default `"sparse_categorical_crossentropy"`, from logits),
            `metrics`, `jit_compile`, ...
        name: The stage's name (defaults to the student's name, or
            `"stage_<i>"` when it runs).

    Raises:
        ValueError: for a student that is neither a model nor a function, an
            unknown or malformed loss, weights that do not match the losses,
            `student_loss_weight` outside [0, 1], `epochs` < 1, an unknown
            optimizer, or `compile_kwargs` that give `optimizer`.

    Example:

    ```python
    stage = tf_distill.stages.Stage(
        student=lambda: build_cnn("medium"),
        distillation_losses={"name": "kd", "temperature": 4.0},
        student_loss_weight=0.1, epochs=10,
        optimizer={"class_name": "Adam", "config": {"learning_rate": 2e-3}},
        compile_kwargs={"metrics": ["accuracy"]},
        name="assistant",
    )
    ```
    """

    def __init__(
        self,
        student,
        distillation_losses="kd",
        distillation_loss_weights=None,
        student_loss_weight=0.5,
        epochs=1,
        optimizer="adam",
        compile_kwargs=None,
        name=None,
    ):
        if not isinstance(student, keras.Model) and not callable(student):
            raise ValueError(
                "`student` must be a keras.Model or a function that builds one. "
                f"Received: student={student!r} of type {type(student).__name__}"
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"`name` must be a non-empty string. Received: name={name!r}")
        if not isinstance(distillation_losses, (list, tuple)):
            distillation_losses = [distillation_losses]
        if not distillation_losses:
            raise ValueError(
                "`distillation_losses` must hold at least one loss. Received: "
                "distillation_losses=[]"
            )
        resolved = [losses_lib.get(loss) for loss in distillation_losses]
        student_loss_weight = check_loss_weight(student_loss_weight)
        compile_kwargs = dict(compile_kwargs or {})
        if "optimizer" in compile_kwargs:
            raise ValueError(
                "Give the stage's optimizer as `optimizer`, not in `compile_kwargs`. "
                f"Received: compile_kwargs={compile_kwargs!r}"
            )
        try:
            instance = keras.optimizers.get(optimizer)
        except ValueError as error:
            raise ValueError(
                f"`optimizer` must be an optimizer name, config or instance: {error} "
                f"Received: optimizer={optimizer!r}"
            ) from None
        # A config is kept as given, so that `get_config` round-trips.
        optimizer_config = (
            optimizer if isinstance(optimizer, dict)
            else keras.saving.serialize_keras_object(instance)
        )
        self.student = student
        self.distillation_losses = resolved
        self.distillation_loss_weights = check_loss_weights(
            distillation_loss_weights, len(resolved)
        )
        self.student_loss_weight = student_loss_weight
        self.epochs = check_count("epochs", epochs)
        self.optimizer_config = optimizer_config
        self.compile_kwargs = compile_kwargs
        self.name = name

    def build_student(self):
        """The stage's student: the model given, or a new one from the function.

        Raises:
            ValueError: if the function does not return a `keras.Model`.
        """
        if isinstance(self.student, keras.Model):
            return self.student
        model = self.student()
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"The student function of stage {self.name!r} must return a keras.Model. "
                f"Received: {model!r} of type {type(model).__name__}"
            )
        return model

    def make_losses(self):
        """Fresh copies of the stage's losses, so that one `Stage` can run twice:
        a loss may hold state (CRD's memory bank, CTKD's learned temperature)."""
        return [losses_lib.deserialize(losses_lib.serialize(loss))
                for loss in self.distillation_losses]

    def make_optimizer(self):
        """A fresh optimizer from the stage's optimizer config."""
        return keras.optimizers.get(self.optimizer_config)

    def compile_arguments(self):
        """`Distiller.compile`'s arguments: a fresh optimizer and `compile_kwargs`."""
        arguments = {"loss": DEFAULT_LOSS, **self.compile_kwargs}
        arguments["optimizer"] = self.make_optimizer()
        return arguments

    def get_config(self):
        """A JSON-compatible config; `Stage.from_config` turns it back into a stage.

        A model student is kept as its architecture (its config, not its
        weights): the stage from the config trains a freshly initialized
        copy. A function student must be registered with
        `keras.saving.register_keras_serializable` to be serialized.
        """
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "distillation_losses": [losses_lib.serialize(loss) for loss in self.distillation_losses],
            "distillation_loss_weights": [
                schedules.serialize(weight) for weight in self.distillation_loss_weights],
            "student_loss_weight": schedules.serialize(self.student_loss_weight),
            "epochs": self.epochs,
            "optimizer": self.optimizer_config,
            "compile_kwargs": {k: keras.saving.serialize_keras_object(v) for k, v in self.compile_kwargs.items()},
        }

    @classmethod
    def from_config(cls, config):
        """Builds a stage from `get_config`'s output."""
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["compile_kwargs"] = {
            k: _deserialize_value(v) for k, v in (config.get("compile_kwargs") or {}).items()
        }
        config["distillation_losses"] = [
            losses_lib.deserialize(loss) for loss in config["distillation_losses"]
        ]
        return cls(**config)

    def __repr__(self):
        return (
            f"Stage(name={self.name!r}, epochs={self.epochs}, "
            f"student_loss_weight={self.student_loss_weight}, "
            f"distillation_losses={self.distillation_losses!r})"
        )


class StageRuns(NamedTuple):
    """What `distill_stages` returns: one entry per stage, in order.

    Attributes:
        students: The trained students (all but the last left frozen: each
            was the teacher of the next stage).
        histories: Each stage's Keras `History` (`None` for a stage that
            `distill_stages` was given as `trained`).
        names: Each stage's name.
        teachers: The name of each stage's teacher (`"teacher"` for the first).
    """

    students: list
    histories: list
    names: list
    teachers: list


def _as_stages(stages):
    if isinstance(stages, (Stage, dict)):
        stages = [stages]
    if not isinstance(stages, (list, tuple)) or not stages:
        raise ValueError(
            "`stages` must be a non-empty list of `Stage`s (or their configs). "
            f"Received: stages={stages!r}"
        )
    result = []
    for index, stage in enumerate(stages):
        if isinstance(stage, dict):
            stage = Stage.from_config(stage)
        if not isinstance(stage, Stage):
            raise ValueError(
                f"`stages[{index}]` must be a `Stage` or a Stage config dict. "
                f"Received: {stage!r} of type {type(stage).__name__}"
            )
        result.append(stage)
    return result


def _stage_callbacks(callbacks, index, stage):
    if callbacks is None:
        return []
    if callable(callbacks):
        return list(callbacks(index, stage))
    return list(callbacks)


def _check_hook(name, hook, arguments):
    if hook is not None and not callable(hook):
        raise ValueError(
            f"`{name}` must be a function {arguments} or None. Received: {name}={hook!r}"
        )


def _check_trained(trained, stages):
    if trained is None:
        return []
    if (not isinstance(trained, (list, tuple)) or len(trained) > len(stages)
            or not all(isinstance(model, keras.Model) for model in trained)):
        raise ValueError(
            "`trained` must be a list of the keras.Models that the first stages "
            f"trained before, at most one per stage ({len(stages)}). Received: "
            f"trained={trained!r}"
        )
    return list(trained)


def _stage_data(data, index, distiller, name):
    result = data(index, distiller)
    if not isinstance(result, (list, tuple)) or len(result) != 2:
        raise ValueError(
            f"`data` must return `(x, validation_data)` for each stage. Received: "
            f"{result!r} for stage {name!r}"
        )
    return result


def _stage_names(stages):
    names = [stage.name or f"stage_{index + 1}" for index, stage in enumerate(stages)]
    if len(set(names)) != len(names):
        raise ValueError(f"Each stage needs its own `name`. Received: names={names}")
    return names


def _chain(teacher, stages, names, trained, teacher_outputs, teacher_weights, ensemble):
    """Yields each stage's `(student, compiled Distiller or None if trained, teacher name)`;
    the next stage's teacher is the student as it is when the next item is asked for."""
    first_teacher = {"teacher_outputs": teacher_outputs}
    if teacher_weights is not None or ensemble is not None:
        first_teacher.update(teacher_weights=teacher_weights, ensemble=ensemble)
    current, current_name = teacher, "teacher"
    models = [] if not isinstance(teacher, keras.Model) else [teacher]
    for index, (stage, name) in enumerate(zip(stages, names)):
        student = trained[index] if index < len(trained) else stage.build_student()
        if any(student is model for model in models):
            raise ValueError(
                f"The student of stage {name!r} is its teacher or an earlier stage's "
                "model: each stage needs a model of its own (give a function that "
                f"builds a new one). Received: student {student.name!r}"
            )
        distiller = None
        if index >= len(trained):
            distiller = Distiller(
                teacher=current,
                student=student,
                distillation_losses=stage.make_losses(),
                distillation_loss_weights=stage.distillation_loss_weights,
                student_loss_weight=stage.student_loss_weight,
                name=f"distiller_{name}",
                **(first_teacher if index == 0 else {"teacher_outputs": "logits"}),
            )
            distiller.compile(**stage.compile_arguments())
        yield student, distiller, current_name
        models.append(student)
        current, current_name = student, name


def check_stages(teacher, stages, *, teacher_outputs="logits", teacher_weights=None,
                 ensemble=None):
    """Builds every stage's student and `Distiller` as `distill_stages` would,
    without training: a chain that cannot run is refused before any training.

    Args:
        teacher, stages, teacher_outputs, teacher_weights, ensemble: As
            `distill_stages` takes them.

    Returns:
        Each stage's (untrained) student, in order.

    Raises:
        ValueError: for anything `distill_stages` refuses before it trains a
            stage: stages that are not `Stage`s, two stages with one name, a
            student that is its teacher, a loss or teacher the `Distiller`
            refuses.
    """
    stages = _as_stages(stages)
    chain = _chain(teacher, stages, _stage_names(stages), [], teacher_outputs,
                   teacher_weights, ensemble)
    return [student for student, _, _ in chain]


def distill_stages(
    teacher,
    stages,
    x=None,
    y=None,
    *,
    validation_data=None,
    data=None,
    trained=None,
    callbacks=None,
    on_stage_end=None,
    teacher_outputs="logits",
    teacher_weights=None,
    ensemble=None,
    verbose="auto",
    **fit_kwargs,
):
    """Distills a chain of students, each stage's student the next one's teacher.

    Stage 1 distills `teacher` into its student; stage k distills stage
    k − 1's trained student, frozen and unchanged, into its own (Mirzadeh
    et al., AAAI 2020: teacher → assistant → student). Each stage is one
    `tf_distill.Distiller`, compiled with the stage's optimizer and losses
    (fresh copies) and `compile_kwargs`, and fitted for the stage's epochs,
    on the same data or, with `data`, on each stage's own (say, with its
    teacher's outputs cached).

    Args:
        teacher: The trained first teacher: a `keras.Model`, or several (a
            list or dict, see `Distiller`) for the first stage.
        stages: A list of `Stage`s (or their `get_config` dicts).
        x, y: The training data, as `keras.Model.fit` takes them (a
            `tf.data.Dataset` of `(x, y)` as `x`).
        validation_data: As `fit` takes it; the same for every stage.
        data: Instead of `x`, `y` and `validation_data`: a function
            `(index, distiller) -> (x, validation_data)` giving each stage's
            own data, called after the stage's `Distiller` is compiled.
        trained: To resume a chain: the students that the first
            `len(trained)` stages trained before, in order. Those stages
            are not trained again; each still teaches the next stage.
        callbacks: A list of callbacks given to every stage's `fit`, or a
            function `(index, stage) -> list` for each stage's own.
        on_stage_end: A function `(index, distiller, history)` called after
            each stage trained, before the next starts (to save its student,
            say, so that an interrupted chain can resume with `trained`).
        teacher_outputs: `"logits"` or `"probabilities"` for the first
            teacher (every later teacher is a student: logits).
        teacher_weights, ensemble: With several first teachers: their
            weights and how they are combined, as `Distiller` takes them.
        verbose: As `fit` takes it.
        **fit_kwargs: More arguments of `fit` (`batch_size`, `shuffle`, ...).

    Returns:
        A `StageRuns(students, histories, names, teachers)`; the history of
        a stage in `trained` is `None`.

    Raises:
        ValueError: for `stages` that are not `Stage`s, two stages with one
            name, a stage whose student is its own teacher or an earlier
            stage's, `epochs` in `fit_kwargs`, `data` given with `x`, `y` or
            `validation_data`, hooks that are not functions, a `data` that
            does not return a pair, `trained` that is not a list of at most
            one model per stage, or anything `Distiller` refuses.

    Example:

    ```python
    from tf_distill.distillers.stages import Stage, distill_stages

    runs = distill_stages(
        teacher,
        [Stage(build_medium, "kd", student_loss_weight=0.1, epochs=10, name="assistant"),
         Stage(build_small, "kd", student_loss_weight=0.1, epochs=10, name="student")],
        x_train, y_train, validation_data=(x_val, y_val), batch_size=64,
    )
    assistant, student = runs.students
    ```
    """
    stages = _as_stages(stages)
    if "epochs" in fit_kwargs:
        raise ValueError(
            "Each stage sets its own `epochs` (`Stage(epochs=...)`). Received: "
            f"epochs={fit_kwargs['epochs']!r}"
        )
    _check_hook("data", data, "(index, distiller) -> (x, validation_data)")
    _check_hook("on_stage_end", on_stage_end, "(index, distiller, history)")
    if data is not None and (x is not None or y is not None or validation_data is not None):
        raise ValueError(
            "Give the training data as `x`, `y` and `validation_data`, or as `data` "
            f"for each stage, not both. Received: data={data!r} and x, y or validation_data"
        )
    trained = _check_trained(trained, stages)
    names = _stage_names(stages)
    students, histories, teacher_names = [], [], []
    chain = _chain(teacher, stages, names, trained, teacher_outputs, teacher_weights, ensemble)
    for index, (student, distiller, teacher_name) in enumerate(chain):
        history = None
        if distiller is not None:
            stage_x, stage_validation = (
                (x, validation_data) if data is None
                else _stage_data(data, index, distiller, names[index])
            )
            history = distiller.fit(
                stage_x, y, epochs=stages[index].epochs, validation_data=stage_validation,
                callbacks=_stage_callbacks(callbacks, index, stages[index]), verbose=verbose,
                **fit_kwargs,
            )
            if on_stage_end is not None:
                on_stage_end(index, distiller, history)
        students.append(student)
        histories.append(history)
        teacher_names.append(teacher_name)
    return StageRuns(students, histories, names, teacher_names)


class BornAgainRuns(NamedTuple):
    """What `born_again` returns.

    Attributes:
        students: Each generation's trained student, generation 1 first.
        histories: Each generation's Keras `History`.
        ensemble: With `ensemble=True`, a `TeacherEnsemble` of every
            generation's student (its call returns the ensemble's logits);
            else `None`.
    """

    students: list
    histories: list
    ensemble: object


def born_again(
    teacher,
    build_student=None,
    generations=3,
    x=None,
    y=None,
    *,
    distillation_losses="kd",
    distillation_loss_weights=None,
    student_loss_weight=0.5,
    epochs=1,
    optimizer="adam",
    compile_kwargs=None,
    ensemble=False,
    ensemble_kind="average_probabilities",
    seed=None,
    validation_data=None,
    callbacks=None,
    verbose="auto",
    **fit_kwargs,
):
    """Born-again networks: generations of one architecture, each taught by the last.

    Generation 1 is distilled from `teacher` (generation 0, trained on the
    labels), generation k from generation k − 1, each starting from fresh
    weights (Furlanello et al., "Born-Again Neural Networks", ICML 2018).
    With `ensemble=True` the students of every generation are also
    combined into one model, the BAN ensemble.

    Args:
        teacher: The trained generation 0, a `keras.Model` with logits.
        build_student: A function of no arguments returning a new, untrained
            model; `None` for a fresh copy of `teacher`'s architecture (see
            `tf_distill.architectures.fresh_copy`).
        generations: The number of students, an integer >= 1.
        x, y: The training data, as `fit` takes them.
        distillation_losses, distillation_loss_weights, student_loss_weight,
            epochs, optimizer, compile_kwargs: Every generation's, as
            `Stage` takes them; each generation gets its own copies of the
            losses and a fresh optimizer (see `distill_stages`).
        ensemble: Return the ensemble of the generations' students too.
        ensemble_kind: `"average_probabilities"` or `"average_logits"`.
        seed: With `build_student=None`: the seed of generation k's initial
            weights is `seed + k` (`None`: random).
        validation_data, callbacks, verbose, **fit_kwargs: As
            `distill_stages` takes them.

    Returns:
        A `BornAgainRuns(students, histories, ensemble)`.

    Raises:
        ValueError: for a teacher that is not a Keras model, `generations`
            < 1, a `build_student` that is not callable or returns a model
            already in the chain, or an invalid stage argument.

    Example:

    ```python
    runs = tf_distill.stages.born_again(
        teacher, generations=3, x=x_train, y=y_train, epochs=10,
        distillation_losses={"name": "kd", "temperature": 1.0},
        compile_kwargs={"metrics": ["accuracy"]}, ensemble=True, batch_size=64,
    )
    runs.ensemble.predict(x_test)  # the BAN ensemble's logits
    ```
    """
    if not isinstance(teacher, keras.Model):
        raise ValueError(
            "`teacher` must be a trained keras.Model (generation 0). Received: "
            f"teacher={teacher!r} of type {type(teacher).__name__}"
        )
    check_count("generations", generations)
    if build_student is not None and not callable(build_student):
        raise ValueError(
            "`build_student` must be a function that returns a new keras.Model, or "
            f"None for a fresh copy of the teacher. Received: build_student={build_student!r}"
        )
    if ensemble:
        check_choice("ensemble_kind", ensemble_kind, ENSEMBLE_KINDS)
    def builder(generation):
        if build_student is not None:
            return build_student
        generation_seed = None if seed is None else seed + generation
        return lambda: fresh_copy(teacher, seed=generation_seed,
                                  name=f"{teacher.name}_generation_{generation}")

    stages = [
        Stage(
            builder(generation),
            distillation_losses,
            distillation_loss_weights=distillation_loss_weights,
            student_loss_weight=student_loss_weight,
            epochs=epochs,
            optimizer=optimizer,
            compile_kwargs=compile_kwargs,
            name=f"generation_{generation}",
        )
        for generation in range(1, generations + 1)
    ]
    runs = distill_stages(
        teacher, stages, x, y, validation_data=validation_data, callbacks=callbacks,
        verbose=verbose, **fit_kwargs,
    )
    combined = None
    if ensemble:
        combined = TeacherEnsemble(
            dict(zip(runs.names, runs.students)), ensemble=ensemble_kind,
            name="born_again_ensemble",
        )
    return BornAgainRuns(runs.students, runs.histories, combined)
