"""Hyperparameter search of a distillation: temperature and α with Keras Tuner.

`DistillerHyperModel` is a `keras_tuner.HyperModel` whose `build(hp)` makes
a compiled `Distiller` with the softening temperature `T` and the
student-loss weight `α` (`student_loss_weight`) drawn from a search space
(by default `T` in [1, 20] on a log scale and `α` in [0, 1]), and
optionally the learning rate and a width factor of the student. Any Keras
Tuner tuner runs it: `RandomSearch`, `BayesianOptimization`, `Hyperband`,
`GridSearch`.

The teacher is trained or loaded once, and one teacher-output cache
(`tf_distill.cache`) serves every trial, so a trial costs what training the
student alone costs; trial checkpoints hold the student, adapters and
optimizer state, not the frozen teacher (`TrialDistiller`).

The objective is one metric of the trials' history, read at each trial's
best epoch: by default the student's validation accuracy (`val_accuracy`).
`make_tuner(objective=...)` (the config's `tuning.objective`) takes any
other, such as `val_student_loss` (the student's label loss on the
validation data); a name that contains `loss` or `error` is minimized,
any other maximized (`objective_direction`). The trials table, the plot and
`best_hyperparameters.json` name the objective they rank by.

A trial whose loss turns NaN fails cleanly (`keras_tuner.errors.FailedTrialError`) and the search goes on;
`overwrite=False` resumes a search that was killed, re-running the trial
that was interrupted.

Modules: `space` (the searched quantities), `hypermodel`
(`DistillerHyperModel`, `TrialDistiller`), `tuners` (`make_tuner`,
`search`), `results` (the trials table, the plot, the best student) and
`distributed` (Keras Tuner's chief and workers). The `tf-distill tune`
command that runs a search from a config is `tf_distill.commands.tune`.

Example:

```python
hypermodel = tf_distill.tuning.DistillerHyperModel(
    teacher, lambda: build_student(), seed=0)
tuner = tf_distill.tuning.make_tuner(hypermodel, "bayesian", max_trials=20,
                                     directory="runs/search")
train = tf_distill.cache_teacher_outputs(teacher, (x_train, y_train),
                                         batch_size=64, seed=0)
validation = tf_distill.cache_teacher_outputs(teacher, (x_val, y_val),
                                              batch_size=64, shuffle=False)
tuner.search(train, validation_data=validation, epochs=10)
best = tuner.get_best_hyperparameters()[0].values
```
"""


from tf_distill.tuning.distributed import ROLES
from tf_distill.tuning.distributed import resolve_role
from tf_distill.tuning.hypermodel import DistillerHyperModel
from tf_distill.tuning.hypermodel import TrialDistiller
from tf_distill.tuning.results import best_student
from tf_distill.tuning.results import log_ticks
from tf_distill.tuning.results import plot_search
from tf_distill.tuning.results import searched_hyperparameters
from tf_distill.tuning.results import trial_number
from tf_distill.tuning.results import trial_rows
from tf_distill.tuning.results import write_results
from tf_distill.tuning.results import write_trials
from tf_distill.tuning.space import with_temperature
from tf_distill.tuning.tuners import TUNERS
from tf_distill.tuning.tuners import make_objective
from tf_distill.tuning.tuners import make_tuner
from tf_distill.tuning.tuners import objective_direction
from tf_distill.tuning.tuners import search

__all__ = [
    "DistillerHyperModel",
    "ROLES",
    "TUNERS",
    "TrialDistiller",
    "best_student",
    "log_ticks",
    "make_objective",
    "make_tuner",
    "objective_direction",
    "plot_search",
    "resolve_role",
    "search",
    "searched_hyperparameters",
    "trial_number",
    "trial_rows",
    "with_temperature",
    "write_results",
    "write_trials",
]
