"""The Distiller: a Keras model that trains a student to imitate a teacher."""

import copy
import math
import warnings

from tf_distill import adapters as adapters_lib
from tf_distill import losses as losses_lib
from tf_distill import taps
from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.base import check_positive
from tf_distill.losses.base import check_unit_interval
from tf_distill.losses.base import reduce_per_example

# A batch whose inputs are `{INPUTS: x, TEACHER_OUTPUTS: {...}}` carries the
# teacher's outputs precomputed (see `tf_distill.cache_teacher_outputs`): the
# Distiller then makes no teacher forward pass.
INPUTS = "inputs"
TEACHER_OUTPUTS = "teacher_outputs"

_TEACHER_OUTPUT_KINDS = ("logits", "probabilities")
_ENSEMBLE_KINDS = ("average_probabilities", "average_logits")
_CROSSENTROPY_NAMES = (
    "auto",
    "crossentropy",
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
)


@register_serializable()
def crossentropy_from_logits(y_true, logits):
    """Cross-entropy of logits with sparse integer or one-hot labels.

    The label format is read from the ranks: labels with one axis fewer than
    the logits (or a trailing axis of 1) are class indices, labels of the
    logits' rank are one-hot or soft targets.
    """
    logits = tf.cast(logits, tf.float32)
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == logits.shape.rank and (y_true.shape[-1] != 1 or logits.shape[-1] == 1):
        return tf.nn.softmax_cross_entropy_with_logits(tf.cast(y_true, tf.float32), logits)
    if y_true.shape.rank == logits.shape.rank:
        y_true = tf.squeeze(y_true, -1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y_true, tf.int32), logits)


def _applies_softmax(model):
    """Whether the model's last layer turns logits into probabilities."""
    if isinstance(model, TeacherEnsemble):
        return False  # Its call returns the ensemble's logits.
    if not model.layers:
        return False
    last = model.layers[-1]
    if isinstance(last, keras.Model):
        return _applies_softmax(last)
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def _resolve_student_loss(loss):
    """Turns the `loss` given to `compile` into a per-example function."""
    if loss is None:
        return None
    if isinstance(loss, str) and loss.lower() in _CROSSENTROPY_NAMES:
        # A Distiller's student outputs logits: the crossentropy names mean
        # crossentropy *from logits*, whatever the label format.
        return crossentropy_from_logits
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        if getattr(loss, "_fn_kwargs", {}).get("from_logits") is False or (
            getattr(loss, "from_logits", True) is False
        ):
            warnings.warn(
                f"The student loss {type(loss).__name__} has "
                "from_logits=False, but a Distiller's student outputs logits. "
                "Pass from_logits=True (or the loss's name, which tf_distill "
                "applies to logits).",
                stacklevel=3,
            )
        return loss.call
    if callable(loss):
        return loss
    raise ValueError(
        "Invalid value for argument `loss`. Expected a loss name, a Keras "
        f"loss or a callable. Received: loss={loss!r}"
    )


def teacher_output_key(teacher_name, layer_name=None):
    """The key of one teacher's output among several teachers' outputs.

    With several teachers, `Distiller.teacher_forward` (and so a teacher
    cache) returns `"logits"` for the ensemble's logits and
    `"<teacher_name>/logits"`, `"<teacher_name>/<layer_name>"` for each
    teacher's own logits and tapped layers.

    Args:
        teacher_name: The teacher's name (see `Distiller.teachers`).
        layer_name: A tapped layer's name, or `None` for the logits.

    Returns:
        The key, e.g. `"resnet/logits"` or `"resnet/backbone/block_2"`.
    """
    return f"{teacher_name}/{layer_name or taps.LOGITS}"


def check_teacher_weights(teacher_weights, teacher_names):
    """Validates ensemble weights; returns them as a list of floats.

    Args:
        teacher_weights: `None` (equal weights), a list with one number
            >= 0 per teacher, or a dict `{teacher_name: weight}` naming every
            teacher.
        teacher_names: The teachers' names, in order.

    Returns:
        One float per teacher, in the order of `teacher_names`, not
        normalized.

    Raises:
        ValueError: for a wrong length or names, a negative or non-finite
            weight, or weights that are all 0.
    """
    count = len(teacher_names)
    if teacher_weights is None:
        return [1.0] * count
    received = f"Received: teacher_weights={teacher_weights!r}"
    if isinstance(teacher_weights, dict):
        if set(teacher_weights) != set(teacher_names):
            raise ValueError(
                "A dict of `teacher_weights` must name every teacher once. "
                f"Expected keys {list(teacher_names)}. {received}"
            )
        teacher_weights = [teacher_weights[name] for name in teacher_names]
    if not isinstance(teacher_weights, (list, tuple)):
        raise ValueError(
            "`teacher_weights` must be a list with one number >= 0 per "
            f"teacher, or a dict {{teacher_name: weight}}. {received}"
        )
    if len(teacher_weights) != count:
        raise ValueError(
            f"Number of teacher_weights ({len(teacher_weights)}) must match "
            f"number of teachers ({count}). {received}"
        )
    for weight in teacher_weights:
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ValueError(f"Each teacher weight must be a finite number >= 0. {received}")
    if not any(weight > 0 for weight in teacher_weights):
        raise ValueError(f"`teacher_weights` must not all be 0. {received}")
    return [float(weight) for weight in teacher_weights]


