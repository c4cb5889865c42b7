"""The `task: language` config: distilling a KerasHub causal language model.

A config with `task: language` has its own `data`, `teacher`, `student` and
`distillation` sections; `training` has the classifier run's keys, less what
does not apply to text (caching, distribution, early stopping), plus
`steps_per_epoch`. Everything is
checked before any text is read or model built, and an error names the key,
what was expected and what was received.

Example (`tf-distill run lm.yaml`):

```yaml
task: language
data: {source: /usr/share/common-licenses, sequence_length: 64, batch_size: 32}
teacher: {architecture: gpt2, num_layers: 4, hidden_dim: 128, num_heads: 4, epochs: 4}
student: {architecture: gpt2, num_layers: 2, hidden_dim: 64, num_heads: 2}
distillation:
  losses: [{name: token_kd, divergence: skew_kl, alpha: 0.1}]
  student_loss_weight: 0.5
  on_policy: 0.5        # GKD's λ: the share of batches sampled by the student
  top_k: 32             # distill from a top-k teacher cache instead of online
training: {epochs: 4, learning_rate: 0.001, seeds: [0, 1, 2]}
output: runs/lm
```

KerasHub presets and instruction data:

```yaml
task: language
data: {source: train.jsonl, sequence_length: 128}   # {"prompt", "response"} lines
teacher: {preset: my_teacher_preset/}      # a folder, or "hf://..." (downloads)
student: {from_teacher: {layers: [0, 2]}}  # DistilBERT's initialisation
# or: student: {preset: my_student_preset/}
# or sizes, with the teacher's tokenizer or (`tokenizer: bytes`, with the
# `uld` loss) the byte tokenizer: different tokenizers need instruction data.
```
"""

from tf_distill.commands import checks
from tf_distill.commands.checks import ConfigError
from tf_distill.commands.checks import show
from tf_distill.data.text import BYTE_VOCABULARY_SIZE
from tf_distill.data.text import DEFAULT_TEXT_SOURCE
from tf_distill.optimizers import OPTIMIZERS
from tf_distill.optimizers import SCHEDULES

LANGUAGE_TASK = "language"
TASKS = ("classification", LANGUAGE_TASK)
LANGUAGE_ARCHITECTURES = ("gpt2", "gemma", "llama")
STUDENT_TOKENIZERS = ("teacher", "bytes")
DATA_FORMATS = ("auto", "text", "instructions")


def _model_fields(epochs):
    fields = {
        "architecture": (checks.string(LANGUAGE_ARCHITECTURES), "gpt2"),
        "num_layers": (checks.number(low=1, integer=True), 2),
        "hidden_dim": (checks.number(low=1, integer=True), 64),
        "num_heads": (checks.number(low=1, integer=True), 2),
        # None: 4 × hidden_dim.
        "intermediate_dim": (checks.optional(checks.number(low=1, integer=True)), None),
        "num_key_value_heads": (checks.optional(checks.number(low=1, integer=True)), None),
        # None: `data.sequence_length`.
        "max_sequence_length": (checks.optional(checks.number(low=1, integer=True)), None),
        "dropout": (checks.number(low=0, high=0.9), 0.0),
    }
    # A KerasHub preset folder (or a published handle), with its tokenizer,
    # used as it is: the sizes above do not apply.
    fields["preset"] = (checks.optional(checks.string()), None)
    if epochs:
        fields.update({
            # A saved `.keras` CausalLM, used as it is (not trained).
            "path": (checks.optional(checks.string()), None),
            "epochs": (checks.number(low=0, integer=True), 4),
            "learning_rate": (checks.number(low=0, low_open=True), 0.001),
        })
    else:
        fields.update({
            # The teacher's blocks the student starts from: `{layers: [0, 2]}`.
            "from_teacher": (checks.optional(_from_teacher), None),
            # A student built from sizes reads the teacher's tokenizer
            # ("teacher", the default) or bytes ("bytes": a cross-tokenizer
            # loss, `uld`, and instruction data).
            "tokenizer": (checks.string(STUDENT_TOKENIZERS), "teacher"),
        })
    return fields


