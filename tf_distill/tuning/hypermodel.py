"""`DistillerHyperModel`: a Keras Tuner hypermodel of a `Distiller`.

`build(hp)` makes a compiled, built `TrialDistiller` whose temperature,
student-loss weight α (and optionally learning rate and student width) come
from the search space (`tf_distill.tuning.space`). `TrialDistiller`'s weight
files leave the shared, frozen teacher out, so a trial checkpoint costs what
the student and its optimizer state cost.
"""

import math

import keras_tuner

from tf_distill import taps
from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.distillers.distiller import Distiller
from tf_distill.optimizers import make_optimizer
from tf_distill.tuning.space import SPACES
from tf_distill.tuning.space import check_space
from tf_distill.tuning.space import with_temperature


class DistillerHyperModel(keras_tuner.HyperModel):
    """A Keras Tuner hypermodel of a `Distiller`: temperature, α and more.

    `build(hp)` returns a compiled, built `TrialDistiller` (a tuner saves
    each trial's weights, which needs a built model; a `TrialDistiller`
    leaves the shared, frozen teacher out of them). Each searched quantity is
    given as a number (fixed, still recorded in the trial), a `(low, high)`
    tuple (a continuous range; log scale for the temperature, learning rate
    and width) or a list (choices, e.g. for `GridSearch`). By default the
    search covers `T` in [1, 20] on a log scale and `α` in [0, 1], and
    `make_tuner` maximises the student's validation accuracy
    (`val_accuracy`).

    `fit(hp, model, ...)` trains with `keras.callbacks.TerminateOnNaN` and
    raises `keras_tuner.errors.FailedTrialError` if the loss turns NaN or
    infinite, so the tuner records the trial as failed and goes on.

    Args:
        teacher: The trained teacher `keras.Model`, shared by every trial.
        build_student: A function returning a new, uncompiled student that
            outputs logits: `build_student()`, or `build_student(width)`
            when `width` is given (a multiplier, 1 = the default width).
        distillation_losses: The losses (names, configs or objects); the
            temperature is set on each loss that has one. Defaults to "kd".
        temperature: `T > 0`. Defaults to the range (1, 20), log scale.
            `None` keeps the losses' own temperatures.
        student_loss_weight: `α` in [0, 1]. Defaults to the range (0, 1).
        learning_rate: Defaults to 1e-3 (fixed); a range tunes it.
        width: `None` (default: `build_student()` takes no argument), a
            factor, a range or choices.
        distillation_loss_weights: As in `Distiller`.
        teacher_outputs: `"logits"` or `"probabilities"`, as in `Distiller`.
        optimizer: An optimizer name (`"adam"`, `"sgd"`, ...) or a function
            `learning_rate -> optimizer`.
        loss: The student's loss on the labels.
        metrics: The metrics; `"accuracy"` gives the default objective
            `val_accuracy`.
        seed: If set, every trial's student starts from the same weights
            (a fair comparison); leave None with `executions_per_trial > 1`.
        name: The hypermodel's name.

    Example:

    >>> hypermodel = DistillerHyperModel(teacher, make_student, seed=0)
    >>> tuner = make_tuner(hypermodel, "random", max_trials=10, directory="runs/tune")
    >>> tuner.search(train, validation_data=validation, epochs=5)
    """

    def __init__(
        self,
        teacher,
        build_student,
        distillation_losses="kd",
        *,
        temperature=(1.0, 20.0),
        student_loss_weight=(0.0, 1.0),
        learning_rate=1e-3,
        width=None,
        distillation_loss_weights=None,
        teacher_outputs="logits",
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=("accuracy",),
        seed=None,
        name="distiller",
    ):
        super().__init__(name=name, tunable=True)
        if not isinstance(teacher, keras.Model):
            raise ValueError(
                "`teacher` must be a keras.Model. Received: teacher of type "
                f"{type(teacher).__name__}"
            )
        if not callable(build_student):
            raise ValueError(
                "`build_student` must be a function returning a new student model. "
                f"Received: build_student={build_student!r}"
            )
        self.teacher = teacher
        self.build_student = build_student
        self.distillation_losses = distillation_losses
        self.spaces = {
            "temperature": None
            if temperature is None
            else check_space("temperature", temperature),
            "student_loss_weight": check_space("student_loss_weight", student_loss_weight),
            "learning_rate": check_space("learning_rate", learning_rate),
            "width": None if width is None else check_space("width", width),
        }
        if temperature is not None:
            with_temperature(distillation_losses, 1.0)  # Fails now, not in a trial.
        self.distillation_loss_weights = distillation_loss_weights
        self.teacher_outputs = teacher_outputs
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = list(metrics) if metrics else None
        self.seed = seed

    def _value(self, hp, name):
        space = self.spaces[name]
        if space is None:
            return None
        if isinstance(space, tuple):
            low, high = space
            default = min(max(SPACES[name]["default"], low), high)
            return hp.Float(
                name,
                low,
                high,
                sampling="log" if SPACES[name]["log"] and low > 0 else "linear",
                default=default,
            )
        if isinstance(space, list):
            return hp.Choice(name, space)
        return hp.Fixed(name, space)

    def build(self, hp):
        """Returns a compiled, built `TrialDistiller` for the values in `hp`."""
        temperature = self._value(hp, "temperature")
        student_loss_weight = self._value(hp, "student_loss_weight")
        learning_rate = self._value(hp, "learning_rate")
        width = self._value(hp, "width")
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        student = self.build_student() if width is None else self.build_student(width)
        losses = self.distillation_losses
        if temperature is not None:
            losses = with_temperature(losses, temperature)
        distiller = TrialDistiller(
            teacher=self.teacher,
            student=student,
            distillation_losses=losses,
            distillation_loss_weights=self.distillation_loss_weights,
            student_loss_weight=student_loss_weight,
            teacher_outputs=self.teacher_outputs,
        )
        distiller.compile(
            optimizer=make_optimizer(self.optimizer, learning_rate),
            loss=self.loss,
            metrics=self.metrics,
        )
        _ensure_built(distiller)
        # Built optimizer slots let a checkpoint restore the optimizer too
        # (Hyperband continues a model from its checkpoint).
        distiller.optimizer.build(distiller.trainable_variables)
        return distiller

    def fit(self, hp, model, *args, **kwargs):
        """Trains a trial; raises `FailedTrialError` if the loss turns NaN."""
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks.append(keras.callbacks.TerminateOnNaN())
        history = model.fit(*args, callbacks=callbacks, **kwargs)
        for key, values in history.history.items():
            bad = [i for i, v in enumerate(values) if not math.isfinite(float(v))]
            if bad:
                values_text = ", ".join(f"{k}={v:.4g}" for k, v in sorted(hp.values.items()))
                raise keras_tuner.errors.FailedTrialError(
                    f"`{key}` turned {values[bad[0]]} at epoch {bad[0] + 1} with {values_text}: "
                    "this trial failed; the search goes on."
                )
        return history


