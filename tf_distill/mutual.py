"""Deep mutual learning: two or more students teach each other in one `fit`.

Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning" (CVPR 2018). There is
no pretrained teacher: each student learns from the labels and from the
other students' predictions, which are treated as constants in its loss.
"""

import copy

from tf_distill import teachers as teachers_lib
from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.distiller_config import CompileConfig
from tf_distill.losses import labels as labels_lib
from tf_distill.losses.base import check_positive
from tf_distill.losses.base import reduce_per_example
from tf_distill.losses.base import static_shape
from tf_distill.losses.soft_labels import LogitsDistillation


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
class MutualDistiller(CompileConfig, keras.Model):
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
        self.student_loss_trackers = [
            keras.metrics.Mean(name=f"{student_key(i)}_loss") for i in range(len(students))
        ]
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self._student_loss_fn = None
        self._student_loss_config = None
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
        if loss is None:
            raise ValueError("'loss' cannot be `None`.")
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise ValueError(
                "`metrics` must be a list or tuple. Received: "
                f"metrics={metrics!r} of type {type(metrics).__name__}"
            )
        self._student_loss_fn = labels_lib.resolve_student_loss(loss)
        self._student_loss_config = loss
        self._compile_arguments = {"optimizer": optimizer, "metrics": metrics}
        per_student = None
        if metrics:
            # Each student gets its own metric objects (a shared one would
            # average the students together).
            per_student = {
                student_key(i): [
                    m if i == 0 or isinstance(m, str) else m.__class__.from_config(m.get_config())
                    for m in metrics
                ]
                for i in range(len(self._students))
            }
        super().compile(optimizer=optimizer, loss=None, metrics=per_student, **kwargs)

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

    def _loss_terms(self, x, y, sample_weight, training):
        """One pass of each student: the loss to differentiate, the batch
        means `[total, loss_0, ..., loss_{K-1}]`, the logits by student, and
        the labeled mask (or None)."""
        outputs = self.students_forward(x, training=training)
        logits = [outputs[student_key(i)] for i in range(len(self._students))]
        _check_output_shapes([tuple(static_shape(value)) for value in logits])
        mask = labels_lib.label_mask(logits[0], sample_weight)
        example_weights = labels_lib.example_weights(sample_weight, mask)
        labels, labeled = labels_lib.fill_unlabeled(y, logits[0], logits[0])
        mutual = self.mutual_values(logits)
        per_student = []
        for own, peer_values in zip(logits, mutual):
            values = self.mutual_loss_weight * peer_values
            if labels is not None:
                label_values = reduce_per_example(
                    tf.cast(self._student_loss_fn(labels, own), tf.float32), mask
                )
                values += labels_lib.keep_labeled(label_values, labeled)
            per_student.append(values)
        total_values = tf.add_n(per_student)
        loss = tf.nn.compute_average_loss(total_values, sample_weight=example_weights)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        means = [
            replicas * tf.nn.compute_average_loss(values, sample_weight=example_weights)
            for values in (total_values, *per_student)
        ]
        for i, model in enumerate(self._students):
            if model.losses:
                regularization = tf.add_n([tf.cast(v, tf.float32) for v in model.losses])
                loss += tf.nn.scale_regularization_loss(regularization)
                means[0] += regularization
                means[i + 1] += regularization
        return loss, means, outputs, labeled

    def compute_loss_terms(self, x, y=None, sample_weight=None, training=False):
        """The losses on one batch, as `fit` and `evaluate` report them.

        Returns:
            `{"loss": Σ_i loss_i, "student_0_loss": loss_0, ...}`: float32
            scalars, batch means (regularization included).

        Raises:
            RuntimeError: if the MutualDistiller is not compiled.
        """
        if self._student_loss_fn is None:
            raise RuntimeError("Call `compile` before `compute_loss_terms`.")
        _, means, _, _ = self._loss_terms(x, y, sample_weight, training)
        names = ["loss"] + [tracker.name for tracker in self.student_loss_trackers]
        return dict(zip(names, means))

    # ------------------------------------------------------------------
    # Steps and metrics.

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, means, outputs, labeled = self._loss_terms(x, y, sample_weight, True)
            if not LEGACY_KERAS:
                loss = self.optimizer.scale_loss(loss)
        # Read after the forward pass: an unbuilt student creates its
        # variables in it.
        trainable = self.trainable_variables
        if LEGACY_KERAS:
            self.optimizer.minimize(loss, trainable, tape=tape)
        else:
            gradients = tape.gradient(loss, trainable)
            self.optimizer.apply_gradients(zip(gradients, trainable))
        return self._update_metrics(y, outputs, sample_weight, labeled, means)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, means, outputs, labeled = self._loss_terms(x, y, sample_weight, False)
        return self._update_metrics(y, outputs, sample_weight, labeled, means)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.student(x, training=False)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the compiled metrics of every student (`y_pred`: the
        students' logits by `student_key`, or else recomputed from `x`, as
        when Keras builds the metrics before the first step)."""
        if not isinstance(y_pred, dict):
            y_pred = self.students_forward(x, training=False)
        if y is None:
            return {}
        metrics = self.compiled_metrics if LEGACY_KERAS else self._compile_metrics
        if metrics is None:
            return {}
        metrics.update_state({key: y for key in y_pred}, y_pred, sample_weight)
        if LEGACY_KERAS:
            return {m.name: m.result() for m in metrics.metrics}
        result = metrics.result()
        return dict(result) if isinstance(result, dict) else {}

    def _update_metrics(self, y, outputs, sample_weight, labeled, means):
        batch = tf.shape(outputs[student_key(0)])[0]
        self.total_loss_tracker.update_state(means[0], sample_weight=batch)
        for tracker, value in zip(self.student_loss_trackers, means[1:]):
            tracker.update_state(value, sample_weight=batch)
        results = {"loss": self.total_loss_tracker.result()}
        if y is not None:
            if labeled is not None:
                # Unlabeled examples (-1) count in no metric (Keras's
                # compiled `metrics` ignore sample weights: drop them).
                keep = labeled > 0
                y = tf.boolean_mask(y, keep)
                outputs = {key: tf.boolean_mask(value, keep) for key, value in outputs.items()}
                if sample_weight is not None:
                    sample_weight = tf.boolean_mask(sample_weight, keep)
            results.update(self.compute_metrics(None, y, outputs, sample_weight))
        for tracker in self.student_loss_trackers:
            results[tracker.name] = tracker.result()
        return results

    @property
    def metrics(self):
        metrics = [self.total_loss_tracker, *self.student_loss_trackers]
        if LEGACY_KERAS:
            if self._is_compiled:
                metrics += self.compiled_metrics.metrics
            return metrics
        if self.compiled and self._compile_metrics is not None and self._compile_metrics.built:
            metrics.append(self._compile_metrics)
        return metrics

    # ------------------------------------------------------------------
    # Saving: the students and the settings (export a student alone to deploy).

    def get_config(self):
        return {
            "name": self.name,
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