def _layer_list(path, value):
    if not isinstance(value, list) or not value or not all(
        isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
    ):
        raise ConfigError(
            f"`{path}` must be a non-empty list of the teacher's block indices (integers "
            f">= 0). Received: {path}={show(value)}"
        )
    if value != sorted(set(value)):
        raise ConfigError(
            f"`{path}` must be increasing, each block once. Received: {path}={show(value)}"
        )
    return value


def _from_teacher(path, value):
    return checks.section(path, value, {"layers": (_layer_list, None)})


def _sampling(path, value):
    return checks.section(path, value, {
        "temperature": (checks.number(low=0, low_open=True), 1.0),
        "top_k": (checks.optional(checks.number(low=1, integer=True)), None),
        "top_p": (checks.optional(checks.number(low=0, high=1, low_open=True)), None),
        # The tokens of each window the student continues from; the rest is sampled.
        "prompt_length": (checks.optional(checks.number(low=1, integer=True)), None),
        # Test windows each student continues for the teacher's NLL of its own
        # samples (the exposure-bias measure); 0 skips it.
        "sample_windows": (checks.number(low=0, integer=True), 64),
    })


def _training_fields():
    """The classifier run's `training:` keys that apply to text, with LM defaults."""
    return {
        "epochs": (checks.number(low=1, integer=True), 4),
        "learning_rate": (checks.number(low=0, low_open=True), 0.001),
        "optimizer": (checks.string(OPTIMIZERS), "adam"),
        "schedule": (checks.string(SCHEDULES), "constant"),
        "warmup_epochs": (checks.number(low=0, integer=True), 0),
        "weight_decay": (checks.optional(checks.number(low=0)), None),
        "clipnorm": (checks.optional(checks.number(low=0, low_open=True)), 1.0),
        "seed": (checks.number(low=0, integer=True), 0),
        "seeds": (checks.optional(checks.seed_list), None),
        "baseline": (checks.boolean, True),
        "jit_compile": (checks.optional(checks.boolean), None),
        # Cap each epoch (quick runs); None: every training window once.
        "steps_per_epoch": (checks.optional(checks.number(low=1, integer=True)), None),
    }


LANGUAGE_SCHEMA = {
    "data": {
        # A file, a folder, a glob pattern or "python-stdlib".
        "source": (checks.string(), DEFAULT_TEXT_SOURCE),
        "sequence_length": (checks.number(low=2, integer=True), 64),
        "batch_size": (checks.number(low=1, integer=True), 32),
        "validation_fraction": (checks.number(low=0, high=0.5, low_open=True), 0.1),
        "test_fraction": (checks.number(low=0, high=0.5, low_open=True), 0.1),
        "train_stride": (checks.optional(checks.number(low=1, integer=True)), None),
        "max_bytes_per_file": (checks.optional(checks.number(low=1, integer=True)), None),
        "lowercase": (checks.boolean, False),
        # "instructions": JSONL prompt–response pairs, the response alone in
        # the loss; "auto": instructions for `.jsonl` / `.jsonl.gz` files.
        "format": (checks.string(DATA_FORMATS), "auto"),
        "prompt_key": (checks.string(), "prompt"),
        "response_key": (checks.string(), "response"),
    },
    "teacher": _model_fields(epochs=True),
    "student": _model_fields(epochs=False),
    "distillation": {
        "losses": (checks.loss_list, [{"name": "token_kd", "divergence": "forward_kl"}]),
        "loss_weights": (checks.optional(checks.number_list), None),
        "student_loss_weight": (checks.number(low=0, high=1), 0.5),
        # GKD's λ: with this probability a batch's continuations are sampled
        # from the student and scored by the teacher; 0 is supervised KD.
        "on_policy": (checks.number(low=0, high=1), 0.0),
        "sampling": (_sampling, None),
        # Distill from the teacher's top-k log-probabilities, cached once
        # (at the first loss's temperature), instead of the losses online.
        "top_k": (checks.optional(checks.number(low=1, integer=True)), None),
    },
}
_TOP_LEVEL = ("task", "output", "unsafe")


