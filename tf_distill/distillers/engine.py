"""The one training, test and predict step of every distiller.

`DistillerEngine` is a `keras.Model` that owns the machinery a distiller
shares with every other: unpacking any kind of batch (`tf_distill.batches`),
loss scaling and the gradient update under Keras 3 and tf_keras, the loss
trackers and compiled metrics, the student's label loss, the compile config,
and the callback that sets schedules during `fit`. A distiller is a variant
that fills in a few public hooks, as a Keras model overrides `compute_loss`
and a KerasHub `CausalLM` overrides `generate_step`:

- `loss_terms(batch, teacher_outputs, training)` (required): one pass of
  the student(s) and the loss, as a `LossTerms`;
- `compute_teacher_outputs(batch)`: the frozen teachers' outputs, computed
  outside the gradient tape (none by default: mutual learning has no
  teacher);
- `prepare_batch(batch, training)`: the batch a step trains on (the
  on-policy distiller samples the student's own continuations here);
- `after_train_step()`: after the optimizer's update (the EMA teacher);
- `metric_targets(batch, terms)`: what the compiled metrics compare;
- `scheduled_values()`: the schedules `fit` sets and logs.

So the step exists once:

    batch = prepare_batch(unpack(data), training)
    teacher_outputs = compute_teacher_outputs(batch)        # no gradient
    with GradientTape: terms = loss_terms(batch, teacher_outputs, training)
    apply the gradients of terms.loss; after_train_step()
    update the trackers with terms.values, the metrics with metric_targets
"""

from typing import Any
from typing import NamedTuple

from tf_distill import batches as batches_lib
from tf_distill import schedules
from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.losses import labels as labels_lib
from tf_distill.losses.base import reduce_per_example

LOSS = "loss"


class LossTerms(NamedTuple):
    """What `DistillerEngine.loss_terms` returns for one batch.

    Attributes:
        loss: The float32 scalar to differentiate, averaged over the global
            batch (under `tf.distribute` each replica divides by the global
            size: see `average_loss`).
        values: `{name: batch mean}`: `"loss"` (the total objective,
            regularization included) and each term the trackers read (see
            `track_loss_terms`); `compute_loss_terms` returns them.
        outputs: The student's predictions for the compiled metrics (a dict
            by output name with several students).
        labeled: A float32 `[batch]` mask of the labeled examples when the
            labels mark unlabeled ones (see `tf_distill.losses.labels`), or
            `None`.
    """

    loss: Any
    values: Any
    outputs: Any
    labeled: Any = None


def average_loss(values, example_weights=None):
    """The loss to differentiate, and the batch mean to report.

    Args:
        values: Per-example float32 values `[batch]`.
        example_weights: Per-example weights `[batch]`, or `None`.

    Returns:
        `(loss, mean)`: `loss` is averaged over the global batch (under
        `tf.distribute` each replica's gradients are summed, so each replica
        divides by the global size); `mean` is this batch's mean.
    """
    loss = tf.nn.compute_average_loss(values, sample_weight=example_weights)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss, replicas * loss


def regularization_loss(models):
    """The sum of the models' regularization losses (float32), or `None`."""
    values = [tf.cast(value, tf.float32) for model in models for value in model.losses]
    return tf.add_n(values) if values else None


