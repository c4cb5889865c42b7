"""The Distiller: a Keras model that trains a student to imitate a teacher.

Its step is the engine's (`tf_distill.distillers.engine`); this module holds
what is the Distiller's own: its teachers and losses (which teacher and
which layer each loss reads, adapters, taps), the loss of one batch, its
config and saving, and its summary.
"""

import contextlib
import copy

from tf_distill import batches
from tf_distill import losses as losses_lib
from tf_distill import schedules
from tf_distill import taps
from tf_distill import teachers as teachers_lib
from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.distillers import summary as summary_lib
from tf_distill.distillers.engine import LOSS
from tf_distill.distillers.engine import DistillerEngine
from tf_distill.distillers.engine import LossTerms
from tf_distill.distillers.engine import average_loss
from tf_distill.distillers.engine import regularization_loss
from tf_distill.language import alignment as alignment_lib
from tf_distill.language import models as language_models
from tf_distill.language.heads import LMHeadSplit
from tf_distill.language.heads import head_outputs_stop_gradient
from tf_distill.losses import labels as labels_lib
from tf_distill.losses.base import call_arguments
from tf_distill.losses.lm_head import HeadOutputs
from tf_distill.losses.lm_head import chunked_head_crossentropy
from tf_distill.schedules import Schedule
from tf_distill.schedules import can_be_positive
from tf_distill.schedules import check_loss_weight
from tf_distill.schedules import check_loss_weights
from tf_distill.schedules import scheduled
from tf_distill.teachers import adapters as adapters_lib
from tf_distill.teachers.ensemble import TeacherEnsemble
from tf_distill.validation import check_positive
from tf_distill.validation import check_unit_interval

# What `fit` and `evaluate` report beside `loss`, and which value each reads:
# `total_loss` equals `loss`, as in `keras.distillation`.
LOSS_TERMS = {
    "student_loss": "student_loss",
    "distillation_loss": "distillation_loss",
    "total_loss": LOSS,
}


