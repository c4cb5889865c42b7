"""The Distiller: a Keras model that trains a student to imitate a teacher."""

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


@register_serializable()
class Distiller(keras.Model):
    """Trains a student model to imitate a frozen teacher.

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

    Args:
        teacher: A trained `keras.Model` whose final output is logits. It is
            frozen (`trainable=False`) and never changed by `fit`.
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
            logits). A softmax teacher given as `"logits"` is refused.
        adapter_batch_norm: Follow 1×1-convolution adapters with
            BatchNormalization (FitNets-style regressors).
        name: The model's name.

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
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model):
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
        if teacher_outputs == "logits" and _applies_softmax(teacher):
            raise ValueError(
                f"The teacher {teacher.name!r} ends with a softmax: its outputs "
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
    # Configuration of the losses, taps and adapters.

    def _set_distillation_losses(self, distillation_losses, weights):
        if distillation_losses is None:
            self.distillation_losses = []
            self.distillation_loss_weights = []
            self._teacher_taps = self._student_taps = None
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
        resolved = [losses_lib.get(loss) for loss in distillation_losses]
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
        for loss in resolved:
            loss.validate_model_compatibility(self.teacher, self.student)
        self.distillation_losses = resolved
        self.distillation_loss_weights = [float(w) for w in weights]
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
        uses_logits = any(
            loss.teacher_layer_name is None and loss.student_layer_name is None
            for loss in self.distillation_losses
        )
        if not uses_logits:
            return
        if not (taps.is_symbolic(self.teacher) and taps.is_symbolic(self.student)):
            return
        t_shape = tuple(self.teacher.outputs[0].shape)
        s_shape = tuple(self.student.outputs[0].shape)
        if len(t_shape) != len(s_shape) or any(
            a is not None and b is not None and a != b for a, b in zip(t_shape, s_shape)
        ):
            raise ValueError(
                "Teacher and student outputs must have the same shape to be "
                f"distilled. Received: teacher output shape {t_shape} and "
                f"student output shape {s_shape}."
            )

    def _build_adapters(self):
        self.adapters = []
        self._teacher_pools = []
        for index, loss in enumerate(self.distillation_losses):
            if not loss.needs_adapter:
                self.adapters.append(None)
                self._teacher_pools.append(None)
                continue
            teacher_tensor = self._symbolic_output(self.teacher, loss.teacher_layer_name)
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
        """Returns the student's outputs."""
        return self.student(inputs, training=training)

    def _split_inputs(self, x):
        if isinstance(x, dict) and set(x) == {INPUTS, TEACHER_OUTPUTS}:
            return x[INPUTS], x[TEACHER_OUTPUTS]
        return x, None

    def teacher_forward(self, x):
        """The teacher's logits and tapped features, `{"logits": ..., name: ...}`."""
        if self._teacher_taps is not None:
            outputs = dict(self._teacher_taps(x, training=False))
        else:
            outputs = {taps.LOGITS: self.teacher(x, training=False)}
        if self.teacher_outputs == "probabilities":
            probabilities = tf.cast(outputs[taps.LOGITS], tf.float32)
            outputs[taps.LOGITS] = tf.math.log(tf.maximum(probabilities, 1e-12))
        return {k: tf.stop_gradient(v) for k, v in outputs.items()}

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
            teacher_value = teacher_outputs[loss.teacher_layer_name or taps.LOGITS]
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
        return {k: tf.stop_gradient(v) for k, v in cached_teacher_outputs.items()}

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, cached_teacher_outputs = self._split_inputs(x)
        teacher_outputs = self._teacher_outputs(x, cached_teacher_outputs)
        trainable = self.trainable_variables
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
        return {
            "name": self.name,
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "distillation_losses": [
                keras.saving.serialize_keras_object(loss) for loss in self.distillation_losses
            ],
            "distillation_loss_weights": list(self.distillation_loss_weights),
            "student_loss_weight": self.student_loss_weight,
            "teacher_outputs": self.teacher_outputs,
            "adapter_batch_norm": self.adapter_batch_norm,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("teacher", "student"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects
            )
        config["distillation_losses"] = [
            keras.saving.deserialize_keras_object(loss, custom_objects=custom_objects)
            for loss in config.get("distillation_losses") or []
        ] or None
        if config["distillation_losses"] is None:
            config["distillation_loss_weights"] = None
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