def ensemble_logits(teacher_logits, teacher_weights=None, ensemble="average_probabilities"):
    """The logits of a weighted ensemble of teachers.

    With weights `w_k` normalized to sum to 1:

    - `"average_probabilities"`: `log Σ_k w_k · softmax(t_k)`, the log of
      the ensemble's predictive distribution (Hinton et al. 2015, §2;
      You et al. 2017), computed in log space as
      `logsumexp_k(log w_k + log_softmax(t_k))`. A loss at temperature `T`
      then targets `softmax(log p / T) ∝ p^(1/T)`: the *tempered ensemble
      distribution*, not the average of the teachers' tempered
      distributions.
    - `"average_logits"`: `Σ_k w_k · t_k`; softmax at any temperature is
      then the normalized weighted geometric mean of the teachers' tempered
      distributions.

    Args:
        teacher_logits: A list of tensors `[batch, ..., classes]` of one
            shape, one per teacher.
        teacher_weights: One weight >= 0 per teacher (not all 0), or `None`
            for equal weights. Teachers of weight 0 are left out.
        ensemble: `"average_probabilities"` or `"average_logits"`.

    Returns:
        A float32 tensor of the teachers' shape.

    Raises:
        ValueError: for an unknown `ensemble`, invalid weights, or logits of
            different shapes.
    """
    if ensemble not in _ENSEMBLE_KINDS:
        raise ValueError(
            "Invalid value for argument `ensemble`. Expected one of "
            f"{list(_ENSEMBLE_KINDS)}. Received: ensemble={ensemble!r}"
        )
    teacher_logits = [tf.cast(logits, tf.float32) for logits in teacher_logits]
    weights = check_teacher_weights(teacher_weights, [str(i) for i in range(len(teacher_logits))])
    shapes = [logits.shape for logits in teacher_logits]
    if any(not shape.is_compatible_with(shapes[0]) for shape in shapes):
        raise ValueError(
            "The teachers' logits must have one shape to be averaged. "
            f"Received shapes {[tuple(shape) for shape in shapes]}."
        )
    total = sum(weights)
    # Python-level: a teacher of weight 0 adds no term (and no log 0).
    terms = [(w / total, logits) for w, logits in zip(weights, teacher_logits) if w > 0]
    if ensemble == "average_logits":
        return tf.add_n([w * logits for w, logits in terms])
    log_probabilities = tf.stack(
        [math.log(w) + tf.nn.log_softmax(logits, axis=-1) for w, logits in terms]
    )
    return tf.reduce_logsumexp(log_probabilities, axis=0)


def _as_logits(outputs, teacher_outputs):
    """A teacher's final outputs as float32 logits (log of probabilities)."""
    if teacher_outputs == "probabilities":
        probabilities = tf.cast(outputs, tf.float32)
        return tf.math.log(tf.maximum(probabilities, 1e-12))
    return outputs


def _named_teachers(teacher):
    """`(names, models)` from a list or dict of teachers, validated."""
    if isinstance(teacher, dict):
        names, models = list(teacher), list(teacher.values())
        for name in names:
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(
                    "Each teacher's name must be a non-empty string without "
                    "'/' (it prefixes the keys of its outputs, "
                    f"'<name>/<layer>'). Received: teacher name {name!r}"
                )
    else:
        models = list(teacher)
        names = [getattr(model, "name", None) for model in models]
    if not models:
        raise ValueError(f"`teacher` must hold at least one model. Received: teacher={teacher!r}")
    for name, model in zip(names if isinstance(teacher, dict) else range(len(models)), models):
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"Each teacher must be a keras.Model. Received: teacher[{name!r}]="
                f"{model!r} of type {type(model).__name__}"
            )
    if len(set(names)) != len(names):
        raise ValueError(
            f"The teachers' names must be unique; they are {names}. Pass "
            "`teacher` as a dict `{name: model}` to name them."
        )
    return names, models