class DistillerEngine(keras.Model):
    """The base model of every distiller: one step, filled in by hooks.

    Subclasses call `track_loss_terms(names)` in their constructor, and
    implement `loss_terms`; the other hooks have defaults (see the module's
    docstring). `compile(optimizer, loss, metrics)` resolves the label loss
    (crossentropy names mean "from logits", see
    `tf_distill.losses.labels.resolve_student_loss`), which `label_loss`
    applies.

    **What `fit` and `evaluate` report.** `loss` is `LossTerms.values["loss"]`,
    then the compiled metrics, then every tracked loss term.
    """

    # ------------------------------------------------------------------
    # Set-up: trackers and compile.

    def track_loss_terms(self, names):
        """Creates the loss trackers: `loss`, and a mean for each of `names`.

        Args:
            names: The names of the terms `fit` and `evaluate` report beside
                `loss`, each the mean of `LossTerms.values[name]`; or a dict
                `{reported name: key in LossTerms.values}` (the Distiller
                reports `total_loss`, which is `values["loss"]`).
        """
        if not isinstance(names, dict):
            names = {name: name for name in names}
        self.loss_tracker = keras.metrics.Mean(name=LOSS)
        self.loss_term_trackers = [keras.metrics.Mean(name=name) for name in names]
        self._loss_term_keys = list(names.values())
        self._label_loss_fn = None
        self._label_loss_config = None
        self._compile_arguments = None

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training: the optimizer, the label loss and the metrics.

        Args:
            optimizer: The optimizer of every trainable variable.
            loss: The student's loss on the true labels (crossentropy names
                are applied to logits).
            metrics: Metrics of the student's outputs (`"accuracy"` reads
                the format of each batch's labels, as the label loss does:
                see `tf_distill.losses.labels.resolve_metrics`).
            **kwargs: Passed to `keras.Model.compile` (`jit_compile`,
                `steps_per_execution`, ...).
        """
        if loss is None:
            raise ValueError("'loss' cannot be `None`.")
        self._label_loss_fn = labels_lib.resolve_student_loss(loss)
        self._label_loss_config = loss
        self._compile_arguments = {"optimizer": optimizer, "metrics": metrics}
        super().compile(
            optimizer=optimizer,
            loss=None,
            metrics=labels_lib.resolve_metrics(self.metrics_to_compile(metrics)),
            **kwargs,
        )

    def metrics_to_compile(self, metrics):
        """Hook: the metrics given to `keras.Model.compile` (`metrics` itself)."""
        return metrics

    def get_config(self):
        """The base config every distiller's `get_config` extends: its name
        (and, on Keras 3, `trainable` and `dtype`)."""
        if LEGACY_KERAS:
            # tf_keras's `Model.get_config` of a subclassed model is empty.
            return {"name": self.name}
        config = super().get_config()
        # Keras 3 adds its guesses at the constructor's arguments, which
        # each distiller gives itself.
        return {key: config[key] for key in ("name", "trainable", "dtype") if key in config}

    def get_compile_config(self):
        if not self._compile_arguments:
            return {}
        loss = self._label_loss_config
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

    @property
    def is_compiled_for_distillation(self):
        """Whether `compile` has set the label loss."""
        return self._label_loss_fn is not None

    def label_loss(self, y, logits, mask=None, labeled=None):
        """The label loss per example: `[batch]` float32.

        Args:
            y: The labels.
            logits: The student's logits.
            mask: Positions that count (`[batch, time]`), or `None`.
            labeled: A mask of the labels that count, `[batch]` or per
                position (`[batch, time]`), or `None` (all).
        """
        values = tf.cast(self._label_loss_fn(y, logits), tf.float32)
        if labeled is not None and labeled.shape.rank > 1:
            # Per position: the positions without a label count 0.
            values, labeled = values * labeled, None
        return labels_lib.keep_labeled(reduce_per_example(values, mask), labeled)

    # ------------------------------------------------------------------
    # Hooks.

    def input_models(self):
        """Hook: the models that read a batch's inputs (lengths are checked).

        A method, not a property: Keras's saving walks a model's properties,
        and would save these models a second time under this name.
        """
        return []

    def prepare_batch(self, batch, training):
        """Hook: the `Batch` a step works on (`batch` itself by default)."""
        return batch

    def compute_teacher_outputs(self, batch):
        """Hook: the teachers' outputs on `batch`, or `None` (no teacher)."""
        return None

    def loss_terms(self, batch, teacher_outputs, training):
        """Hook: one pass of the student(s) on `batch`, as `LossTerms`."""
        raise NotImplementedError(f"{type(self).__name__} must implement `loss_terms`.")

    def after_train_step(self):
        """Hook: runs after each optimizer update, inside the compiled step."""

    def metric_targets(self, batch, terms):
        """Hook: `(y, y_pred, sample_weight)` for the compiled metrics.

        Examples marked unlabeled (label -1: `terms.labeled` is 0) count in
        no metric, as in no label loss: they are dropped (Keras's compiled
        metrics would score their placeholder label). A per-position mask
        (`[batch, time]`: the on-policy distiller's sampled continuations,
        which have no labels) weighs the positions: those without a label
        count in no metric, so metrics come from real data only.
        """
        y, y_pred, sample_weight = batch.y, terms.outputs, batch.sample_weight
        if y is not None and terms.labeled is not None and terms.labeled.shape.rank == 2:
            labeled = tf.cast(terms.labeled, tf.float32)
            if sample_weight is None:
                return y, y_pred, labeled
            return y, y_pred, tf.cast(sample_weight, tf.float32) * labeled
        if y is None or terms.labeled is None or terms.labeled.shape.rank != 1:
            return y, y_pred, sample_weight
        keep = terms.labeled > 0
        y, y_pred = tf.nest.map_structure(lambda value: tf.boolean_mask(value, keep), (y, y_pred))
        if sample_weight is not None:
            sample_weight = tf.boolean_mask(sample_weight, keep)
        return y, y_pred, sample_weight

    def scheduled_values(self):
        """Hook: `{history name: Schedule or function}` that `fit` sets and logs."""
        return {}

    # ------------------------------------------------------------------
    # The steps.

    def unpack(self, data, training=False):
        """Any batch `fit`, `evaluate` or the user gives, as the step reads it."""
        return self.prepare_batch(batches_lib.unpack(data, self.input_models()), training)

    def compute_loss_terms(self, x, y=None, sample_weight=None, training=False):
        """The loss and its terms on one batch, as `fit` and `evaluate` see them.

        Args:
            x: A batch of inputs (or `{"inputs": x, ...}` with the teacher's
                outputs or example indices: see `tf_distill.batches`).
            y: The true labels, or `None`.
            sample_weight: Per-example weights, or a `[batch, time]` mask
                for token-level losses.
            training: Run the student in training mode, as a `fit` step does
                (`False`: as `evaluate` does). Teachers always run in
                inference mode.

        Returns:
            `{"loss": ..., term: ...}`: float32 scalars, batch means, the
            student's regularization losses included in `loss`.

        Raises:
            RuntimeError: if the model is not compiled.
        """
        if not self.is_compiled_for_distillation:
            raise RuntimeError("Call `compile` before `compute_loss_terms`.")
        batch = batches_lib.unpack((x, y, sample_weight))
        terms = self.loss_terms(batch, self.compute_teacher_outputs(batch), training)
        return dict(terms.values)

    def train_step(self, data):
        batch = self.unpack(data, training=True)
        teacher_outputs = self.compute_teacher_outputs(batch)
        with tf.GradientTape() as tape:
            terms = self.loss_terms(batch, teacher_outputs, True)
            loss = terms.loss if LEGACY_KERAS else self.optimizer.scale_loss(terms.loss)
        # Read after the forward pass: an unbuilt student (subclassed, first
        # step) creates its variables in it, and the tape watches them.
        trainable = self.trainable_variables
        if LEGACY_KERAS:
            self.optimizer.minimize(loss, trainable, tape=tape)
        else:
            gradients = tape.gradient(loss, trainable)
            self.optimizer.apply_gradients(zip(gradients, trainable))
        self.after_train_step()
        return self.update_metrics(batch, terms)

    def test_step(self, data):
        batch = self.unpack(data)
        terms = self.loss_terms(batch, self.compute_teacher_outputs(batch), False)
        return self.update_metrics(batch, terms)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.call(batches_lib.split_inputs(x)[0], training=False)

    # ------------------------------------------------------------------
    # Metrics.

    def update_metrics(self, batch, terms):
        """Updates the trackers and compiled metrics; returns the logs.

        `loss` first, then the compiled metrics (only with labels: a `fit`
        or `evaluate` sees labels in every batch or none), then each loss
        term.
        """
        size = tf.shape(tf.nest.flatten(terms.outputs)[0])[0]
        self.loss_tracker.update_state(terms.values[LOSS], sample_weight=size)
        for tracker, key in zip(self.loss_term_trackers, self._loss_term_keys):
            tracker.update_state(terms.values[key], sample_weight=size)
        results = {LOSS: self.loss_tracker.result()}
        y, y_pred, sample_weight = self.metric_targets(batch, terms)
        if y is not None:
            results.update(self.compiled_metric_results(y, y_pred, sample_weight))
        for tracker in self.loss_term_trackers:
            results[tracker.name] = tracker.result()
        return results

    def compiled_metric_results(self, y, y_pred, sample_weight=None):
        """Updates the compiled metrics (Keras 3 or tf_keras); their results."""
        if LEGACY_KERAS:
            self.compiled_metrics.update_state(y, y_pred, sample_weight)
            return {m.name: m.result() for m in self.compiled_metrics.metrics}
        if self._compile_metrics is None:
            return {}
        self._compile_metrics.update_state(y, y_pred, sample_weight)
        result = self._compile_metrics.result()
        return dict(result) if isinstance(result, dict) else {}

    @property
    def metrics(self):
        metrics = [self.loss_tracker, *self.loss_term_trackers]
        if LEGACY_KERAS:
            if self._is_compiled:
                metrics += self.compiled_metrics.metrics
            return metrics
        # Unbuilt until it sees labels: none on unlabeled data.
        if self.compiled and self._compile_metrics is not None and self._compile_metrics.built:
            metrics.append(self._compile_metrics)
        return metrics

    # ------------------------------------------------------------------
    # fit sets the schedules.

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, with a callback that sets and logs the schedules."""
        # `callbacks` is `fit`'s sixth positional argument.
        if len(args) > 5:
            args = (*args[:5], self._with_schedule_callback(args[5]), *args[6:])
        else:
            kwargs["callbacks"] = self._with_schedule_callback(kwargs.get("callbacks"))
        return super().fit(*args, **kwargs)

    def _with_schedule_callback(self, callbacks):
        if not self.scheduled_values():
            return callbacks
        # First, so that every other callback (TensorBoard, CSVLogger,
        # EarlyStopping) runs an epoch at its schedules' values and sees them
        # in the epoch's logs.
        callback = schedules.ScheduleCallback()
        if isinstance(callbacks, keras.callbacks.CallbackList):
            callback.set_model(self)
            callbacks.callbacks.insert(0, callback)
            return callbacks
        return [callback, *(callbacks or [])]
