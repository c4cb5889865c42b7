"""The Distiller's view of its teachers: names, and which one each loss reads."""

from tf_distill import teachers as teachers_lib
from tf_distill.teachers import TeacherEnsemble


class DistillerTeachers:
    """Mixed into `Distiller`: its teachers by name and per loss."""

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
