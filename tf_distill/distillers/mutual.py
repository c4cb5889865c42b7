"""Deep mutual learning: two or more students teach each other in one `fit`.

Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning" (CVPR 2018). There is
no pretrained teacher: each student learns from the labels and from the
other students' predictions, which are treated as constants in its loss.
"""

import copy

from tf_distill import teachers as teachers_lib
from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.distillers.engine import LOSS
from tf_distill.distillers.engine import DistillerEngine
from tf_distill.distillers.engine import LossTerms
from tf_distill.distillers.engine import average_loss
from tf_distill.distillers.engine import regularization_loss
from tf_distill.losses import labels as labels_lib
from tf_distill.losses.base import static_shape
from tf_distill.losses.soft_labels import LogitsDistillation
from tf_distill.validation import check_positive


def student_key(index):
    """The name under which student `index` is reported: `"student_0"`, ..."""
    return f"student_{index}"


def _check_students(students):
    if isinstance(students, keras.Model) or not isinstance(students, (list, tuple)):
        raise ValueError(
            "`students` must be a list of at least 2 keras.Model instances. "
            f"Received: students={students!r}"
        )
    if len(students) < 2:
        raise ValueError(
            "`students` must hold at least 2 models: mutual learning needs "
            f"peers. Received: {len(students)} model(s)."
        )
    for index, model in enumerate(students):
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"`students[{index}]` must be a keras.Model. Received: "
                f"{model!r} of type {type(model).__name__}"
            )
        if teachers_lib.applies_softmax(model):
            raise ValueError(
                f"`students[{index}]` ({model.name!r}) ends with a softmax. "
                "A student must output logits (apply the softmax at inference "
                "instead)."
            )
    if len({id(model) for model in students}) != len(students):
        raise ValueError(
            "`students` must be distinct models; the same model was given twice."
        )
    shapes = [
        tuple(static_shape(model.outputs[0]))
        for model in students
        if getattr(model, "outputs", None)
    ]
    if len(shapes) == len(students):
        _check_output_shapes(shapes)


def _check_output_shapes(shapes):
    first = tf.TensorShape(shapes[0])
    for index, shape in enumerate(shapes[1:], start=1):
        if not first.is_compatible_with(tf.TensorShape(shape)):
            raise ValueError(
                "Every student must output logits of the same shape. "
                f"Received: students[0] outputs {tuple(shapes[0])} and "
                f"students[{index}] outputs {tuple(shape)}."
            )