@register_serializable()
class Distiller(DistillerEngine):
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

    **What `fit` and `evaluate` report.** `loss` (and so `val_loss`) is the
    total objective above, plus the student's regularization losses, in
    training and in evaluation alike, as in `keras.distillation`;
    `total_loss` equals it. `student_loss` is the student's loss on the
    labels alone (reported by `evaluate` even when α = 0), and
    `distillation_loss` the weighted distillation term. Monitor
    `val_student_loss` to stop on the label loss, `val_loss` for the
    objective, `val_accuracy` (with `metrics=["accuracy"]`) for the
    student's accuracy.

    **Unlabeled data.** `fit(x)` (or a data set yielding `x` alone) trains on
    the distillation losses only: the student's label loss is then 0. A
    sparse label of -1 (`tf_distill.losses.labels.UNLABELED`) marks one
    unlabeled example: it is distilled, adds 0 to the label loss and counts
    in no metric.

    **Several teachers.** `teacher` may be a list of models (named by their
    `name`) or a dict `{name: model}`. Each teacher is frozen and runs once
    per step. A distillation loss reads the teacher its `teacher` names (a
    name or an index: `LogitsDistillation(4.0, teacher="resnet")`, or
    `"teacher": "resnet"` in a loss's config dict; see
    `tf_distill.teachers.loss_teacher`); a loss that names none reads the
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
        distillation_loss_weights: One weight per distillation loss, a
            number or a schedule (`tf_distill.schedules`). Defaults to 1 each.
        student_loss_weight: `α` in [0, 1], the weight of the student's loss
            on the true labels, or a schedule within [0, 1]. Defaults to 0.5.
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
        teacher_preprocessing: A Keras layer or a function applied to the
            batch's inputs before the teacher (or each teacher) sees them,
            traced into the step: a teacher at another resolution
            (`keras.layers.Resizing(224, 224)`) or with its own
            normalization. The student sees the inputs as given.
        name: The model's name.

    Raises:
        ValueError: for a teacher or student that is not a Keras model, a
            softmax output given as logits, outputs of different shapes
            (naming the teacher), an unknown layer or teacher name, or
            invalid weights.

    Example:

    ```python
    distiller = tf_distill.Distiller(
        teacher=teacher, student=student, student_loss_weight=0.1,
        distillation_losses=tf_distill.LogitsDistillation(temperature=4.0))
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    distiller.fit(x_train, y_train, epochs=5)
    distiller.student.save("student.keras")
    ```

    Several teachers, one of them also guiding a feature:

    ```python
    hint = tf_distill.FeatureDistillation(
        "mse", "block_3", "student_block_3", teacher="resnet")
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
        teacher_preprocessing=None,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        teacher = teachers_lib.as_teacher(teacher, teacher_weights, ensemble, teacher_outputs)
        if not isinstance(student, keras.Model):
            raise ValueError(
                "`student` must be a keras.Model. Received: "
                f"student={student!r} of type {type(student).__name__}"
            )
        if teachers_lib.applies_softmax(student):
            raise ValueError(
                f"The student {student.name!r} ends with a softmax. A student "
                "must output logits (apply the softmax at inference instead)."
            )
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False
        for _, model in teachers_lib.members(teacher):
            model.trainable = False
        self.student_loss_weight = check_loss_weight(student_loss_weight)
        self.teacher_outputs = teacher_outputs
        self.adapter_batch_norm = bool(adapter_batch_norm)
        self.teacher_preprocessing = teachers_lib.check_preprocessing(teacher_preprocessing)
        self._set_distillation_losses(distillation_losses, distillation_loss_weights)
        self.track_loss_terms(LOSS_TERMS)
        if getattr(student, "built", False) and getattr(teacher, "built", False):
            self.built = True

    # ------------------------------------------------------------------
    # Teachers, losses, taps and adapters.

    @property
    def has_several_teachers(self):
        """Whether `teacher` was given as a list or dict of models."""
        return isinstance(self.teacher, TeacherEnsemble)

    @property
    def teachers(self):
        """The teachers by name, `{name: model}` (one entry for one teacher)."""
        return dict(teachers_lib.members(self.teacher))

    @property
    def loss_teachers(self):
        """For each distillation loss, the name of the teacher it reads, or
        `None` for the ensemble's logits (or the only teacher)."""
        return list(self._loss_teachers)

    @property
    def teacher_pools(self):
        """For each distillation loss, the pooling layer applied to the
        teacher's feature maps before its adapter's output is compared with
        them (when the teacher's maps are the larger), or `None`."""
        return list(self._teacher_pools)

    def input_models(self):
        return [self.student, *self.teachers.values()]

    def _set_distillation_losses(self, distillation_losses, weights):
        if distillation_losses is None:
            distillation_losses, weights = [], []
        elif not isinstance(distillation_losses, (list, tuple)):
            distillation_losses = [distillation_losses]
        elif len(distillation_losses) == 0:
            raise ValueError(
                "`distillation_losses` must hold at least one loss. Received: "
                "distillation_losses=[]"
            )
        resolved = [losses_lib.get(loss) for loss in distillation_losses]
        # Whether a teacher tokenizes text otherwise than the student (with
        # a cross-tokenizer loss): its batches must carry the teacher's tokens.
        # Checked before the logits' shapes, whose message would not say why.
        self.tokenizers_differ = language_models.check_causal_lms(
            self.teachers, self.student, resolved)
        weights = check_loss_weights(weights, len(resolved))
        names = list(self.teachers)
        loss_teachers = [
            teachers_lib.loss_teacher(loss, names, several=self.has_several_teachers, index=i)
            for i, loss in enumerate(resolved)
        ]
        reading = [teachers_lib.reading_model(self.teacher, name) for name in loss_teachers]
        # An unbuilt Sequential to tap is built on the other model's inputs.
        tapped_models = [m for loss, m in zip(resolved, reading) if loss.teacher_layer_name]
        tapped_models += [self.student] if any(x.student_layer_name for x in resolved) else []
        taps.build_on_inputs_of(tapped_models, [self.student, *self.teachers.values()])
        for loss, teacher_name in zip(resolved, loss_teachers):
            teacher = self.teacher if teacher_name is None else self.teachers[teacher_name]
            loss.validate_model_compatibility(teacher, self.student)
        self.distillation_losses = resolved
        self.distillation_loss_weights = weights
        self._loss_teachers = loss_teachers
        self._teacher_keys = [
            teachers_lib.loss_teacher_key(teacher_name, loss.teacher_layer_name)
            for loss, teacher_name in zip(resolved, loss_teachers)
        ]
        tapped = [key for loss, key in zip(resolved, self._teacher_keys) if loss.teacher_layer_name]
        self._teacher_forward = teachers_lib.TeacherForward(
            self.teacher,
            list(dict.fromkeys(tapped)),
            self.teacher_outputs,
            preprocessing=self.teacher_preprocessing,
        )
        self._student_taps = taps.tap_model(
            self.student, [loss.student_layer_name for loss in resolved], role="student"
        )
        teachers_lib.check_logit_shapes(self.teacher, self.student, resolved, loss_teachers)
        self.adapters, self._teacher_pools = adapters_lib.build_loss_adapters(
            resolved, reading, self.student, batch_norm=self.adapter_batch_norm
        )
        # Built by each loss, at the latest in validate_model_compatibility.
        self.loss_layers = [layer for loss in resolved for layer in loss.layers]
        self._head_splits = self._split_heads(resolved)

    def _split_heads(self, resolved):
        """`(teacher split, student split, chunk size)` when the losses apply
        the LM heads themselves (`ChunkedHeadDistillation`), else `None`."""
        applying = [bool(getattr(loss, "applies_head", False)) for loss in resolved]
        if not any(applying):
            return None
        if not all(applying):
            raise ValueError(
                "A loss that applies the LM head in chunks (ChunkedHeadDistillation) "
                "reads hidden states, not logits: it must be the only kind of "
                f"distillation loss. Received: distillation_losses={resolved!r}"
            )
        if self.has_several_teachers:
            raise ValueError(
                "A loss that applies the LM head in chunks reads one teacher. Received: "
                f"{len(self.teachers)} teachers {list(self.teachers)}"
            )
        if self.teacher_outputs != "logits":
            raise ValueError(
                "A loss that applies the LM head in chunks reads a teacher that outputs "
                f"logits. Received: teacher_outputs={self.teacher_outputs!r}"
            )
        student = LMHeadSplit(self.student, "student")
        return LMHeadSplit(self.teacher, "teacher"), student, resolved[0].chunk_size

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

        **Crossentropy names mean "from logits".** A student outputs logits,
        so `"sparse_categorical_crossentropy"` and
        `"categorical_crossentropy"` (given as names) are applied to logits
        here: both are `tf_distill.losses.crossentropy_from_logits`, with
        integer or one-hot labels. In Keras (and `keras.distillation`) the
        same strings mean probabilities; with a logit student such a
        `keras.distillation` run trains to about chance accuracy, while here
        it works. A `keras.losses.Loss` object keeps its own `from_logits`
        (`from_logits=False` is warned about).

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
        if self._head_splits is not None:
            _check_head_compile(loss, metrics)
        if loss is not None and metrics is not None and not isinstance(
            metrics, (list, tuple, dict)
        ):
            raise ValueError(f"metrics must be a list or tuple, got {type(metrics)}")
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    # ------------------------------------------------------------------
    # Forward passes.

    def call(self, inputs, training=None):
        """Returns the student's outputs.

        `inputs` may be a cached batch's `{"inputs": x, "teacher_outputs":
        {...}}` (Keras builds an unbuilt model by calling it on the first
        batch): the student sees `x`.
        """
        inputs, _, _ = batches.split_inputs(inputs)
        return self.student(inputs, training=training)

    def teacher_forward(self, x):
        """The teacher's logits and tapped features, `{"logits": ..., name: ...}`.

        With several teachers, `"logits"` is the ensemble's logits, and each
        teacher's own outputs are under `"<teacher>/logits"` and
        `"<teacher>/<layer>"` (see `teacher_output_key`). Each teacher runs
        once, in inference mode (see `tf_distill.teachers.TeacherForward`).
        With a loss that applies the LM head in chunks, `"logits"` holds
        `HeadOutputs`: the teacher's final hidden states and its head.
        """
        if self._head_splits is not None:
            if self.teacher_preprocessing is not None:
                x = self.teacher_preprocessing(x)
            outputs = self._head_splits[0].outputs(x, training=False)
            return {taps.LOGITS: head_outputs_stop_gradient(outputs)}
        return self._teacher_forward(x)

    def student_forward(self, x, training=False):
        """The student's logits and tapped layers, `{"logits": ..., name: ...}`,
        from one pass (through its tap model when layers are tapped)."""
        if self._head_splits is not None:
            # A loss applies the head: the logits, deferred (`HeadOutputs`).
            return {taps.LOGITS: self._head_splits[1].outputs(x, training=training)}
        if self._student_taps is not None:
            return dict(self._student_taps(x, training=training))
        return {taps.LOGITS: self.student(x, training=training)}

    def compute_teacher_outputs(self, batch):
        """The teachers' outputs for `batch`: cached ones completed, or one
        inference pass of each teacher (see `teacher_forward`)."""
        if self._head_splits is not None and (
            batch.teacher_outputs is not None or batch.teacher_inputs is not None
        ):
            raise ValueError(
                "A loss that applies the LM head in chunks reads the teacher's hidden "
                "states on the student's tokens: no cache holds them, and a teacher of "
                "another tokenizer has other positions. Received: a batch with "
                f"{'cached teacher outputs' if batch.teacher_outputs is not None else 'teacher_inputs'}"
            )
        if batch.teacher_outputs is None:
            if batch.teacher_inputs is not None:
                return self.aligned_teacher_forward(batch.teacher_inputs)
            if self.tokenizers_differ:
                raise ValueError(
                    "The teacher's tokenizer differs from the student's: each batch must "
                    "carry the teacher's own tokens and their alignment, as "
                    "`tf_distill.data.load_instructions(..., teacher_tokenizer=...)` "
                    "gives them (`x = {'inputs': ..., 'teacher_inputs': {'token_ids', "
                    "'padding_mask', 'alignment'}}`). Received: x without 'teacher_inputs'"
                )
            return self.teacher_forward(batch.x)
        return self._teacher_forward.complete(batch.teacher_outputs, self._teacher_keys)

    def aligned_teacher_forward(self, teacher_inputs):
        """The teacher's outputs on its own tokens, aligned to the student's
        positions (see `tf_distill.language.alignment`)."""
        inputs = {key: teacher_inputs[key]
                  for key in (language_models.TOKEN_IDS, language_models.PADDING_MASK)}
        language_models.check_sequence_length([self.teacher], inputs)
        return alignment_lib.align_teacher_outputs(
            self.teacher_forward(inputs), teacher_inputs[alignment_lib.ALIGNMENT])

    # ------------------------------------------------------------------
    # The loss of one batch.

    def distillation_values(self, teacher_outputs, student_outputs, y, mask, training, indices):
        """Per-example weighted sum of the distillation losses."""
        total = None
        for index, loss in enumerate(self.distillation_losses):
            teacher_value = teacher_outputs[self._teacher_keys[index]]
            student_value = student_outputs[loss.student_layer_name or taps.LOGITS]
            if self.adapters[index] is not None:
                student_value = self.adapters[index](student_value, training=training)
                if self._teacher_pools[index] is not None:
                    teacher_value = self._teacher_pools[index](teacher_value)
            # As keras.distillation does: a clear error (at trace time, before
            # the first step) rather than a shape error deep inside the loss.
            loss.validate_outputs(teacher_value, student_value)
            kwargs = call_arguments(loss, labels=y, example_indices=indices, training=training)
            values = loss(teacher_value, student_value, mask=mask, **kwargs)
            values = tf.cast(values, tf.float32) * scheduled(self.distillation_loss_weights[index])
            total = values if total is None else total + values
        return total

    def example_weights(self, sample_weight, mask):
        """Hook: each example's weight in the batch mean, `[batch]`, or `None`.

        By default the sample weight per example (`None` when it is a
        `[batch, time]` mask of positions: each example is the mean over its
        positions, and examples weigh alike). The on-policy distiller can
        weigh examples by their count of positions instead (TRL's token-level
        mean).
        """
        return labels_lib.example_weights(sample_weight, mask)

    def loss_terms(self, batch, teacher_outputs, training):
        """One student pass and its loss:

            α · student_loss + (1 − α) · Σᵢ wᵢ · distillation_lossᵢ

        per example, averaged over the global batch, plus the student's
        regularization losses (as Keras's `compute_loss`, in training and
        in evaluation alike).
        """
        x, y, sample_weight = batch.x, batch.y, batch.sample_weight
        student_outputs = self.student_forward(x, training=training)
        logits = student_outputs[taps.LOGITS]
        # Deferred logits (a loss applies the head in chunks): the hidden
        # states have the logits' `[batch, time]` and stand for them here.
        deferred = isinstance(logits, HeadOutputs)
        predictions = logits.hidden_states if deferred else logits
        mask = labels_lib.label_mask(predictions, sample_weight)
        example_weights = self.example_weights(sample_weight, mask)
        alpha = scheduled(self.student_loss_weight)
        if y is not None and not deferred:
            # Refuses labels that fit neither the sparse nor the one-hot form
            # at trace time, before a step (even with α = 0 and no metric).
            labels_lib.label_format(y, logits)
        y, labeled = labels_lib.fill_unlabeled(y, predictions, teacher_outputs[taps.LOGITS])
        if batch.labeled is not None:
            labeled = batch.labeled if labeled is None else labeled * batch.labeled
        # Evaluation reports the student's loss even when α = 0 (as
        # `val_student_loss`). Without labels it is 0.
        if y is not None and (can_be_positive(self.student_loss_weight) or not training):
            if deferred:
                student_values = labels_lib.keep_labeled(
                    chunked_head_crossentropy(y, logits, mask, self._head_splits[2]), labeled
                )
            else:
                student_values = self.label_loss(y, logits, mask, labeled)
        else:
            student_values = tf.zeros([tf.shape(predictions)[0]], tf.float32)
        distillation_values = self.distillation_values(
            teacher_outputs, student_outputs, y,
            alignment_lib.distillation_mask(teacher_outputs, mask), training,
            batch.example_indices,
        )
        total_values = alpha * student_values + (1.0 - alpha) * distillation_values
        loss, total = average_loss(total_values, example_weights)
        _, student_loss = average_loss(student_values, example_weights)
        _, distillation_loss = average_loss(distillation_values, example_weights)
        regularization = regularization_loss([self.student])
        if regularization is not None:
            loss += tf.nn.scale_regularization_loss(regularization)
            total += regularization
        values = {
            LOSS: total,
            "student_loss": student_loss,
            "distillation_loss": distillation_loss,
        }
        return LossTerms(loss, values, logits, labeled)

    # ------------------------------------------------------------------
    # Schedules, config, saving, summary.

    def scheduled_values(self):
        """`{history name: Schedule or function}` for what the history logs.

        A loss's schedules are named after their attribute (`temperature`),
        and a loss may add values of its own with a `logged_values()` method
        returning `{name: function}` (CTKD's learned temperature). A name two
        losses share takes the loss's index: `temperature_0`,
        `temperature_1`. The Distiller's weights are `student_loss_weight`
        and `distillation_loss_weight_<i>`.
        """
        entries = []
        if isinstance(self.student_loss_weight, Schedule):
            entries.append(("student_loss_weight", None, self.student_loss_weight))
        for index, weight in enumerate(self.distillation_loss_weights):
            if isinstance(weight, Schedule):
                entries.append((f"distillation_loss_weight_{index}", None, weight))
        for index, loss in enumerate(self.distillation_losses):
            for attribute, value in vars(loss).items():
                if isinstance(value, Schedule):
                    entries.append((attribute, index, value))
            for name, read in dict(getattr(loss, "logged_values", dict)()).items():
                entries.append((name, index, read))
        counts = {}
        for name, _, _ in entries:
            counts[name] = counts.get(name, 0) + 1
        return {
            (name if index is None or counts[name] == 1 else f"{name}_{index}"): value
            for name, index, value in entries
        }

    def get_config(self):
        config = super().get_config()
        if self.has_several_teachers:
            # A dict by name (a list's names are its models' names).
            teacher = {name: _frozen_config(model) for name, model in self.teachers.items()}
        else:
            teacher = _frozen_config(self.teacher)
        config.update(
            teacher=teacher,
            student=keras.saving.serialize_keras_object(self.student),
            distillation_losses=[
                keras.saving.serialize_keras_object(loss) for loss in self.distillation_losses
            ],
            # A scheduled weight as `{"schedule": ..., ...}` (the constructor reads it).
            distillation_loss_weights=[
                schedules.serialize(weight) for weight in self.distillation_loss_weights
            ],
            student_loss_weight=schedules.serialize(self.student_loss_weight),
            teacher_outputs=self.teacher_outputs,
            adapter_batch_norm=self.adapter_batch_norm,
        )
        if self.teacher_preprocessing is not None:
            config["teacher_preprocessing"] = keras.saving.serialize_keras_object(
                self.teacher_preprocessing
            )
        if self.has_several_teachers:
            config["teacher_weights"] = list(self.teacher.teacher_weights)
            config["ensemble"] = self.teacher.ensemble
            # Which teacher each loss reads, by name (a loss may give an index).
            config["distillation_loss_teachers"] = list(self.loss_teachers)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**_constructor_arguments(config, custom_objects))

    def save(self, *args, **kwargs):
        """`keras.Model.save`, without the teachers' optimizer state."""
        with _teachers_without_optimizers(self):
            return super().save(*args, **kwargs)

    def save_weights(self, *args, **kwargs):
        """`keras.Model.save_weights`, without the teachers' optimizer state."""
        with _teachers_without_optimizers(self):
            return super().save_weights(*args, **kwargs)

    def summary(
        self,
        line_length=None,
        positions=None,
        print_fn=None,
        expand_nested=False,
        show_trainable=False,
        layer_range=None,
    ):
        """Prints the teachers (frozen), the student (trained), the adapters
        and the tapped layers, with parameter counts and the loss.

        Args:
            print_fn: Called with each line; defaults to `print`.
            expand_nested: Also print each model's own Keras summary.
            line_length, positions, show_trainable, layer_range: Passed to
                those models' summaries when `expand_nested`.
        """
        summary_lib.print_summary(
            self, line_length, positions, print_fn, expand_nested, show_trainable, layer_range
        )


