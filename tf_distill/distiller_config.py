"""A Distiller's config and compile config, as plain data and back.

Kept apart from the `Distiller`: what it saves for resuming training is data
about its teachers, student and losses, not part of a training step. (To
deploy, save or export `distiller.student` alone.)
"""

import contextlib
import copy

from tf_distill import schedules
from tf_distill import teachers as teachers_lib
from tf_distill.backend import keras


def _frozen_teacher_config(model):
    """A teacher's config without its compile config: a loaded Distiller's
    teachers are frozen, and their optimizers are not saved (see
    `teachers_without_optimizers`)."""
    config = keras.saving.serialize_keras_object(model)
    if isinstance(config, dict):
        config.pop("compile_config", None)
    return config


def distiller_config(distiller):
    """The `get_config` of a `Distiller`."""
    if distiller.has_several_teachers:
        # A dict by name (a list's names are its models' names).
        teacher = {
            name: _frozen_teacher_config(model) for name, model in distiller.teachers.items()
        }
    else:
        teacher = _frozen_teacher_config(distiller.teacher)
    config = {
        "name": distiller.name,
        "teacher": teacher,
        "student": keras.saving.serialize_keras_object(distiller.student),
        "distillation_losses": [
            keras.saving.serialize_keras_object(loss) for loss in distiller.distillation_losses
        ],
        # A scheduled weight as `{"schedule": ..., ...}` (the constructor reads it).
        "distillation_loss_weights": [
            schedules.serialize(weight) for weight in distiller.distillation_loss_weights
        ],
        "student_loss_weight": schedules.serialize(distiller.student_loss_weight),
        "teacher_outputs": distiller.teacher_outputs,
        "adapter_batch_norm": distiller.adapter_batch_norm,
    }
    if distiller.teacher_preprocessing is not None:
        config["teacher_preprocessing"] = keras.saving.serialize_keras_object(
            distiller.teacher_preprocessing
        )
    if distiller.has_several_teachers:
        config["teacher_weights"] = list(distiller.teacher.teacher_weights)
        config["ensemble"] = distiller.teacher.ensemble
        # Which teacher each loss reads, by name (a loss may give an index).
        config["distillation_loss_teachers"] = list(distiller.loss_teachers)
    return config


def distiller_arguments(config, custom_objects=None):
    """The `Distiller` constructor's arguments from `distiller_config`'s output."""
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


def compile_config(distiller, student_loss, metrics):
    """The `get_compile_config` of a compiled `Distiller`."""
    if not isinstance(student_loss, str):
        student_loss = keras.saving.serialize_keras_object(student_loss)
    return {
        "optimizer": keras.saving.serialize_keras_object(distiller.optimizer),
        "loss": student_loss,
        "metrics": keras.saving.serialize_keras_object(metrics),
    }


def compile_arguments(config):
    """`compile`'s arguments from `compile_config`'s output."""
    loss = config["loss"]
    if isinstance(loss, dict):
        loss = keras.saving.deserialize_keras_object(loss)
    return {
        "optimizer": keras.saving.deserialize_keras_object(config["optimizer"]),
        "loss": loss,
        "metrics": keras.saving.deserialize_keras_object(config["metrics"]),
    }


@contextlib.contextmanager
def teachers_without_optimizers(distiller):
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


class CompileConfig:
    """Mixin of a model compiled as the Distiller is (`compile(optimizer,
    loss, metrics)`, remembering `_student_loss_config` and
    `_compile_arguments`): its compile config, saved and restored."""

    def get_compile_config(self):
        if not getattr(self, "_compile_arguments", None):
            return {}
        return compile_config(self, self._student_loss_config, self._compile_arguments["metrics"])

    def compile_from_config(self, config):
        if not config:
            return
        self.compile(**compile_arguments(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)


class DistillerSaving(CompileConfig):
    """Mixin of `Distiller`: its config, compile config, and saving without
    the teachers' optimizer state (for resuming; export `distiller.student`
    to deploy)."""

    def get_config(self):
        return distiller_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**distiller_arguments(config, custom_objects))

    def save(self, *args, **kwargs):
        """`keras.Model.save`, without the teachers' optimizer state."""
        with teachers_without_optimizers(self):
            return super().save(*args, **kwargs)

    def save_weights(self, *args, **kwargs):
        """`keras.Model.save_weights`, without the teachers' optimizer state."""
        with teachers_without_optimizers(self):
            return super().save_weights(*args, **kwargs)
