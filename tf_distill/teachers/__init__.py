"""The teacher side of distillation: its forward pass, ensembles and adapters.

- `forward`: which teacher output each loss reads (`loss_teacher`,
  `tap_names`) and `TeacherForward`, one inference pass of each teacher;
- `ensemble`: several teachers as one (`TeacherEnsemble`, `ensemble_logits`);
- `adapters`: the trainable student→teacher projections of feature losses;
- `preprocessing`: a teacher's input preprocessing from safe steps
  (`preprocessing_layers`: resize, repeat channels, rescale).
"""

from tf_distill.teachers.ensemble import ENSEMBLE_KINDS
from tf_distill.teachers.ensemble import TEACHER_OUTPUT_KINDS
from tf_distill.teachers.ensemble import TeacherEnsemble
from tf_distill.teachers.ensemble import as_logits
from tf_distill.teachers.ensemble import check_ensemble
from tf_distill.teachers.ensemble import check_teacher_outputs
from tf_distill.teachers.ensemble import check_teacher_weights
from tf_distill.teachers.ensemble import ensemble_logits
from tf_distill.teachers.ensemble import named_teachers
from tf_distill.teachers.ensemble import teacher_output_key
from tf_distill.teachers.forward import TeacherForward
from tf_distill.teachers.forward import applies_softmax
from tf_distill.teachers.forward import as_teacher
from tf_distill.teachers.forward import check_logit_shapes
from tf_distill.teachers.forward import check_preprocessing
from tf_distill.teachers.forward import check_teacher_softmax
from tf_distill.teachers.forward import loss_teacher
from tf_distill.teachers.forward import loss_teacher_key
from tf_distill.teachers.forward import members
from tf_distill.teachers.forward import reading_model
from tf_distill.teachers.forward import tap_names
from tf_distill.teachers.preprocessing import PREPROCESSING_STEPS
from tf_distill.teachers.preprocessing import RepeatChannels
from tf_distill.teachers.preprocessing import preprocessed_shape
from tf_distill.teachers.preprocessing import preprocessing_layers

__all__ = [
    "ENSEMBLE_KINDS",
    "PREPROCESSING_STEPS",
    "RepeatChannels",
    "TEACHER_OUTPUT_KINDS",
    "TeacherEnsemble",
    "TeacherForward",
    "applies_softmax",
    "as_logits",
    "as_teacher",
    "check_ensemble",
    "check_logit_shapes",
    "check_preprocessing",
    "check_teacher_outputs",
    "check_teacher_softmax",
    "check_teacher_weights",
    "ensemble_logits",
    "loss_teacher",
    "loss_teacher_key",
    "members",
    "named_teachers",
    "preprocessed_shape",
    "preprocessing_layers",
    "reading_model",
    "tap_names",
    "teacher_output_key",
]