def _check_head_compile(loss, metrics):
    """Raises `ValueError` for what a Distiller whose loss applies the LM head
    in chunks cannot do: compiled metrics (they read full logits) and a label
    loss other than the cross-entropy it computes in chunks."""
    if metrics:
        raise ValueError(
            "A Distiller whose loss applies the LM head in chunks never forms the "
            "student's [batch, time, vocab] logits, which compiled metrics read. Evaluate "
            f"the student itself (`distiller.student.evaluate`). Received: metrics={metrics!r}"
        )
    if loss is None:
        return
    crossentropy = labels_lib.resolve_student_loss(loss) is labels_lib.crossentropy_from_logits
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        crossentropy = "crossentropy" in type(loss).__name__.lower() and config.get(
            "from_logits", False
        )
    if not crossentropy:
        raise ValueError(
            "A Distiller whose loss applies the LM head in chunks computes the student's "
            "label loss as the cross-entropy of its logits, in chunks. Expected "
            "loss='sparse_categorical_crossentropy' or a Keras crossentropy with "
            f"from_logits=True. Received: loss={loss!r}"
        )


def _frozen_config(model):
    """A teacher's config without its compile config: a loaded Distiller's
    teachers are frozen, and their optimizers are not saved (see
    `teachers_without_optimizers`)."""
    config = keras.saving.serialize_keras_object(model)
    if isinstance(config, dict):
        config.pop("compile_config", None)
    return config