@register_serializable()
class TeacherEnsemble(keras.Model):
    """Several frozen teachers seen as one teacher.

    What `Distiller.teacher` is when the Distiller has several teachers.
    Calling it returns the ensemble's logits (see `ensemble_logits`); the
    teachers themselves are `ensemble.teachers`, by name.

    Args:
        teachers: A list of Keras models (named by their `name`) or a dict
            `{name: model}`.
        teacher_weights: The teachers' weights in the ensemble (list, or
            dict by name); `None` for equal weights.
        ensemble: `"average_probabilities"` (default) or `"average_logits"`.
        teacher_outputs: `"logits"`, or `"probabilities"` for teachers that
            end with a softmax (their log is used as logits).
        name: The model's name.
    """

    def __init__(
        self,
        teachers,
        teacher_weights=None,
        ensemble="average_probabilities",
        teacher_outputs="logits",
        name="teacher_ensemble",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        names, models = _named_teachers(teachers)
        if ensemble not in _ENSEMBLE_KINDS:
            raise ValueError(
                "Invalid value for argument `ensemble`. Expected one of "
                f"{list(_ENSEMBLE_KINDS)}. Received: ensemble={ensemble!r}"
            )
        if teacher_outputs not in _TEACHER_OUTPUT_KINDS:
            raise ValueError(
                "Invalid value for argument `teacher_outputs`. Expected one of "
                f"{list(_TEACHER_OUTPUT_KINDS)}. Received: "
                f"teacher_outputs={teacher_outputs!r}"
            )
        self.teacher_names = names
        self._members = models
        self.teacher_weights = check_teacher_weights(teacher_weights, names)
        self.ensemble = ensemble
        self.teacher_outputs = teacher_outputs
        if all(getattr(model, "built", False) for model in models):
            self.built = True

    @property
    def teachers(self):
        """The teachers, `{name: model}` in order."""
        return dict(zip(self.teacher_names, self._members))

    def combine(self, teacher_logits):
        """The ensemble's logits from each teacher's logits, in order."""
        return ensemble_logits(teacher_logits, self.teacher_weights, self.ensemble)

    def call(self, inputs, training=None):
        return self.combine(
            [
                _as_logits(model(inputs, training=training), self.teacher_outputs)
                for model in self._members
            ]
        )

    def get_config(self):
        return {
            "name": self.name,
            "teachers": {
                name: keras.saving.serialize_keras_object(model)
                for name, model in self.teachers.items()
            },
            "teacher_weights": list(self.teacher_weights),
            "ensemble": self.ensemble,
            "teacher_outputs": self.teacher_outputs,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["teachers"] = {
            name: keras.saving.deserialize_keras_object(model, custom_objects=custom_objects)
            for name, model in config["teachers"].items()
        }
        return cls(**config)


def _compatible(shape, other):
    """Whether two static shapes (tuples, None for unknown) can be equal."""
    return len(shape) == len(other) and all(
        a is None or b is None or a == b for a, b in zip(shape, other)
    )


def _get_loss(identifier):
    """`losses.get`, also reading a `"teacher"` key from a config dict."""
    if isinstance(identifier, dict) and "teacher" in identifier:
        identifier = dict(identifier)
        teacher = identifier.pop("teacher")
        loss = losses_lib.get(identifier)
        loss.teacher = teacher
        return loss
    return losses_lib.get(identifier)


@register_serializable()
class Distiller(keras.Model):
    """Trains a student model to imitate a frozen teacher (or several).

    A drop-in superset of `keras.distillation.Distiller` and of the keras.io
    "Knowledge Distillation" example: both construction and compile styles
    work. Each training step runs the teacher once (frozen, `training=False`,
    outside the gradient tape) and the student once, tapping every named
    layer in that single pass, and minimises

        loss = α · student_loss(y, student(x))
             + (1 − α) · Σᵢ wᵢ · distillation_lossᵢ(teacher, student)

    with `α = student_loss_weight` (Hinton et al. 2015; the formula of
    `keras.distillation`). Each distillation loss returns per-example values,
    so sample weights and `tf.distribute` averaging apply to every term.

    **Several teachers.** `teacher` may be a list of models (named by their
    `name`) or a dict `{name: model}`. Each teacher is frozen and runs once
    per step. A distillation loss reads the teacher its `teacher` attribute
    names (a name or an index: `loss.teacher = "resnet"`, or `"teacher":
    "resnet"` in a loss's config dict); a loss that names none reads the
    ensemble's logits (see `ensemble_logits`), formed with `teacher_weights`
    by `ensemble`. A loss that reads a teacher's layer must name its
    teacher. Per-teacher losses are weighted by `distillation_loss_weights`
    like any other.

    Args:
        teacher: A trained `keras.Model` whose final output is logits, or a
            list or dict of them. Teachers are frozen (`trainable=False`)
            and never changed by `fit`. With several teachers,
            `distiller.teacher` is a `TeacherEnsemble` holding them.
        student: The `keras.Model` to train; its final output must be logits.
        distillation_losses: A `tf_distill.losses.DistillationLoss`, a
            registry name (`"kd"`), a config dict, or a list of them. May be
            `None` only when `compile` receives `distillation_loss_fn` (the
            keras.io form).
        distillation_loss_weights: One weight per distillation loss.
            Defaults to 1 each.
        student_loss_weight: `α` in [0, 1], the weight of the student's loss
            on the true labels. Defaults to 0.5.
        teacher_outputs: `"logits"` (default) or `"probabilities"`, for a
            teacher whose last layer applies a softmax (its log is used as
            logits). A softmax teacher given as `"logits"` is refused. With
            several teachers it applies to each.
        adapter_batch_norm: Follow 1×1-convolution adapters with
            BatchNormalization (FitNets-style regressors).
        teacher_weights: With several teachers: their weights in the
            ensemble (a list, or a dict by name), >= 0 and not all 0.
            Defaults to equal weights.
        ensemble: With several teachers: `"average_probabilities"`
            (default; the ensemble's soft targets are the weighted average of
            the teachers' probabilities) or `"average_logits"`.
        name: The model's name.

    Raises:
        ValueError: for a teacher or student that is not a Keras model, a
            softmax output given as logits, outputs of different shapes
            (naming the teacher), an unknown layer or teacher name, or
            invalid weights.

    Example:

    ```python
    distiller = tf_distill.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=tf_distill.LogitsDistillation(temperature=4.0),
        student_loss_weight=0.1,
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    distiller.fit(x_train, y_train, epochs=5)
    distiller.student.save("student.keras")
    ```

    Several teachers, one of them also guiding a feature:

    ```python
    hint = tf_distill.FeatureDistillation("mse", "block_3", "student_block_3")
    hint.teacher = "resnet"
    distiller = tf_distill.Distiller(
        teacher={"resnet": resnet, "vit": vit},
        student=student,
        distillation_losses=[tf_distill.LogitsDistillation(4.0), hint],
        distillation_loss_weights=[1.0, 0.5],
        teacher_weights={"resnet": 2.0, "vit": 1.0},
    )
    ```
    """

    def __init__(
        self,
        teacher=None,
        student=None,
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=0.5,
        teacher_outputs="logits",
        adapter_batch_norm=False,
        teacher_weights=None,
        ensemble=None,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        several = isinstance(teacher, (list, tuple, dict))
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model) and not (role == "teacher" and several):
                raise ValueError(
                    f"`{role}` must be a keras.Model. Received: "
                    f"{role}={model!r} of type {type(model).__name__}"
                )
        if teacher_outputs not in _TEACHER_OUTPUT_KINDS:
            raise ValueError(
                "Invalid value for argument `teacher_outputs`. Expected one of "
                f"{list(_TEACHER_OUTPUT_KINDS)}. Received: "
                f"teacher_outputs={teacher_outputs!r}"
            )
        if several:
            teacher = TeacherEnsemble(
                teacher,
                teacher_weights=teacher_weights,
                ensemble="average_probabilities" if ensemble is None else ensemble,
                teacher_outputs=teacher_outputs,
            )
        elif teacher_weights is not None or ensemble is not None:
            raise ValueError(
                "`teacher_weights` and `ensemble` apply to several teachers: "
                "pass `teacher` as a list or a dict of models. Received: "
                f"teacher_weights={teacher_weights!r}, ensemble={ensemble!r}"
            )
        if teacher_outputs == "logits":
            for teacher_name, model in self._named_members(teacher):
                if _applies_softmax(model):
                    raise ValueError(
                        f"The teacher {teacher_name!r} ends with a softmax: its outputs "
                        "are probabilities, and distilling them as logits would be "
                        "wrong. Remove the softmax, or pass "
                        "`teacher_outputs='probabilities'`."
                    )
        if _applies_softmax(student):
            raise ValueError(
                f"The student {student.name!r} ends with a softmax. A student "
                "must output logits (apply the softmax at inference instead)."
            )
        check_unit_interval("student_loss_weight", student_loss_weight)
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False
        for _, model in self._named_members(teacher):
            model.trainable = False
        self.student_loss_weight = float(student_loss_weight)
        self.teacher_outputs = teacher_outputs
        self.adapter_batch_norm = bool(adapter_batch_norm)
        self._set_distillation_losses(distillation_losses, distillation_loss_weights)

        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self._student_loss_fn = None
        self._student_loss_config = None
        if getattr(student, "built", False) and getattr(teacher, "built", False):
            self.built = True

    # ------------------------------------------------------------------
    # The teachers.

    @staticmethod
    def _named_members(teacher):
        """`[(name, model)]`: the teachers of an ensemble, or the one."""
        if isinstance(teacher, TeacherEnsemble):
            return list(teacher.teachers.items())
        return [(teacher.name, teacher)]

    @property
    def has_several_teachers(self):
        """Whether `teacher` was given as a list or dict of models."""
        return isinstance(self.teacher, TeacherEnsemble)

    @property
    def teachers(self):
        """The teachers by name, `{name: model}` (one entry for one teacher)."""
        return dict(self._named_members(self.teacher))

    def _resolve_loss_teacher(self, index, loss):
        """The name of the teacher a loss reads, or `None` for the ensemble
        (or the single teacher)."""
        requested = getattr(loss, "teacher", None)
        names = list(self.teachers)
        where = f"distillation loss {index} ({type(loss).__name__})"
        if requested is None:
            if self.has_several_teachers and loss.teacher_layer_name is not None:
                raise ValueError(
                    f"The {where} reads the teacher layer "
                    f"{loss.teacher_layer_name!r} but does not say of which "
                    f"teacher. Set its `teacher` to one of {names}."
                )
            return None
        if isinstance(requested, bool) or not isinstance(requested, (int, str)):
            found = None
        elif isinstance(requested, int):
            found = names[requested] if 0 <= requested < len(names) else None
        else:
            found = requested if requested in names else None
        if found is None:
            raise ValueError(
                f"Invalid `teacher` for the {where}. Expected a teacher's name "
                f"(one of {names}) or index (0 to {len(names) - 1}). Received: "
                f"teacher={requested!r}"
            )
        return found if self.has_several_teachers else None

    def _loss_teacher_model(self, index):
        """The model whose outputs loss `index` reads (for the ensemble's
        logits, the first teacher in it: they share its shape)."""
        teacher_name = self._loss_teachers[index]
        if teacher_name is not None:
            return self.teachers[teacher_name]
        if not self.has_several_teachers:
            return self.teacher
        weights = dict(zip(self.teacher.teacher_names, self.teacher.teacher_weights))
        return next(model for name, model in self.teachers.items() if weights[name] > 0)

    def _teacher_key(self, teacher_name, layer_name):
        """Where a loss finds its tensor in `teacher_forward`'s outputs."""
        if teacher_name is None:
            return layer_name or taps.LOGITS
        return teacher_output_key(teacher_name, layer_name)

    # ------------------------------------------------------------------
    # Configuration of the losses, taps and adapters.

    def _set_distillation_losses(self, distillation_losses, weights):
        if distillation_losses is None:
            self.distillation_losses = []
            self.distillation_loss_weights = []
            self._loss_teachers = []
            self._teacher_keys = []
            self._teacher_taps = self._student_taps = None
            self._member_taps = [None] * len(self.teachers) if self.has_several_teachers else []
            self.adapters = []
            self._teacher_pools = []
            return
        if not isinstance(distillation_losses, (list, tuple)):
            distillation_losses = [distillation_losses]
        if len(distillation_losses) == 0:
            raise ValueError(
                "`distillation_losses` must hold at least one loss. Received: "
                "distillation_losses=[]"
            )
        resolved = [_get_loss(loss) for loss in distillation_losses]
        if weights is None:
            weights = [1.0] * len(resolved)
        if not isinstance(weights, (list, tuple)):
            weights = [weights]
        if len(weights) != len(resolved):
            raise ValueError(
                f"Number of distillation_loss_weights ({len(weights)}) must "
                f"match number of distillation_losses ({len(resolved)}). "
                f"Received: distillation_loss_weights={list(weights)!r}"
            )
        for weight in weights:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(
                    "Each distillation loss weight must be a number >= 0. "
                    f"Received: distillation_loss_weights={list(weights)!r}"
                )
        loss_teachers = [self._resolve_loss_teacher(i, loss) for i, loss in enumerate(resolved)]
        for loss, teacher_name in zip(resolved, loss_teachers):
            teacher = self.teacher if teacher_name is None else self.teachers[teacher_name]
            loss.validate_model_compatibility(teacher, self.student)
        self.distillation_losses = resolved
        self.distillation_loss_weights = [float(w) for w in weights]
        self._loss_teachers = loss_teachers
        self._teacher_keys = [
            self._teacher_key(teacher_name, loss.teacher_layer_name)
            for loss, teacher_name in zip(resolved, loss_teachers)
        ]
        if self.has_several_teachers:
            self._teacher_taps = None
            self._member_taps = [
                taps.tap_model(
                    model,
                    [
                        loss.teacher_layer_name
                        for loss, teacher_name in zip(resolved, loss_teachers)
                        if teacher_name == name
                    ],
                    role="teacher",
                )
                for name, model in self.teachers.items()
            ]
        else:
            self._member_taps = []
            self._teacher_taps = taps.tap_model(
                self.teacher, [loss.teacher_layer_name for loss in resolved], role="teacher"
            )
        self._student_taps = taps.tap_model(
            self.student, [loss.student_layer_name for loss in resolved], role="student"
        )
        self._check_logit_shapes()
        self._build_adapters()

    @staticmethod
    def _symbolic_output(model, name):
        if not taps.is_symbolic(model):
            return None
        if name is None:
            return model.outputs[0]
        return taps.find_layer(model, name).output

    def _check_logit_shapes(self):
        """Raises, naming the teacher, if logits read by a loss cannot be
        compared with the student's (or averaged with each other)."""
        readers = [
            teacher_name
            for loss, teacher_name in zip(self.distillation_losses, self._loss_teachers)
            if loss.teacher_layer_name is None and loss.student_layer_name is None
        ]
        if not readers:
            return
        if not self.has_several_teachers:
            checked = [(None, self.teacher)]
        else:
            # The ensemble reads every teacher of weight > 0.
            names = set(readers)
            if None in names:
                weights = dict(zip(self.teacher.teacher_names, self.teacher.teacher_weights))
                names |= {name for name, weight in weights.items() if weight > 0}
            checked = [(name, model) for name, model in self.teachers.items() if name in names]
        checked = [(name, model) for name, model in checked if taps.is_symbolic(model)]
        if not checked:
            return
        shapes = [(name, tuple(model.outputs[0].shape)) for name, model in checked]
        if taps.is_symbolic(self.student):
            reference = ("student", tuple(self.student.outputs[0].shape))
        else:
            reference = None
        for teacher_name, t_shape in shapes:
            other_name, other_shape = reference or shapes[0]
            if _compatible(t_shape, other_shape):
                continue
            if teacher_name is None:
                raise ValueError(
                    "Teacher and student outputs must have the same shape to be "
                    f"distilled. Received: teacher output shape {t_shape} and "
                    f"student output shape {other_shape}."
                )
            other = "student" if reference else f"teacher {other_name!r}"
            raise ValueError(
                f"Teacher {teacher_name!r} and {other} outputs must have the same "
                f"shape to be distilled. Received: teacher {teacher_name!r} output "
                f"shape {t_shape} and {other} output shape {other_shape}."
            )

    def _build_adapters(self):
        self.adapters = []
        self._teacher_pools = []
        for index, loss in enumerate(self.distillation_losses):
            if not loss.needs_adapter:
                self.adapters.append(None)
                self._teacher_pools.append(None)
                continue
            teacher_tensor = self._symbolic_output(
                self._loss_teacher_model(index), loss.teacher_layer_name
            )
            student_tensor = self._symbolic_output(self.student, loss.student_layer_name)
            if teacher_tensor is None or student_tensor is None:
                raise ValueError(
                    f"{type(loss).__name__} learns an adapter from the tapped "
                    "shapes, which needs Functional or Sequential models."
                )
            adapter, pool = adapters_lib.build_adapter(
                teacher_tensor.shape,
                student_tensor.shape,
                batch_norm=self.adapter_batch_norm,
                name=f"adapter_{index}",
            )
            self.adapters.append(adapter)
            self._teacher_pools.append(pool)

    # ------------------------------------------------------------------
    # Compile: the keras.distillation form and the keras.io form.

    def compile(
        self,
        optimizer="adam",
        loss=None,
        metrics=None,
        student_loss_fn=None,
        distillation_loss_fn=None,
        alpha=None,
        temperature=None,
        **kwargs,
    ):
        """Configures training.

        Two forms are accepted:

        - `keras.distillation`: `compile(optimizer, loss, metrics)` where
          `loss` is the student's loss on the true labels.
        - keras.io example: `compile(optimizer, metrics, student_loss_fn,
          distillation_loss_fn, alpha, temperature)`: `alpha` is the
          student-loss weight, and the distillation loss becomes
          `LogitsDistillation(temperature, loss=distillation_loss_fn)`.

        The crossentropy names (`"sparse_categorical_crossentropy"`,
        `"categorical_crossentropy"`) are applied to the student's logits and
        accept integer or one-hot labels.

        Args:
            optimizer: The optimizer for the student (and adapters).
            loss: The student's loss on the true labels.
            metrics: Metrics computed on the student's outputs.
            student_loss_fn: keras.io form of `loss`.
            distillation_loss_fn: keras.io form: the divergence between the
                softened distributions (e.g. `keras.losses.KLDivergence()`).
            alpha: keras.io form of `student_loss_weight`.
            temperature: keras.io form: the softening temperature.
            **kwargs: Passed to `keras.Model.compile` (`jit_compile`,
                `steps_per_execution`, ...).
        """
        if student_loss_fn is not None:
            if loss is not None:
                raise ValueError(
                    "Pass the student's loss as `loss` or as `student_loss_fn`, not both."
                )
            loss = student_loss_fn
        if alpha is not None:
            check_unit_interval("alpha", alpha)
            self.student_loss_weight = float(alpha)
        if distillation_loss_fn is not None or temperature is not None:
            if temperature is not None:
                check_positive("temperature", temperature)
            self._set_distillation_losses(
                losses_lib.LogitsDistillation(
                    temperature=3.0 if temperature is None else temperature,
                    loss=distillation_loss_fn or "kl_divergence",
                ),
                None,
            )
        if not self.distillation_losses:
            raise ValueError(
                "'distillation_losses' cannot be `None`. Provide a "
                "distillation loss (e.g., LogitsDistillation or "
                "FeatureDistillation) to the Distiller, or "
                "`distillation_loss_fn` to `compile`."
            )
        if loss is None:
            raise ValueError("'loss' cannot be `None`.")
        if metrics is not None and not isinstance(metrics, (list, tuple, dict)):
            raise ValueError(f"metrics must be a list or tuple, got {type(metrics)}")
        self._student_loss_fn = _resolve_student_loss(loss)
        self._student_loss_config = loss
        self._compile_arguments = {"optimizer": optimizer, "metrics": metrics}
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)

    # ------------------------------------------------------------------
    # Forward passes.

    def call(self, inputs, training=None):
        """Returns the student's outputs.

        `inputs` may be a cached batch's `{"inputs": x, "teacher_outputs":
        {...}}` (Keras builds an unbuilt model by calling it on the first
        batch): the student sees `x`.
        """
        inputs, _ = self._split_inputs(inputs)
        return self.student(inputs, training=training)

    def _split_inputs(self, x):
        if isinstance(x, dict) and set(x) == {INPUTS, TEACHER_OUTPUTS}:
            return x[INPUTS], x[TEACHER_OUTPUTS]
        return x, None

    def teacher_forward(self, x):
        """The teacher's logits and tapped features, `{"logits": ..., name: ...}`.

        With several teachers, `"logits"` is the ensemble's logits, and each
        teacher's own outputs are under `"<teacher>/logits"` and
        `"<teacher>/<layer>"` (see `teacher_output_key`). Each teacher runs
        once, in inference mode.
        """
        if not self.has_several_teachers:
            if self._teacher_taps is not None:
                outputs = dict(self._teacher_taps(x, training=False))
            else:
                outputs = {taps.LOGITS: self.teacher(x, training=False)}
            outputs[taps.LOGITS] = _as_logits(outputs[taps.LOGITS], self.teacher_outputs)
            return {k: tf.stop_gradient(v) for k, v in outputs.items()}
        outputs = {}
        for (teacher_name, model), tapped in zip(self.teachers.items(), self._member_taps):
            if tapped is not None:
                values = dict(tapped(x, training=False))
            else:
                values = {taps.LOGITS: model(x, training=False)}
            values[taps.LOGITS] = _as_logits(values[taps.LOGITS], self.teacher_outputs)
            for layer_name, value in values.items():
                outputs[teacher_output_key(teacher_name, layer_name)] = value
        outputs[taps.LOGITS] = self._ensemble_of(outputs)
        return {k: tf.stop_gradient(v) for k, v in outputs.items()}

    def _ensemble_of(self, outputs):
        return self.teacher.combine(
            [outputs[teacher_output_key(name)] for name in self.teacher.teacher_names]
        )

    def _student_forward(self, x, training):
        if self._student_taps is not None:
            return dict(self._student_taps(x, training=training))
        return {taps.LOGITS: self.student(x, training=training)}

    # ------------------------------------------------------------------
    # Losses.

    def _label_mask(self, logits, sample_weight):
        """Per-position weights for token-level losses, or None."""
        if sample_weight is None or logits.shape.rank is None or logits.shape.rank < 3:
            return None
        sample_weight = tf.convert_to_tensor(sample_weight)
        if sample_weight.shape.rank == logits.shape.rank and sample_weight.shape[-1] == 1:
            # `[batch, time, 1]`, as Keras accepts it: the same mask.
            sample_weight = tf.squeeze(sample_weight, -1)
        if sample_weight.shape.rank == logits.shape.rank - 1:
            return sample_weight
        return None

    def _example_weights(self, sample_weight, mask):
        if sample_weight is None or mask is not None:
            return None
        sample_weight = tf.cast(sample_weight, tf.float32)
        if sample_weight.shape.rank and sample_weight.shape.rank > 1:
            sample_weight = tf.reshape(sample_weight, [tf.shape(sample_weight)[0], -1])
            sample_weight = tf.reduce_mean(sample_weight, axis=-1)
        return sample_weight

    def _distillation_values(self, teacher_outputs, student_outputs, y, mask, training=True):
        """Per-example weighted sum of the distillation losses."""
        total = None
        for index, loss in enumerate(self.distillation_losses):
            teacher_value = teacher_outputs[self._teacher_keys[index]]
            student_value = student_outputs[loss.student_layer_name or taps.LOGITS]
            if self.adapters and self.adapters[index] is not None:
                student_value = self.adapters[index](student_value, training=training)
                if self._teacher_pools[index] is not None:
                    teacher_value = self._teacher_pools[index](teacher_value)
            # As keras.distillation does: a clear error (at trace time, before
            # the first step) rather than a shape error deep inside the loss.
            loss.validate_outputs(teacher_value, student_value)
            kwargs = {"mask": mask}
            if getattr(loss, "needs_labels", False):
                kwargs["labels"] = y
            values = loss(teacher_value, student_value, **kwargs)
            values = tf.cast(values, tf.float32) * self.distillation_loss_weights[index]
            total = values if total is None else total + values
        return total

    def _loss_terms(self, y, teacher_outputs, student_outputs, sample_weight, training=True):
        """Returns the replica-scaled total to differentiate, and the
        `(total, student, distillation)` batch means."""
        logits = student_outputs[taps.LOGITS]
        mask = self._label_mask(logits, sample_weight)
        example_weights = self._example_weights(sample_weight, mask)
        alpha = self.student_loss_weight
        # Evaluation reports the student's loss even when α = 0: it is what
        # `evaluate` (and `val_loss`) measure.
        if y is not None and (alpha > 0.0 or not training):
            student_values = reduce_per_example(
                tf.cast(self._student_loss_fn(y, logits), tf.float32), mask
            )
        else:
            student_values = tf.zeros([tf.shape(logits)[0]], tf.float32)
        distillation_values = self._distillation_values(
            teacher_outputs, student_outputs, y, mask, training=training
        )
        total_values = alpha * student_values + (1.0 - alpha) * distillation_values
        # Averaged over the global batch: under tf.distribute each replica's
        # gradients are summed, so each replica divides by the global size.
        scaled_total = tf.nn.compute_average_loss(total_values, sample_weight=example_weights)
        means = [
            tf.nn.compute_average_loss(values, sample_weight=example_weights)
            for values in (total_values, student_values, distillation_values)
        ]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return scaled_total, [m * replicas for m in means]

    # ------------------------------------------------------------------
    # Steps.

    def _teacher_outputs(self, x, cached_teacher_outputs):
        if cached_teacher_outputs is None:
            return self.teacher_forward(x)
        outputs = dict(cached_teacher_outputs)
        if self.has_several_teachers and all(
            teacher_output_key(name) in outputs for name in self.teacher.teacher_names
        ):
            # Re-formed from each teacher's logits: a cache stays valid when
            # `teacher_weights` or `ensemble` change.
            outputs[taps.LOGITS] = self._ensemble_of(outputs)
        missing = [key for key in dict.fromkeys(self._teacher_keys) if key not in outputs]
        if missing:
            raise ValueError(
                f"The cached teacher outputs lack {missing}, which the "
                "distillation losses read. Received keys: "
                f"{sorted(cached_teacher_outputs)}. Cache the outputs of this "
                "Distiller's `teacher_forward`."
            )
        return {k: tf.stop_gradient(v) for k, v in outputs.items()}

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, cached_teacher_outputs = self._split_inputs(x)
        teacher_outputs = self._teacher_outputs(x, cached_teacher_outputs)
        with tf.GradientTape() as tape:
            student_outputs = self._student_forward(x, training=True)
            loss, (total, student_loss, distillation_loss) = self._loss_terms(
                y, teacher_outputs, student_outputs, sample_weight
            )
            if self.student.losses:
                regularization = tf.add_n(
                    [tf.cast(value, tf.float32) for value in self.student.losses]
                )
                loss += tf.nn.scale_regularization_loss(regularization)
                total += regularization
            if not LEGACY_KERAS:
                loss = self.optimizer.scale_loss(loss)
        # Read after the forward pass: an unbuilt student (subclassed, first
        # step) creates its variables in it, and the tape watches them.
        trainable = self.trainable_variables
        if LEGACY_KERAS:
            self.optimizer.minimize(loss, trainable, tape=tape)
        else:
            gradients = tape.gradient(loss, trainable)
            self.optimizer.apply_gradients(zip(gradients, trainable))
        return self._update_metrics(
            x,
            y,
            student_outputs[taps.LOGITS],
            sample_weight,
            total,
            student_loss,
            distillation_loss,
        )

    def test_step(self, data):
        """Evaluates the student: `loss` is its loss on the labels.

        `student_loss`, `distillation_loss` and `total_loss` are reported too
        (as `keras.distillation` does, so `val_total_loss` exists), from one
        teacher and one student pass in inference mode.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, cached_teacher_outputs = self._split_inputs(x)
        teacher_outputs = self._teacher_outputs(x, cached_teacher_outputs)
        student_outputs = self._student_forward(x, training=False)
        _, (total, student_loss, distillation_loss) = self._loss_terms(
            y, teacher_outputs, student_outputs, sample_weight, training=False
        )
        return self._update_metrics(
            x,
            y,
            student_outputs[taps.LOGITS],
            sample_weight,
            total,
            student_loss,
            distillation_loss,
            loss_is_student_loss=True,
        )

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        x, _ = self._split_inputs(x)
        return self.student(x, training=False)

    def _update_compiled_metrics(self, y, logits, sample_weight):
        if LEGACY_KERAS:
            self.compiled_metrics.update_state(y, logits, sample_weight)
        elif self._compile_metrics is not None:
            self._compile_metrics.update_state(y, logits, sample_weight)

    def _compiled_metric_results(self):
        if LEGACY_KERAS:
            return {m.name: m.result() for m in self.compiled_metrics.metrics}
        if self._compile_metrics is None:
            return {}
        result = self._compile_metrics.result()
        return dict(result) if isinstance(result, dict) else {}

    def _update_metrics(
        self,
        x,
        y,
        logits,
        sample_weight,
        total,
        student_loss,
        distillation_loss,
        loss_is_student_loss=False,
    ):
        """Updates the trackers; `loss` is the total loss in training and the
        student's loss in evaluation."""
        loss_tracker, loss = (self.total_loss_tracker, total)
        if loss_is_student_loss:
            loss_tracker, loss = (self.student_loss_tracker, student_loss)
        batch = tf.shape(logits)[0]
        self.total_loss_tracker.update_state(total, sample_weight=batch)
        self.student_loss_tracker.update_state(student_loss, sample_weight=batch)
        self.distillation_loss_tracker.update_state(distillation_loss, sample_weight=batch)
        if not LEGACY_KERAS:
            self._loss_tracker.update_state(loss, sample_weight=batch)
        self._update_compiled_metrics(y, logits, sample_weight)
        results = {"loss": loss_tracker.result()}
        results.update(self._compiled_metric_results())
        for tracker in (
            self.student_loss_tracker,
            self.distillation_loss_tracker,
            self.total_loss_tracker,
        ):
            results[tracker.name] = tracker.result()
        return results

    @property
    def metrics(self):
        metrics = [
            self.student_loss_tracker,
            self.distillation_loss_tracker,
            self.total_loss_tracker,
        ]
        if LEGACY_KERAS:
            if self._is_compiled:
                metrics += self.compiled_metrics.metrics
            return metrics
        if self.compiled:
            if self._loss_tracker is not None:
                metrics.insert(0, self._loss_tracker)
            if self._compile_metrics is not None:
                metrics.append(self._compile_metrics)
        return metrics

    # ------------------------------------------------------------------
    # Serialization (for resuming; export `distiller.student` to deploy).

    def get_config(self):
        if self.has_several_teachers:
            # A dict by name (a list's names are its models' names).
            teacher = {
                name: keras.saving.serialize_keras_object(model)
                for name, model in self.teachers.items()
            }
        else:
            teacher = keras.saving.serialize_keras_object(self.teacher)
        config = {
            "name": self.name,
            "teacher": teacher,
            "student": keras.saving.serialize_keras_object(self.student),
            "distillation_losses": [
                keras.saving.serialize_keras_object(loss) for loss in self.distillation_losses
            ],
            "distillation_loss_weights": list(self.distillation_loss_weights),
            "student_loss_weight": self.student_loss_weight,
            "teacher_outputs": self.teacher_outputs,
            "adapter_batch_norm": self.adapter_batch_norm,
        }
        if self.has_several_teachers:
            # Which teacher each loss reads: losses' configs do not hold it.
            config["teacher_weights"] = list(self.teacher.teacher_weights)
            config["ensemble"] = self.teacher.ensemble
            config["distillation_loss_teachers"] = list(self._loss_teachers)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras's deserialization consumes the nested model configs.
        config = copy.deepcopy(config)
        teacher = config["teacher"]
        if isinstance(teacher, dict) and "class_name" not in teacher:
            config["teacher"] = {
                name: keras.saving.deserialize_keras_object(model, custom_objects=custom_objects)
                for name, model in teacher.items()
            }
        elif isinstance(teacher, (list, tuple)):
            config["teacher"] = [
                keras.saving.deserialize_keras_object(model, custom_objects=custom_objects)
                for model in teacher
            ]
        else:
            config["teacher"] = keras.saving.deserialize_keras_object(
                teacher, custom_objects=custom_objects
            )
        config["student"] = keras.saving.deserialize_keras_object(
            config["student"], custom_objects=custom_objects
        )
        loss_teachers = config.pop("distillation_loss_teachers", None)
        config["distillation_losses"] = [
            keras.saving.deserialize_keras_object(loss, custom_objects=custom_objects)
            for loss in config.get("distillation_losses") or []
        ] or None
        if config["distillation_losses"] is None:
            config["distillation_loss_weights"] = None
        elif loss_teachers is not None:
            for loss, teacher_name in zip(config["distillation_losses"], loss_teachers):
                loss.teacher = teacher_name
        return cls(**config)

    def get_compile_config(self):
        if not getattr(self, "_compile_arguments", None):
            return {}
        loss = self._student_loss_config
        if not isinstance(loss, str):
            loss = keras.saving.serialize_keras_object(loss)
        return {
            "optimizer": keras.saving.serialize_keras_object(self.optimizer),
            "loss": loss,
            "metrics": keras.saving.serialize_keras_object(self._compile_arguments["metrics"]),
        }

    def compile_from_config(self, config):
        if not config:
            return
        config = dict(config)
        loss = config["loss"]
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        self.compile(
            optimizer=keras.saving.deserialize_keras_object(config["optimizer"]),
            loss=loss,
            metrics=keras.saving.deserialize_keras_object(config["metrics"]),
        )
        if self.built:
            self.optimizer.build(self.trainable_variables)
