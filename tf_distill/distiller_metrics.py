"""The loss trackers and compiled metrics a Distiller reports.

A mixin of `Distiller`: `fit` and `evaluate` report `loss`, the compiled
metrics, and `student_loss`, `distillation_loss` and `total_loss` (as
`keras.distillation` does), under Keras 3 and under legacy tf.keras.
"""

from tf_distill.backend import LEGACY_KERAS
from tf_distill.backend import keras
from tf_distill.backend import tf


class LossMetrics:
    """Mixin: the Distiller's loss trackers and its `metrics`."""

    def _create_loss_trackers(self):
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")

    def _update_metrics(
        self,
        y,
        logits,
        sample_weight,
        total,
        student_loss,
        distillation_loss,
    ):
        """Updates the trackers; `loss` is the total loss, in training and in
        evaluation alike (as in `keras.distillation`). Without labels the
        compiled metrics, which compare predictions with labels, are neither
        updated nor reported (a `fit` or `evaluate` sees labels in every
        batch or none)."""
        loss_tracker, loss = (self.total_loss_tracker, total)
        batch = tf.shape(logits)[0]
        self.total_loss_tracker.update_state(total, sample_weight=batch)
        self.student_loss_tracker.update_state(student_loss, sample_weight=batch)
        self.distillation_loss_tracker.update_state(distillation_loss, sample_weight=batch)
        results = {"loss": loss_tracker.result()}
        if not LEGACY_KERAS:
            self._loss_tracker.update_state(loss, sample_weight=batch)
        if y is not None and LEGACY_KERAS:
            self.compiled_metrics.update_state(y, logits, sample_weight)
            results.update({m.name: m.result() for m in self.compiled_metrics.metrics})
        elif y is not None and self._compile_metrics is not None:
            self._compile_metrics.update_state(y, logits, sample_weight)
            result = self._compile_metrics.result()
            results.update(dict(result) if isinstance(result, dict) else {})
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
            # Unbuilt until it sees labels: none on unlabeled data.
            if self._compile_metrics is not None and self._compile_metrics.built:
                metrics.append(self._compile_metrics)
        return metrics