def _constructor_arguments(config, custom_objects=None):
    """The `Distiller` constructor's arguments from `Distiller.get_config`'s output."""
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
    if config.get("teacher_preprocessing") is not None:
        config["teacher_preprocessing"] = keras.saving.deserialize_keras_object(
            config["teacher_preprocessing"], custom_objects=custom_objects
        )
    loss_teachers = config.pop("distillation_loss_teachers", None)
    config["distillation_losses"] = [
        keras.saving.deserialize_keras_object(loss, custom_objects=custom_objects)
        for loss in config.get("distillation_losses") or []
    ] or None
    if config["distillation_losses"] is None:
        config["distillation_loss_weights"] = None
    elif loss_teachers is not None:
        # Files saved before losses' configs held their `teacher`.
        for loss, teacher_name in zip(config["distillation_losses"], loss_teachers):
            if loss.teacher is None:
                loss.teacher = teacher_name
    return config


@contextlib.contextmanager
def _teachers_without_optimizers(distiller):
    """Hides the teachers' optimizers (a teacher compiled and trained before
    distilling has one) while the Distiller is saved: Keras's saving walks
    every attribute of a sub-model, and a frozen teacher's optimizer state
    is of no use to resuming distillation."""
    hidden = []
    for _, model in teachers_lib.members(distiller.teacher):
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            # Past Keras's attribute tracking: nothing else is to change.
            object.__setattr__(model, "optimizer", None)
            hidden.append((model, optimizer))
    try:
        yield
    finally:
        for model, optimizer in hidden:
            object.__setattr__(model, "optimizer", optimizer)
