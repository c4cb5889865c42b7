"""The models `tf-distill run` trains for each `distillation.scheme`.

`teacher` distills with a `Distiller`; `mutual` with a `MutualDistiller`
of the student and its peers, and `self` with a `SelfDistiller` (neither
has a teacher to load, train or cache); `born_again` is the `teacher`
scheme on a config whose teacher and stages are generations of the
student (`effective_config`), run by `commands.stages`. See
`commands.scheme_config` for the keys.
"""

from tf_distill import losses as losses_lib
from tf_distill.commands import common
from tf_distill.commands.scheme_config import WITHOUT_TEACHER
from tf_distill.commands.scheme_config import scheme
from tf_distill.commands.stages_config import DISTILLATION_KEYS
from tf_distill.commands.stages_config import TRAINING_KEYS
from tf_distill.commands.stages_config import stage_config
from tf_distill.distillers.distiller import Distiller
from tf_distill.distillers.mutual import MutualDistiller
from tf_distill.distillers.mutual import student_key
from tf_distill.distillers.self_ema import SelfDistiller

# A peer's seed: the student's, offset so that no two models share one.
PEER_SEED_OFFSET = 1000


def has_teacher(config):
    """Whether the scheme distills from a teacher (given, trained or a generation)."""
    return scheme(config) not in WITHOUT_TEACHER


def effective_config(config):
    """The config a run executes: for `born_again`, its generations made explicit.

    Generation 0 is the `teacher`, built and trained as the student alone is
    (its architecture, `training.epochs` and `learning_rate`); generations 1
    to `generations - 1` are `stages` named `generation_K`, each the
    student's architecture with the run's distillation and training; the
    run's student is the last generation. Any other config is returned as is.
    """
    if scheme(config) != "born_again":
        return config
    student, training = config["student"], config["training"]
    teacher = {"path": None, "builder": student["builder"],
               "architecture": student["architecture"], "size": student["size"],
               "epochs": training["epochs"], "learning_rate": training["learning_rate"],
               "teacher_outputs": "logits"}
    stages = [{"name": f"generation_{k}", "student": dict(student),
               "distillation": {key: config["distillation"][key] for key in DISTILLATION_KEYS},
               "training": {key: training[key] for key in TRAINING_KEYS}}
              for k in range(1, config["distillation"]["generations"])]
    return {**config, "teacher": teacher, "stages": stages or None}


def resolve(config, num_examples=None):
    """Every hop's `Distiller` arguments, losses resolved into objects once.

    One entry per stage of `stages:` (the stage's `stage_config`), then the
    student's. Each training takes `fresh(arguments)`.

    Args:
        config: The config the run executes (`effective_config`).
        num_examples: The training examples distilled on (a loss with a
            memory bank gets it as `num_examples`, see `example_indices`).

    Raises:
        ConfigError: for a loss the training split is too small for.
    """
    return [common.distiller_arguments(stage_config(config, index), num_examples)
            for index in range(len(config.get("stages") or ()) + 1)]


def fresh(arguments):
    """`arguments` with copies of their losses: a loss may hold state (CRD's banks,
    CTKD's temperature) that each training must start afresh (as `born_again` does)."""
    losses = [losses_lib.deserialize(losses_lib.serialize(loss))
              for loss in arguments["distillation_losses"]]
    return {**arguments, "distillation_losses": losses}


def distillation_model(config, arguments, teacher, student, data, seed):
    """The model that distills into `student`, for the config's scheme.

    Args:
        config: A (stage's) validated config.
        arguments: Its `Distiller` arguments (an entry of `resolve`), used
            as they are: give `fresh(...)` ones to train.
        teacher: The teacher (`None` for `mutual` and `self`).
        student: The student to train.
        data: The data the student learns from (peers are built for it).
        seed: The student's seed (a peer `k` gets `seed + k·1000`).
    """
    name = scheme(config)
    if name == "mutual":
        # The one `kd` loss: its temperature and divergence are the mutual term's.
        (loss,) = arguments["distillation_losses"]
        weights = arguments["distillation_loss_weights"]
        peers = [common.build_student(config, data, f"peer_{k}", seed=seed + k * PEER_SEED_OFFSET)
                 for k in range(1, config["distillation"]["peers"] + 1)]
        return MutualDistiller([student, *peers], temperature=loss.temperature,
                               divergence=loss.loss,
                               **({"mutual_loss_weight": weights[0]} if weights else {}))
    if name == "self":
        section = config["distillation"]
        return SelfDistiller(student, decay=section["decay"],
                             adaptive_decay=section["adaptive_decay"],
                             distillation_losses=arguments["distillation_losses"],
                             distillation_loss_weights=arguments["distillation_loss_weights"],
                             student_loss_weight=arguments["student_loss_weight"])
    return Distiller(teacher=teacher, student=student, **arguments)


def student_history(config, history):
    """A `fit` history with the distilled student's metrics under Keras's names.

    A `MutualDistiller` reports student `i`'s as `student_<i>_<metric>`;
    the report and early stopping read `accuracy` and `val_accuracy`.
    """
    if scheme(config) != "mutual":
        return history
    prefix = student_key(0) + "_"
    renamed = dict(history)
    for key, values in history.items():
        for head in ("", "val_"):
            # The total `loss` stays: the sum over the students.
            if key.startswith(head + prefix) and key != f"{head}{prefix}loss":
                renamed[head + key[len(head + prefix):]] = values
    return renamed
