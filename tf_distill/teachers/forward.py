"""The teachers' forward pass, and which of their outputs each loss reads.

A `Distiller` has one teacher or a `TeacherEnsemble` of several (see
`tf_distill.teachers.ensemble`). Each
distillation loss reads one teacher's output: the one its `teacher` names
(a name or an index), or, when it names none, the ensemble's logits (or the
only teacher). `loss_teacher` decides which, `tap_names` lists the tapped
outputs, and `TeacherForward` computes them in one inference pass of each
teacher; the `Distiller` and the teacher cache both use these, so a cache
holds exactly what a training step reads.
"""

from tf_distill import losses as losses_lib
from tf_distill import taps
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.teachers.ensemble import TeacherEnsemble
from tf_distill.teachers.ensemble import as_logits
from tf_distill.teachers.ensemble import check_teacher_outputs
from tf_distill.teachers.ensemble import teacher_output_key


def applies_softmax(model):
    """Whether the model's last layer turns logits into probabilities."""
    if isinstance(model, TeacherEnsemble):
        return False  # Its call returns the ensemble's logits.
    if not model.layers:
        return False
    last = model.layers[-1]
    if isinstance(last, keras.Model):
        return applies_softmax(last)
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def as_teacher(teacher, teacher_weights=None, ensemble=None, teacher_outputs="logits"):
    """The `Distiller`'s teacher: the model, or a `TeacherEnsemble` of several.

    Args:
        teacher: A `keras.Model`, or a list or dict of them.
        teacher_weights, ensemble: For several teachers (see
            `TeacherEnsemble`); `ensemble` defaults to
            `"average_probabilities"`.
        teacher_outputs: `"logits"` or `"probabilities"`.

    Raises:
        ValueError: for a teacher that is not a model, `teacher_weights` or
            `ensemble` with one teacher, a softmax teacher given as logits,
            or as `TeacherEnsemble`.
    """
    several = isinstance(teacher, (list, tuple, dict))
    if not several and not isinstance(teacher, keras.Model):
        raise ValueError(
            "`teacher` must be a keras.Model. Received: "
            f"teacher={teacher!r} of type {type(teacher).__name__}"
        )
    check_teacher_outputs(teacher_outputs)
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
    check_teacher_softmax(teacher, teacher_outputs)
    return teacher


def members(teacher):
    """`[(name, model)]`: the teachers of a `TeacherEnsemble`, or the one."""
    if isinstance(teacher, TeacherEnsemble):
        return list(teacher.teachers.items())
    return [(teacher.name, teacher)]


def check_teacher_softmax(teacher, teacher_outputs):
    """Raises if a teacher given as logits ends with a softmax."""
    if teacher_outputs != "logits":
        return
    for teacher_name, model in members(teacher):
        if applies_softmax(model):
            raise ValueError(
                f"The teacher {teacher_name!r} ends with a softmax: its outputs "
                "are probabilities, and distilling them as logits would be "
                "wrong. Remove the softmax, or pass "
                "`teacher_outputs='probabilities'`."
            )


def loss_teacher(loss, teacher_names=None, several=False, index=0):
    """The teacher whose outputs a distillation loss reads.

    Args:
        loss: A `DistillationLoss`; its `teacher` (a name, an index or
            `None`) and `teacher_layer_name` are read.
        teacher_names: The teachers' names, in order; `None` for one teacher
            whose name is not known (then `loss.teacher` is not checked).
        several: Whether the teachers form an ensemble. With one teacher,
            a loss may name it, but it is read as the only teacher.
        index: The loss's position, for error messages.

    Returns:
        The teacher's name, or `None` for the ensemble's logits (or the only
        teacher).

    Raises:
        ValueError: with several teachers, for a loss that reads a layer but
            names no teacher; for a name or an index that is not a teacher's.
    """
    requested = getattr(loss, "teacher", None)
    names = list(teacher_names or [])
    where = f"distillation loss {index} ({type(loss).__name__})"
    if requested is None:
        if several and loss.teacher_layer_name is not None:
            raise ValueError(
                f"The {where} reads the teacher layer "
                f"{loss.teacher_layer_name!r} but does not say of which "
                f"teacher. Set its `teacher` to one of {names}."
            )
        return None
    if teacher_names is None and not several:
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
    return found if several else None