def check_task(value):
    """The `task:` key: `"classification"` (the default) or `"language"`."""
    return checks.string(TASKS)("task", value)


def validate(raw):
    """Checks a `task: language` config and fills in its defaults.

    Returns:
        A new dict with every section and key present, `task: language`.

    Raises:
        ConfigError: listing every invalid key at once.
    """
    check_task(raw.get("task"))
    errors = checks.Collector()
    sections = list(LANGUAGE_SCHEMA) + ["training"]
    errors.run(checks.check_keys, "", raw, sections + list(_TOP_LEVEL))
    config = {
        "task": LANGUAGE_TASK,
        "output": errors.run(checks.string(), "output", raw.get("output", "runs/language")),
        "unsafe": errors.run(checks.boolean, "unsafe", raw.get("unsafe", False)),
    }
    failed = set()
    fields = dict(LANGUAGE_SCHEMA, training=_training_fields())
    for section in sections:
        before = len(errors.messages)
        config[section] = errors.run(checks.section, section, raw.get(section), fields[section])
        if len(errors.messages) > before:
            failed.add(section)
    if "data" not in failed:
        for role in ("teacher", "student"):
            if role not in failed:
                errors.run(_check_model, role, config[role], config["data"])
    if "distillation" not in failed:
        errors.run(_check_distillation, config["distillation"], config.get("data"),
                   not failed & {"teacher", "student"} and uses_presets(config))
        if not failed & {"data", "teacher", "student"}:
            errors.run(_check_tokenizers, config)
    if "training" not in failed:
        errors.run(checks.check_training, config["training"])
    errors.raise_if_any()
    return config


def data_format(data):
    """`"text"` or `"instructions"`: the `data.format`, or the source's extension."""
    if data["format"] != "auto":
        return data["format"]
    source = data["source"].lower()
    return "instructions" if source.endswith((".jsonl", ".jsonl.gz")) else "text"


def _check_model(role, section, data):
    if role == "teacher" and section["preset"] is not None and section["path"] is not None:
        raise ConfigError(
            "`teacher.preset` and `teacher.path` name two teachers: give one. Received: "
            f"teacher.preset={section['preset']!r}, teacher.path={section['path']!r}"
        )
    if role == "student" and section["from_teacher"] is not None:
        if section["preset"] is not None:
            raise ConfigError(
                "`student.from_teacher` and `student.preset` name two starting points: "
                f"give one. Received: student.preset={section['preset']!r}"
            )
        if section["from_teacher"]["layers"] is None:
            raise ConfigError(
                "`student.from_teacher.layers` is required: the teacher's blocks the "
                "student keeps, e.g. [0, 2]. Received: student.from_teacher="
                f"{show(section['from_teacher'])}"
            )
        if section["tokenizer"] != "teacher":
            raise ConfigError(
                "A student made from the teacher's blocks reads the teacher's tokens. "
                f"Received: student.tokenizer={section['tokenizer']!r}"
            )
    length = data["sequence_length"]
    if section["max_sequence_length"] is None:
        section["max_sequence_length"] = length
    elif section["max_sequence_length"] < length:
        raise ConfigError(
            f"`data.sequence_length` is longer than the {role}'s maximum: "
            f"{length} > {role}.max_sequence_length={section['max_sequence_length']}."
        )
    heads, width = section["num_heads"], section["hidden_dim"]
    if width % heads:
        raise ConfigError(
            f"`{role}.hidden_dim` must be a multiple of `{role}.num_heads`. "
            f"Received: {role}.hidden_dim={width}, {role}.num_heads={heads}"
        )
    key_value = section["num_key_value_heads"]
    if key_value is not None and heads % key_value:
        raise ConfigError(
            f"`{role}.num_heads` must be a multiple of `{role}.num_key_value_heads`. "
            f"Received: {role}.num_heads={heads}, {role}.num_key_value_heads={key_value}"
        )