@register_serializable()
class MutualDistiller(DistillerEngine):
    """Trains two or more students together, each learning from its peers.

    Deep mutual learning (Zhang et al., CVPR 2018). Each training step runs
    every student once on the batch, and student `i` (of `K`) minimises

        loss_i = CE(y, s_i) + w · 1/(K − 1) · Σ_{j≠i} D(p_j ‖ p_i)

    where `D` is a soft-label divergence of `tf_distill.losses` at
    temperature `T` (by default `T = 1` and the forward KL, as in the
    paper; with `T ≠ 1` it is `T² · KL(softmax(s_j/T) ‖ softmax(s_i/T))`,
    Hinton's scaling) and `w = mutual_loss_weight`. The peers' logits
    `s_j` are constants in `loss_i` (`tf.stop_gradient`): the paper's
    simultaneous update, where all students step at once. One optimizer
    minimises `Σ_i loss_i`; since student `i`'s weights appear only in
    `loss_i`, each student follows its own loss's gradient.

    **What `fit` and `evaluate` report.** `loss` is `Σ_i loss_i` (with the
    students' regularization losses); `student_<i>_loss` is `loss_i`, and
    each compiled metric is reported per student as `student_<i>_<metric>`
    (`student_0_accuracy`, ...).

    **Unlabeled data.** `fit(x)` without labels trains on the mutual term
    alone; a sparse label of -1 (`tf_distill.losses.labels.UNLABELED`)
    marks one unlabeled example, which counts in the mutual term only (and
    in no metric).

    `predict` and `call` return the outputs of student `predict_student`,
    which is also `distiller.student`: save or export it alone to deploy.

    Args:
        students: A list of at least two `keras.Model`s outputting logits
            of the same shape. They may share an architecture (different
            initial weights) or not.
        temperature: Softening temperature `T > 0` of the divergence.
            Defaults to 1 (the paper's).
        divergence: A divergence of `tf_distill.losses.LogitsDistillation`:
            `"kl_divergence"` (default), `"reverse_kl"` or
            `"jensen_shannon"`.
        mutual_loss_weight: `w >= 0`, the weight of the mutual term.
            Defaults to 1 (the paper's).
        predict_student: Index of the student that `call`, `predict` and
            `student` use. Defaults to 0.
        name: The model's name.

    Raises:
        ValueError: for fewer than two students, a student that is not a
            Keras model or ends with a softmax, the same model twice,
            outputs of different shapes, or invalid arguments.

    Example:

    ```python
    mutual = tf_distill.MutualDistiller(students=[student_a, student_b])
    mutual.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"])
    history = mutual.fit(x_train, y_train, epochs=5)
    history.history["student_1_accuracy"]
    mutual.students[1].save("student_b.keras")
    ```
    """

    def __init__(
        self,
        students=None,
        temperature=1.0,
        divergence="kl_divergence",
        mutual_loss_weight=1.0,
        predict_student=0,
        name="mutual_distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        _check_students(students)
        if isinstance(mutual_loss_weight, bool) or not isinstance(
            mutual_loss_weight, (int, float)
        ) or mutual_loss_weight < 0:
            raise ValueError(
                "`mutual_loss_weight` must be a number >= 0. Received: "
                f"mutual_loss_weight={mutual_loss_weight!r}"
            )
        if (
            isinstance(predict_student, bool)
            or not isinstance(predict_student, int)
            or not 0 <= predict_student < len(students)
        ):
            raise ValueError(
                "`predict_student` must be an index into `students`, in "
                f"[0, {len(students) - 1}]. Received: predict_student={predict_student!r}"
            )
        check_positive("temperature", temperature)
        # The divergence is LogitsDistillation's, one of its named ones.
        try:
            self.peer_loss = LogitsDistillation(temperature=temperature, loss=divergence)
        except ValueError:
            self.peer_loss = None
        if not isinstance(divergence, str) or self.peer_loss is None:
            raise ValueError(
                "Invalid value for argument `divergence`. Expected a divergence "
                "name of LogitsDistillation: 'kl_divergence', 'reverse_kl' or "
                f"'jensen_shannon'. Received: divergence={divergence!r}"
            )
        self._students = list(students)
        self.temperature = float(temperature)
        self.divergence = self.peer_loss.divergence
        self.mutual_loss_weight = float(mutual_loss_weight)
        self.predict_student = predict_student
        self.track_loss_terms([f"{student_key(i)}_loss" for i in range(len(students))])
        if all(getattr(model, "built", False) for model in students):
            self.built = True

    @property
    def students(self):
        """The students, in the order given."""
        return list(self._students)

    @property
    def student(self):
        """The student `predict` uses (`students[predict_student]`)."""
        return self._students[self.predict_student]

    # ------------------------------------------------------------------
    # Compile.

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training.

        Args:
            optimizer: One optimizer for all the students (each variable
                keeps its own state).
            loss: The students' loss on the true labels. Crossentropy names
                are applied to logits, as in `Distiller.compile`.
            metrics: A list of metrics, computed for each student and
                reported as `student_<i>_<name>`.
            **kwargs: Passed to `keras.Model.compile`.
        """
        if loss is not None and metrics is not None and not isinstance(metrics, (list, tuple)):
            raise ValueError(
                "`metrics` must be a list or tuple. Received: "
                f"metrics={metrics!r} of type {type(metrics).__name__}"
            )
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def metrics_to_compile(self, metrics):
        """Each student gets its own metric objects (a shared one would
        average the students together), reported as `student_<i>_<name>`."""
        if not metrics:
            return None
        return {
            student_key(i): [
                m if i == 0 or isinstance(m, str) else m.__class__.from_config(m.get_config())
                for m in metrics
            ]
            for i in range(len(self._students))
        }

    # ------------------------------------------------------------------
    # Forward passes and losses.

    def call(self, inputs, training=None):
        """Returns the outputs of `students[predict_student]`."""
        return self.student(inputs, training=training)

    def students_forward(self, x, training=False):
        """Every student's logits on `x`: `{"student_0": ..., ...}`."""
        return {
            student_key(i): model(x, training=training) for i, model in enumerate(self._students)
        }

    def mutual_values(self, logits):
        """Per-example mutual terms `1/(K−1) · Σ_{j≠i} D(p_j ‖ p_i)`, one per student.

        Args:
            logits: The students' logits, a list in the students' order.

        Returns:
            A list of float32 `[batch]` tensors, unweighted.
        """
        constants = [tf.stop_gradient(value) for value in logits]
        values = []
        for i, own in enumerate(logits):
            peers = [
                self.peer_loss(constants[j], own) for j in range(len(logits)) if j != i
            ]
            values.append(tf.add_n(peers) / float(len(peers)))
        return values

    def input_models(self):
        return self.students

    def loss_terms(self, batch, teacher_outputs, training):
        """One pass of each student: `loss` is `Σ_i loss_i` (regularization
        included), `student_<i>_loss` is `loss_i`."""
        outputs = self.students_forward(batch.x, training=training)
        logits = [outputs[student_key(i)] for i in range(len(self._students))]
        _check_output_shapes([tuple(static_shape(value)) for value in logits])
        mask = labels_lib.label_mask(logits[0], batch.sample_weight)
        example_weights = labels_lib.example_weights(batch.sample_weight, mask)
        labels, labeled = labels_lib.fill_unlabeled(batch.y, logits[0], logits[0])
        mutual = self.mutual_values(logits)
        per_student = []
        for own, peer_values in zip(logits, mutual):
            values = self.mutual_loss_weight * peer_values
            if labels is not None:
                values += self.label_loss(labels, own, mask, labeled)
            per_student.append(values)
        loss, total = average_loss(tf.add_n(per_student), example_weights)
        means = [average_loss(values, example_weights)[1] for values in per_student]
        for i, model in enumerate(self._students):
            regularization = regularization_loss([model])
            if regularization is not None:
                loss += tf.nn.scale_regularization_loss(regularization)
                total += regularization
                means[i] += regularization
        values = {LOSS: total}
        values.update({f"{student_key(i)}_loss": mean for i, mean in enumerate(means)})
        return LossTerms(loss, values, outputs, labeled)

    def metric_targets(self, batch, terms):
        """Every student's logits against the labels (by `student_key`);
        unlabeled examples (-1) count in no metric (the engine's default)."""
        y, outputs, sample_weight = super().metric_targets(batch, terms)
        if y is not None:
            y = {key: y for key in outputs}
        return y, outputs, sample_weight

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the compiled metrics of every student (`y_pred`: the
        students' logits by `student_key`, or else recomputed from `x`, as
        when Keras builds the metrics before the first step)."""
        if not isinstance(y_pred, dict):
            y_pred = self.students_forward(x, training=False)
        if y is None:
            return {}
        return self.compiled_metric_results({key: y for key in y_pred}, y_pred, sample_weight)

    # ------------------------------------------------------------------
    # Saving: the students and the settings (export a student alone to deploy).

    def get_config(self):
        return {
            **super().get_config(),
            "students": [keras.saving.serialize_keras_object(m) for m in self._students],
            "temperature": self.temperature,
            "divergence": self.divergence,
            "mutual_loss_weight": self.mutual_loss_weight,
            "predict_student": self.predict_student,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = copy.deepcopy(config)
        config["students"] = [
            keras.saving.deserialize_keras_object(m, custom_objects=custom_objects)
            for m in config["students"]
        ]
        return cls(**config)