def loss_teacher_key(teacher_name, layer_name=None):
    """Where a loss finds its tensor among the teacher outputs.

    Args:
        teacher_name: What `loss_teacher` returned: a teacher's name, or
            `None` for the ensemble's logits (or the only teacher).
        layer_name: The loss's `teacher_layer_name`.

    Returns:
        `"logits"` or the layer's name for `None`, else
        `teacher_output_key(teacher_name, layer_name)`.
    """
    if teacher_name is None:
        return layer_name or taps.LOGITS
    return teacher_output_key(teacher_name, layer_name)


def tap_names(distillation_losses, teacher_names=None):
    """The teacher outputs, besides the logits, that distillation losses read.

    These are the keys `TeacherForward` (and so a teacher cache) gives next
    to `"logits"`: with one teacher, the tapped layers' names; with several,
    `"<teacher>/<layer>"` (see `teacher_output_key`), the teacher being the
    one a loss names (its `teacher`: a name or an index).

    Args:
        distillation_losses: Losses, registry names or configs (as for the
            `Distiller`), one or a list; `None` for logits only.
        teacher_names: `None` for one teacher (a loss may name it; the
            `Distiller` checks the name), or the names of several teachers,
            in order.

    Returns:
        A list of keys (without `"logits"`, always computed), in the order
        the losses first read them.

    Raises:
        ValueError: as `loss_teacher`.

    Example:

    >>> tap_names([{"name": "kd"},
    ...            {"name": "feature", "teacher": "t2", "loss": "mse",
    ...             "teacher_layer_name": "block_2",
    ...             "student_layer_name": "block_1"}], ["t1", "t2"])
    ['t2/block_2']
    """
    if distillation_losses is None:
        return []
    if not isinstance(distillation_losses, (list, tuple)):
        distillation_losses = [distillation_losses]
    keys = []
    for index, identifier in enumerate(distillation_losses):
        loss = losses_lib.get(identifier)
        if loss.teacher_layer_name is None:
            continue
        teacher_name = loss_teacher(
            loss, teacher_names, several=teacher_names is not None, index=index
        )
        keys.append(loss_teacher_key(teacher_name, loss.teacher_layer_name))
    return list(dict.fromkeys(keys))


def reading_model(teacher, teacher_name):
    """The model whose outputs a loss reading `teacher_name` sees.

    For the ensemble's logits (`teacher_name=None` with several teachers),
    the first teacher of weight > 0: they all share its output shape.
    """
    if not isinstance(teacher, TeacherEnsemble):
        return teacher
    if teacher_name is not None:
        return teacher.teachers[teacher_name]
    weights = dict(zip(teacher.teacher_names, teacher.teacher_weights))
    return next(model for name, model in teacher.teachers.items() if weights[name] > 0)


def check_preprocessing(preprocessing):
    """Returns `preprocessing` if it can prepare a teacher's inputs.

    A Keras layer (`keras.layers.Resizing(224, 224)`, a `Sequential` of
    them) is saved with the Distiller; a plain function works in training
    but not in a saved config. Either is traced into the step, not run
    eagerly.

    Raises:
        ValueError: if it is neither `None`, a Keras layer nor callable.
    """
    if preprocessing is None or isinstance(preprocessing, keras.layers.Layer):
        return preprocessing
    if not callable(preprocessing):
        raise ValueError(
            "`teacher_preprocessing` must be a Keras layer or a function of the "
            "inputs. Received: teacher_preprocessing="
            f"{preprocessing!r} of type {type(preprocessing).__name__}"
        )
    return preprocessing


