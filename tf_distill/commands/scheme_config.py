"""`distillation.scheme`: who teaches the student in a run config.

- `teacher` (the default): the `teacher:` section's model(s), or the last
  of `stages:`.
- `mutual`: deep mutual learning (Zhang et al., CVPR 2018), no teacher: the
  student and `peers` more students of its architecture (other seeds)
  teach each other in one `fit` (`tf_distill.MutualDistiller`). The one
  loss must be `kd`: its `temperature` and `loss` (the divergence) are the
  mutual term's, and `loss_weights[0]` its weight; each peer's label loss
  has weight 1, so `student_loss_weight` does not apply.
- `self`: self-distillation from an EMA of the student (mean teacher,
  `tf_distill.SelfDistiller`), no teacher: `decay` and `adaptive_decay`;
  the losses and weights are used as with a teacher. Teacher outputs are
  not cached (the EMA teacher changes every step).
- `born_again`: born-again networks (Furlanello et al., ICML 2018): the
  teacher is the student's architecture trained alone (generation 0,
  `training.epochs` and `learning_rate`), and each of `generations`
  generations of it is distilled from the one before; the last is the
  run's distilled student (the generations between are `stages`).

The report compares the distilled student with the student trained alone,
seed by seed, in every scheme.

```yaml
student: {architecture: cnn, size: small}
distillation:
  scheme: mutual
  peers: 1
  losses: [{name: kd, temperature: 1.0}]
training: {epochs: 15, seeds: [0, 1, 2]}
```

The scheme's keys appear in a validated config only when `scheme` is
given, so that the configs of earlier runs keep their fingerprint.
"""

from tf_distill.commands import checks
from tf_distill.commands.checks import ConfigError
from tf_distill.commands.checks import show

SCHEMES = ("teacher", "mutual", "self", "born_again")
# Each scheme's own keys: key -> (check, default).
OPTIONS = {
    "mutual": {"peers": (checks.number(low=1, integer=True), 1)},
    "self": {
        "decay": (checks.number(low=0, high=1), 0.999),
        "adaptive_decay": (checks.boolean, False),
    },
    "born_again": {"generations": (checks.number(low=1, integer=True), 2)},
}
KEYS = ("scheme",) + tuple(key for options in OPTIONS.values() for key in options)
WITHOUT_TEACHER = ("mutual", "self")


def split(distillation):
    """`(the distillation section without the scheme's keys, those keys)`."""
    if not isinstance(distillation, dict):
        return distillation, {}
    rest = {k: v for k, v in distillation.items() if k not in KEYS}
    return rest, {k: v for k, v in distillation.items() if k in KEYS}


def scheme(config):
    """The config's scheme: `"teacher"` unless `distillation.scheme` says otherwise."""
    return (config.get("distillation") or {}).get("scheme", "teacher")


def validate_scheme(given, raw, config, errors, teacher_fields):
    """Checks the scheme's keys against each other and the rest of the config.

    Adds them, defaults filled in, to `config["distillation"]` when
    `scheme` is given; adds every error to `errors` (a `checks.Collector`).
    `teacher_fields` is the schema's `teacher` section (a config saved by a
    run has its defaults filled in, which a scheme without teacher accepts).
    """
    if not given:
        return
    name = errors.run(checks.string(SCHEMES), "distillation.scheme",
                      given.get("scheme", "teacher"))
    if name is None:
        return
    options = OPTIONS.get(name, {})
    for key in given:
        if key != "scheme" and key not in options:
            owner = next(s for s, keys in OPTIONS.items() if key in keys)
            errors.add(f"`distillation.{key}` applies to `distillation.scheme: {owner}`. "
                       f"Received: distillation.scheme={show(name)}")
    values = {"scheme": name}
    for key, (check, default) in options.items():
        value = errors.run(check, f"distillation.{key}", given[key]) if key in given else default
        values[key] = value
    if name != "teacher":
        default_teacher = checks.section("teacher", None, teacher_fields)
        _check_without_teacher(name, raw, config, errors, default_teacher)
    if isinstance(config.get("distillation"), dict):
        config["distillation"].update(values)


def _check_without_teacher(name, raw, config, errors, default_teacher):
    """The sections a scheme without a given teacher refuses."""
    for key in ("teacher", "stages"):
        # A config saved by a run has the default teacher filled in.
        if raw.get(key) is not None and not (key == "teacher"
                                             and config.get("teacher") == default_teacher):
            errors.add(f"`{key}` does not apply to `distillation.scheme: {name}` (the "
                       "student's teachers come from the scheme): remove it. "
                       f"Received: {key}={show(raw[key])}")
    student = config.get("student")
    if name == "born_again" and isinstance(student, dict) and student.get("path"):
        errors.add("`distillation.scheme: born_again` trains generation 0 from the "
                   "student's architecture: give `student.architecture` or `builder`. "
                   f"Received: student.path={show(student['path'])}")
    training = config.get("training")
    if name == "mutual" and isinstance(training, dict) and training["early_stopping"]:
        errors.add("`training.early_stopping` does not apply to `distillation.scheme: "
                   "mutual` yet (its metrics are per peer). Received: training.early_stopping="
                   f"{show(training['early_stopping'])}")
    distillation = config.get("distillation")
    if name != "mutual" or not isinstance(distillation, dict):
        return
    losses = distillation["losses"]
    loss = losses[0] if len(losses) == 1 else None
    loss_name = loss if isinstance(loss, str) else (loss or {}).get("name")
    if loss_name != "kd":
        errors.add("`distillation.scheme: mutual` takes one `kd` loss (its temperature "
                   "and divergence are the mutual term's). Received: distillation.losses="
                   f"{show(losses)}")
    if "student_loss_weight" in (raw.get("distillation") or {}):
        errors.add("`distillation.student_loss_weight` does not apply to "
                   "`distillation.scheme: mutual` (each peer's label loss has weight 1; "
                   "`loss_weights` weighs the mutual term). Received: student_loss_weight="
                   f"{show(raw['distillation']['student_loss_weight'])}")


def check_scheme_free(config, command):
    """Raises `ConfigError` if `config` has another scheme than `teacher`."""
    name = scheme(config)
    if name != "teacher":
        raise ConfigError(
            f"`tf-distill {command}` searches a teacher → student distillation; "
            f"`distillation.scheme: {name}` runs with `tf-distill run`. "
            f"Received: distillation.scheme={show(name)}"
        )

