"""Schedules in a config's `distillation` section: accepted, completed, refused."""

import pytest

import tf_distill
from tf_distill.commands import config as config_lib
from tf_distill.commands.common import distiller_arguments
from tf_distill.commands.config import ConfigError
from tf_distill.schedules import Cosine
from tf_distill.schedules import Linear
from tf_distill.schedules import Step


def test_schedules_are_accepted_and_last_the_run_by_default(teacher, student):
    config = config_lib.validate(config_lib.parse(
        """
training: {epochs: 6}
distillation:
  student_loss_weight: {schedule: linear, start: 0.9, end: 0.1}
  losses:
    - {name: kd, temperature: {schedule: cosine, start: 8, end: 2}}
    - {name: dist, temperature: {schedule: step, values: [4, 1], boundaries: [3]}}
  loss_weights: [{schedule: cosine, start: 0, end: 1, duration: 50, unit: step}, 1.0]
"""
    ))
    distiller = tf_distill.Distiller(teacher, student, **distiller_arguments(config))
    assert distiller.student_loss_weight == Linear(0.9, 0.1, 6)
    assert distiller.distillation_losses[0].temperature == Cosine(8.0, 2.0, 6)
    assert distiller.distillation_losses[1].temperature == Step([4.0, 1.0], [3])
    assert distiller.distillation_loss_weights == [Cosine(0.0, 1.0, 50, unit="step"), 1.0]


@pytest.mark.parametrize(
    "distillation, message",
    [
        ({"student_loss_weight": {"schedule": "exponential", "start": 1}},
         r"^`distillation.student_loss_weight`: Invalid value for argument `schedule`. "
         r"Expected one of \['constant', 'linear', 'cosine', 'step'\]"),
        ({"student_loss_weight": {"schedule": "linear", "start": 0.5, "end": 2.0}},
         r"`distillation.student_loss_weight` must be in \[0, 1\] at every epoch"),
        ({"student_loss_weight": {"start": 0.5}},
         r"`distillation.student_loss_weight` must be a number or a schedule mapping"),
        ({"loss_weights": [{"schedule": "linear", "start": 1, "end": -1}]},
         r"`distillation.loss_weights\[0\]` must be >= 0 at every epoch"),
        ({"loss_weights": [{"schedule": "cosine", "start": 1, "end": 0, "unit": "step"}]},
         r"A 'cosine' schedule takes .*\['start', 'end', 'duration'\] required"),
        ({"losses": [{"name": "kd", "temperature": {"schedule": "linear", "start": 4, "end": 0}}]},
         r"`distillation.losses\[0\]`: .*`temperature` must be > 0.0 at every epoch"),
        ({"losses": [{"name": "kd", "temperature": {"schedule": "step", "values": [4, 2],
                                                   "boundaries": [1], "oops": 1}}]},
         r"`distillation.losses\[0\]`: .*A 'step' schedule takes"),
    ],
)
def test_bad_schedules_are_refused_in_one_line(distillation, message):
    with pytest.raises(ConfigError, match=message) as error:
        config_lib.validate({"distillation": distillation})
    assert "\n" not in str(error.value)