class TeacherForward:
    """Computes the teacher outputs the distillation losses read.

    Each teacher runs once, in inference mode, every tapped layer read in
    that one pass. The result is `{"logits": ..., "<layer>": ...}` for one
    teacher; for a `TeacherEnsemble`, each teacher's outputs under
    `"<teacher>/logits"` and `"<teacher>/<layer>"`, and the ensemble's
    logits under `"logits"`. `Distiller.teacher_forward` and the teacher
    cache both call it.

    Args:
        teacher: A `keras.Model` or a `TeacherEnsemble`.
        keys: The tapped outputs to compute besides the logits, as
            `tap_names` names them.
        teacher_outputs: `"logits"` or `"probabilities"` (their log is then
            given as logits).
        preprocessing: A Keras layer or function applied to the inputs
            before the teachers see them (see `check_preprocessing`), or
            `None`.
    """

    def __init__(self, teacher, keys=(), teacher_outputs="logits", preprocessing=None):
        check_teacher_outputs(teacher_outputs)
        self.teacher = teacher
        self.preprocessing = check_preprocessing(preprocessing)
        self.teacher_outputs = teacher_outputs
        self.keys = list(keys)
        if isinstance(teacher, TeacherEnsemble):
            # Teacher names hold no "/": the first one ends the name.
            layers = {name: [] for name in teacher.teacher_names}
            for key in self.keys:
                teacher_name, layer_name = key.split("/", 1)
                layers[teacher_name].append(layer_name)
            self._passes = [
                (name, model, taps.tap_model(model, layers[name], role="teacher"))
                for name, model in teacher.teachers.items()
            ]
        else:
            self._passes = [(None, teacher, taps.tap_model(teacher, self.keys, role="teacher"))]

    def __call__(self, x):
        outputs = {}
        if self.preprocessing is not None:
            x = self.preprocessing(x)
        for teacher_name, model, tapped in self._passes:
            if tapped is not None:
                values = dict(tapped(x, training=False))
            else:
                values = {taps.LOGITS: model(x, training=False)}
            values[taps.LOGITS] = as_logits(values[taps.LOGITS], self.teacher_outputs)
            for layer_name, value in values.items():
                outputs[loss_teacher_key(teacher_name, layer_name)] = value
        if isinstance(self.teacher, TeacherEnsemble):
            outputs[taps.LOGITS] = self.teacher.combine_outputs(outputs)
        return {key: tf.stop_gradient(value) for key, value in outputs.items()}

    def complete(self, cached_outputs, keys):
        """Cached teacher outputs, checked to hold `keys`.

        With several teachers, the ensemble's logits are formed anew from
        each teacher's, so a cache stays valid when `teacher_weights` or
        `ensemble` change.

        Raises:
            ValueError: naming the keys the cache lacks.
        """
        outputs = dict(cached_outputs)
        if isinstance(self.teacher, TeacherEnsemble) and all(
            teacher_output_key(name) in outputs for name in self.teacher.teacher_names
        ):
            outputs[taps.LOGITS] = self.teacher.combine_outputs(outputs)
        missing = [key for key in dict.fromkeys(keys) if key not in outputs]
        if missing:
            raise ValueError(
                f"The cached teacher outputs lack {missing}, which the "
                "distillation losses read. Received keys: "
                f"{sorted(cached_outputs)}. Cache the outputs of this "
                "Distiller's `teacher_forward`."
            )
        return {key: tf.stop_gradient(value) for key, value in outputs.items()}


def _compatible(shape, other):
    """Whether two static shapes (tuples, None for unknown) can be equal."""
    return len(shape) == len(other) and all(
        a is None or b is None or a == b for a, b in zip(shape, other)
    )


def check_logit_shapes(teacher, student, distillation_losses, loss_teachers):
    """Raises, naming the teacher, if logits a loss reads cannot be compared
    with the student's (or averaged with each other).

    Args:
        teacher: A `keras.Model` or a `TeacherEnsemble`.
        student: The student `keras.Model`.
        distillation_losses: The resolved losses.
        loss_teachers: What `loss_teacher` returned for each loss.
    """
    readers = [
        teacher_name
        for loss, teacher_name in zip(distillation_losses, loss_teachers)
        if loss.teacher_layer_name is None and loss.student_layer_name is None
        # A cross-tokenizer loss compares logits of different vocabularies.
        and not getattr(loss, "cross_tokenizer", False)
    ]
    if not readers:
        return
    if not isinstance(teacher, TeacherEnsemble):
        checked = [(None, teacher)]
    else:
        # The ensemble reads every teacher of weight > 0.
        names = set(readers)
        if None in names:
            weights = dict(zip(teacher.teacher_names, teacher.teacher_weights))
            names |= {name for name, weight in weights.items() if weight > 0}
        checked = [(name, model) for name, model in teacher.teachers.items() if name in names]
    checked = [(name, model) for name, model in checked if taps.is_symbolic(model)]
    if not checked:
        return
    shapes = [(name, tuple(model.outputs[0].shape)) for name, model in checked]
    reference = None
    if taps.is_symbolic(student):
        reference = ("student", tuple(student.outputs[0].shape))
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