def uses_presets(config):
    """Whether a model comes from a KerasHub preset (a tokenizer of its own)."""
    return (config["teacher"]["preset"] is not None or config["student"]["preset"] is not None
            or config["student"]["from_teacher"] is not None)


def check_cross_tokenizer_losses(losses, reason):
    """Raises `ConfigError` (`reason`, then what is expected) unless every loss
    of `distillation.losses` compares different tokenizers ('uld')."""
    names = [loss if isinstance(loss, str) else loss.get("name") for loss in losses]
    if any(name != "uld" for name in names):
        raise ConfigError(
            f"{reason}: every loss must compare different tokenizers ('uld'). "
            f"Received: distillation.losses={show(names)}"
        )


def _check_tokenizers(config):
    """A byte-level student of a preset teacher needs a cross-tokenizer loss,
    and instruction data to align the two tokenizations."""
    if config["teacher"]["preset"] is None or config["student"]["tokenizer"] != "bytes":
        return
    check_cross_tokenizer_losses(
        config["distillation"]["losses"],
        "A byte-level student (`student.tokenizer: bytes`) of a preset teacher reads "
        "other tokens than the teacher")
    if data_format(config["data"]) != "instructions":
        raise ConfigError(
            "Different tokenizers are aligned on instruction data (a JSONL file of "
            "prompts and responses). Received: data.source="
            f"{config['data']['source']!r} (format {data_format(config['data'])!r})"
        )
    if config["distillation"]["top_k"] is not None:
        raise ConfigError(
            "`distillation.top_k` caches the teacher's outputs on the student's tokens; "
            "with different tokenizers the teacher reads its own. Received: "
            f"top_k={config['distillation']['top_k']}"
        )


def _check_distillation(distillation, data, presets_used=False):
    weights = distillation["loss_weights"]
    if weights is not None and len(weights) != len(distillation["losses"]):
        raise ConfigError(
            f"`distillation.loss_weights` has {len(weights)} entries for "
            f"{len(distillation['losses'])} losses. Received: {show(weights)}"
        )
    if distillation["sampling"] is None:
        distillation["sampling"] = _sampling("distillation.sampling", None)
    top_k = distillation["top_k"]
    if data is not None and distillation["on_policy"] and data_format(data) == "instructions":
        raise ConfigError(
            "`distillation.on_policy` samples after a prompt of one length for every "
            "window; instruction data's prompts have their own lengths. Use text data "
            f"(`data.format: text`) for on-policy runs. Received: on_policy="
            f"{distillation['on_policy']}, data.source={data['source']!r}"
        )
    if top_k is not None and top_k >= BYTE_VOCABULARY_SIZE and not presets_used:
        raise ConfigError(
            f"`distillation.top_k` must be < the vocabulary size "
            f"{BYTE_VOCABULARY_SIZE} (bytes): a top-k cache of every token is the "
            f"dense one. Received: distillation.top_k={top_k}"
        )
    if top_k is not None and distillation["on_policy"]:
        raise ConfigError(
            "`distillation.top_k` and `distillation.on_policy` do not combine: the "
            "student's own samples need the teacher online, a top-k cache holds its "
            f"outputs on the training text. Received: top_k={top_k}, "
            f"on_policy={distillation['on_policy']}"
        )
    prompt = distillation["sampling"]["prompt_length"]
    if data is not None and prompt is not None and prompt >= data["sequence_length"]:
        raise ConfigError(
            "`distillation.sampling.prompt_length` must be < `data.sequence_length` "
            f"(the student samples the rest). Received: prompt_length={prompt}, "
            f"sequence_length={data['sequence_length']}"
        )


def default():
    """The recipe's config, small enough for 2 CPU cores."""
    return validate({"task": LANGUAGE_TASK})