def _layers_under(roots):
    """The models and layers in `roots` and, recursively, in their models."""
    found, stack = {}, [root for root in roots if root is not None]
    while stack:
        layer = stack.pop()
        if id(layer) in found:
            continue
        found[id(layer)] = layer
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
    return found


@register_serializable()
class TrialDistiller(Distiller):
    """A `Distiller` whose weight files hold only what training changes.

    Keras Tuner checkpoints a trial with `save_weights` at each epoch that
    improves the objective, and restores the best with `load_weights` (for
    `get_best_models`, and for Hyperband continuing a model). The teacher is
    frozen and shared by every trial: its weights, most of the bytes of a
    whole-Distiller checkpoint, are left out. The files hold the student,
    the adapters and the optimizer's state, so a restored model trains on
    as the saved one would.

    With tf_keras (`TF_USE_LEGACY_KERAS=1`) the weights of the whole
    Distiller are saved, as `Distiller.save_weights` does.

    Args:
        As `Distiller`.
    """

    def _frozen_objects(self):
        """The teachers and their layers, less anything the student or an
        adapter also holds. (The models that tap them hold no variables of
        their own: their layers are the teachers'.)"""
        frozen = _layers_under([self.teacher, *self.teachers.values()])
        trained = _layers_under([self.student, *self.adapters])
        return [layer for key, layer in frozen.items() if key not in trained]

    def save_weights(self, filepath, overwrite=True, **kwargs):
        if LEGACY_KERAS:
            return super().save_weights(filepath, overwrite=overwrite, **kwargs)
        return keras.saving.save_weights(
            self, filepath, overwrite=overwrite, objects_to_skip=self._frozen_objects(), **kwargs
        )

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        if LEGACY_KERAS:
            return super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)
        return keras.saving.load_weights(
            self,
            filepath,
            skip_mismatch=skip_mismatch,
            objects_to_skip=self._frozen_objects(),
            **kwargs,
        )




def _ensure_built(distiller):
    """Builds a subclassed student on the teacher's input shape if needed.

    Keras Tuner restores weights into a model it has just built (Hyperband
    continues a trial from its checkpoint), and the optimizer's slots are
    made from the variables, so the Distiller must be built before `fit`.
    """
    if distiller.built:
        return
    student = distiller.student
    if not getattr(student, "built", False):
        if not taps.is_symbolic(distiller.teacher):
            raise ValueError(
                "The student is not built and the teacher's input shape is "
                "unknown. Make `build_student` return a built model (build it "
                "on a `keras.Input`, or call `student.build(input_shape)`)."
            )
        # A subclassed model's `build(shape)` creates no variables unless it
        # overrides `build`; a call on one example creates them all.
        spec = distiller.teacher.inputs[0]
        shape = [1 if dim is None else dim for dim in spec.shape]
        student(tf.zeros(shape, dtype=spec.dtype), training=False)
    distiller.built = True
