"""Several teachers seen as one: the ensemble and how it combines them.

With several teachers, a `Distiller`'s teacher is a `TeacherEnsemble`; its
logits are `ensemble_logits` of the teachers' logits. Each teacher's own
outputs are keyed `"<teacher>/<layer>"` (`teacher_output_key`).
"""

import math

from tf_distill import taps
from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.validation import check_choice

TEACHER_OUTPUT_KINDS = ("logits", "probabilities")
ENSEMBLE_KINDS = ("average_probabilities", "average_logits")


def check_teacher_outputs(teacher_outputs):
    """Raises unless `teacher_outputs` is `"logits"` or `"probabilities"`."""
    check_choice("teacher_outputs", teacher_outputs, TEACHER_OUTPUT_KINDS)


def check_ensemble(ensemble):
    """Raises unless `ensemble` is one of `ENSEMBLE_KINDS`."""
    check_choice("ensemble", ensemble, ENSEMBLE_KINDS)


def as_logits(outputs, teacher_outputs):
    """A teacher's final outputs as logits (the log of probabilities)."""
    if teacher_outputs == "probabilities":
        probabilities = tf.cast(outputs, tf.float32)
        return tf.math.log(tf.maximum(probabilities, 1e-12))
    return outputs


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
    check_ensemble(ensemble)
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


def named_teachers(teacher):
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
        names, models = named_teachers(teachers)
        check_ensemble(ensemble)
        check_teacher_outputs(teacher_outputs)
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

    def combine_outputs(self, outputs):
        """The ensemble's logits from `{"<teacher>/logits": ...}` outputs."""
        return self.combine([outputs[teacher_output_key(name)] for name in self.teacher_names])

    def call(self, inputs, training=None):
        return self.combine(
            [
                as_logits(model(inputs, training=training), self.teacher_outputs)
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
