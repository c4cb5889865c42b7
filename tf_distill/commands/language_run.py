"""`tf-distill run` of a `task: language` config: distilling a KerasHub causal LM.

Text → the teacher (loaded from `teacher.path`, or trained) → for each seed
of `training.seeds`, the student trained alone and distilled from the same
initial weights → held-out perplexity of each, the teacher's NLL of each
student's own samples (the exposure-bias measure), training tokens per
second, `metrics.json`, `report.md` and `config.yaml`. The flow, its phases,
resuming and refusing another config's folder are the classifier run's
(`tf_distill.commands.run.Job`): `LanguageJob` overrides only its hooks for
the data, the models, the metric and the report.
"""

import math
import os
import time

from tf_distill import data as data_lib
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.cache.topk import build_topk_cache
from tf_distill.callbacks import EpochOrder
from tf_distill.commands import common
from tf_distill.commands.config import ConfigError
from tf_distill.commands.language_config import check_cross_tokenizer_losses
from tf_distill.commands.language_config import data_format
from tf_distill.commands.language_report import language_comparison
from tf_distill.commands.language_report import write_language_report
from tf_distill.commands.run import Job
from tf_distill.comparison import counted
from tf_distill.data import tokenization
from tf_distill.distillers.distiller import Distiller
from tf_distill.distillers.on_policy import OnPolicyDistiller
from tf_distill.language import build_causal_lm
from tf_distill.language import models as language_models
from tf_distill.language import presets
from tf_distill.language.evaluation import perplexity
from tf_distill.language.evaluation import teacher_nll_of_samples
from tf_distill.losses.topk import TopKDistillation
from tf_distill.optimizers import learning_rate_schedule
from tf_distill.optimizers import make_optimizer

# What the top-k cache's fingerprint knows of the tokenizer.
TOKENIZER_IDENTITY = "keras_hub.ByteTokenizer"
MODEL_SIZES = ("num_layers", "hidden_dim", "num_heads", "intermediate_dim",
               "num_key_value_heads", "max_sequence_length", "dropout")


INSTRUCTION_KEYS = ("format", "prompt_key", "response_key")


def load_corpus(data_config, tokenizer=None, teacher_tokenizer=None):
    """The text a config's `data:` section names, as `TextSplits`: windows of
    text, or instruction data (see `language_config.data_format`), in the
    student's tokens (`tokenizer`, bytes when `None`) and, when it differs,
    the teacher's (`teacher_tokenizer`)."""
    try:
        if data_format(data_config) == "instructions":
            return data_lib.load_instructions(
                data_config["source"], tokenizer,
                sequence_length=data_config["sequence_length"],
                validation_fraction=data_config["validation_fraction"],
                test_fraction=data_config["test_fraction"],
                prompt_key=data_config["prompt_key"], response_key=data_config["response_key"],
                teacher_tokenizer=teacher_tokenizer)
        if teacher_tokenizer is not None:
            raise ConfigError(
                "Different tokenizers are aligned on instruction data (a JSONL file of "
                f"prompts and responses). Received: data.source={data_config['source']!r}")
        options = {k: v for k, v in data_config.items()
                   if k not in ("source", "batch_size", *INSTRUCTION_KEYS)}
        return data_lib.load_text(data_config["source"], tokenizer=tokenizer, **options)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(f"`data`: {error}") from None


def preset_tokenizer(preset, argument):
    """The tokenizer of a KerasHub preset (checked first)."""
    import keras_hub

    try:
        presets.check_preset(preset, argument)
        return keras_hub.tokenizers.Tokenizer.from_preset(preset)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def build_model(section, vocabulary_size, name, seed=None):
    """A new causal LM as a `teacher:` or `student:` section says (seeded)."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return build_causal_lm(section["architecture"], vocabulary_size,
                           name=name, **{key: section[key] for key in MODEL_SIZES})


def model_vocabulary(model):
    """The vocabulary size of a causal LM's backbone (None if it has none)."""
    backbone = getattr(model, "backbone", None)
    return getattr(backbone, "vocabulary_size", None)


def language_optimizer(config, data, *, learning_rate, epochs):
    """The optimizer of one phase, with `training:`'s schedule, decay and clipping."""
    training = config["training"]
    steps = steps_per_epoch(config, data)
    rate = learning_rate_schedule(learning_rate, training["schedule"],
                                  total_steps=steps * epochs,
                                  warmup_steps=steps * training["warmup_epochs"])
    return make_optimizer(training["optimizer"], rate, weight_decay=training["weight_decay"],
                          clipnorm=training["clipnorm"])


def topk_loss(config):
    """The loss of a top-k cache, at the first loss's temperature when it sets one."""
    loss = config["distillation"]["losses"][0]
    temperature = loss.get("temperature") if isinstance(loss, dict) else None
    return TopKDistillation() if temperature is None else TopKDistillation(temperature)


def prompt_length(config):
    """The prompt the student continues: `sampling.prompt_length`, or half a window."""
    return (config["distillation"]["sampling"]["prompt_length"]
            or config["data"]["sequence_length"] // 2)


def steps_per_epoch(config, data):
    """Batches per epoch: every training window once, or `training.steps_per_epoch`."""
    full = math.ceil(data.sizes["train"] / config["data"]["batch_size"])
    cap = config["training"]["steps_per_epoch"]
    return full if cap is None else min(cap, full)


class LanguageJob(Job):
    """Runs one `task: language` config; `LanguageJob(config).run()` returns the metrics.

    `Job`'s flow, with text for the data, causal LMs for the models and
    perplexity for the metric.
    """

    def load_data(self):
        student_tokenizer, teacher_tokenizer = self.tokenizers()
        if teacher_tokenizer is not None:
            check_cross_tokenizer_losses(self.config["distillation"]["losses"],
                                         "The teacher's and the student's tokenizers differ")
        self.student_tokenizer = student_tokenizer
        return load_corpus(self.config["data"], student_tokenizer, teacher_tokenizer)

    def tokenizers(self):
        """`(student's tokenizer, teacher's tokenizer when it differs)`.

        `None` for the student's is the byte tokenizer. A teacher without a
        preset reads the run's tokens (it is trained on them, or a `.keras`
        file of the byte-level demo)."""
        teacher, student = self.config["teacher"], self.config["student"]
        teacher_tokenizer = (None if teacher["preset"] is None
                             else preset_tokenizer(teacher["preset"], "teacher.preset"))
        if student["preset"] is not None:
            student_tokenizer = preset_tokenizer(student["preset"], "student.preset")
        elif student["tokenizer"] == "bytes":
            student_tokenizer = None
        else:
            student_tokenizer = teacher_tokenizer
        if teacher_tokenizer is None:
            return student_tokenizer, None
        student_identity = tokenization.tokenizer_fingerprint(
            student_tokenizer or tokenization.byte_tokenizer())
        if student_identity == tokenization.tokenizer_fingerprint(teacher_tokenizer):
            return student_tokenizer, None
        return student_tokenizer, teacher_tokenizer

    def describe_data(self, data):
        tokens = ("byte tokens" if data.tokenizer == "bytes"
                  else f"{data.tokenizer.split(':')[0]} tokens")
        kind = "examples" if data.padding is not None else "windows"
        teacher = ("" if data.teacher is None else
                   f"; the teacher reads its own {data.teacher.tokenizer.split(':')[0]} tokens")
        return (f"Text: {data.name}: {data.sizes['train']} train, "
                f"{data.sizes['validation']} validation, {data.sizes['test']} test "
                f"{kind} of {data.sequence_length} {tokens}{teacher}")

    def data_summary(self, data):
        return {"name": data.name, "identity": data.fingerprint,
                "sequence_length": data.sequence_length,
                "vocabulary_size": data.vocabulary_size,
                **{split: data.tokens(split) for split in data_lib.text.TEXT_SPLITS}}

    def teachers(self, data, rows, histories):
        """The teacher: loaded, reused from an interrupted run, or trained; the
        students learn from all the training text."""
        teacher, history, seconds = self.teacher(data)
        self.check_teacher(teacher, data.teacher_splits())
        self.teacher_model = teacher
        if history:
            histories["teacher"] = history
        seed = self.config["training"]["seed"]
        rows.append({"model": "teacher", "seed": None,
                     "parameters": int(teacher.count_params()), "train_seconds": seconds,
                     "tokens_per_second": self.tokens_per_second(
                         data, self.config["teacher"]["epochs"], seconds),
                     **self.perplexities(teacher, None, data.teacher_splits(), seed)})
        return teacher, (data, data)

    def build_student(self, data, name, seed=None):
        """The student: from its preset, from the teacher's blocks, or from sizes
        (seeded); without preprocessor (it reads token ids)."""
        section = self.config["student"]
        if section["preset"] is not None:
            student = load_preset_model(section["preset"], "student.preset")
            self.student_preprocessor = student.preprocessor
            return presets.without_preprocessor(student)
        if section["from_teacher"] is not None:
            try:
                return presets.student_from_teacher(
                    self.teacher_model, section["from_teacher"]["layers"], name=name)
            except ValueError as error:
                raise ConfigError(f"`student.from_teacher`: {error}") from None
        return build_model(section, data.vocabulary_size, name, seed=seed)

    def train_alone(self, model, data, seed, phase):
        training = self.config["training"]
        keras.utils.set_random_seed(seed)
        return self.fit_alone(model, data, seed, training["epochs"], training["learning_rate"],
                              phase, f"student alone{self.seed_text(seed)}")

    def save_student(self, student, filename):
        """Saves the distilled student as a `.keras` file and, when it has a
        tokenizer, as a KerasHub preset folder beside it (`student_preset/`)
        that `keras_hub.models.CausalLM.from_preset` loads."""
        saving.save_model(common.without_training_state(student), self.path(filename))
        preprocessor = self.student_preprocessor_for(student)
        if preprocessor is not None:
            presets.save_causal_lm_preset(
                student, self.path(filename.replace(".keras", "_preset")), preprocessor)

    def student_preprocessor_for(self, student):
        """The preprocessor a student's preset is saved with, or `None` (bytes,
        or a tokenizer its class's preprocessor does not take)."""
        preprocessor = getattr(self, "student_preprocessor", None)
        if preprocessor is not None:
            return preprocessor
        tokenizer = getattr(self, "student_tokenizer", None)
        return presets.preprocessor_for(student, tokenizer, self.config["data"]["sequence_length"])

    def score(self, model, data, *, seed, teacher, seconds, filename):
        """Training tokens per second, perplexity, and the teacher's NLL of samples."""
        return {"tokens_per_second": self.tokens_per_second(
                    data, self.config["training"]["epochs"], seconds),
                **self.perplexities(model, teacher, data, seed)}

    def weak_teacher_warning(self, baseline, data, seed):
        return None  # warned of once, against every seed (`weak_teacher_warnings`)

    def weak_teacher_warnings(self, rows):
        return weak_teacher_warnings(rows)

    def compare(self, rows):
        return language_comparison(rows)

    def write_report(self, results, histories, config_text):
        return write_language_report(self.folder, results, histories, config_text)

    # ------------------------------------------------------------------
    # Causal LMs: training, distilling, measuring.

    def epoch_order(self, data, seed):
        """The training windows' order, a function of `seed` and the epoch.

        Epochs of `steps_per_epoch` batches read on through one endless
        stream of shuffled passes, so that a resumed `fit` reads the batches
        that an uninterrupted one reads."""
        examples = steps_per_epoch(self.config, data) * self.config["data"]["batch_size"]
        return EpochOrder(seed, examples_per_epoch=examples)

    def fit(self, model, data, order, epochs, phase, name, train=None):
        """Fits a compiled model (or distiller) on the training windows in
        `order` (or on `train`, which reads them in `order`); returns
        `(history, seconds)`, the history of every epoch (those before a
        resumption included). The training of `name` resumes if `phase` was
        interrupted."""
        steps = steps_per_epoch(self.config, data)
        if epochs == 0:
            return {}, 0.0
        self.claim()
        start = time.perf_counter()
        if train is None:
            train = data.dataset("train", self.config["data"]["batch_size"], order=order)
        callbacks = self.resumable(phase)
        # No validation pass per epoch: the validation perplexity is measured
        # once at the end, and each evaluation graph costs a trace.
        model.fit(
            train,
            steps_per_epoch=steps, epochs=epochs,
            verbose=self.verbose,
            shuffle=False,  # the pipeline shuffles, seeded
            callbacks=[order, *callbacks, keras.callbacks.TerminateOnNaN()],
        )
        seconds = time.perf_counter() - start
        self.note_resumed(name, callbacks)
        history = callbacks[0].history  # the `EpochLog`
        common.check_finite(history, phase)
        return history, seconds

    def fit_alone(self, model, data, seed, epochs, learning_rate, phase, name):
        """Trains a causal LM on the next token alone; returns `(history, seconds)`."""
        model.compile(
            optimizer=language_optimizer(self.config, data, learning_rate=learning_rate,
                                         epochs=epochs),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[],
            jit_compile=common.jit_compile(self.config),
        )
        return self.fit(model, data, self.epoch_order(data, seed), epochs, phase, name)

    def teacher(self, data):
        """The teacher: loaded, reused or trained; returns `(model, history, seconds)`."""
        section = self.config["teacher"]
        if section["preset"] is not None:
            teacher = presets.without_preprocessor(
                load_preset_model(section["preset"], "teacher.preset"))
            self.log(f"Teacher: loaded the preset {section['preset']}")
            return teacher, None, 0.0
        if section["path"] is not None:
            if not os.path.isfile(section["path"]):
                raise ConfigError(f"`teacher.path` is not a readable file. Received: "
                                  f"teacher.path={section['path']!r}")
            teacher = saving.load_model(section["path"], unsafe=self.config["unsafe"])
            self.log(f"Teacher: loaded {section['path']}")
            return teacher, None, 0.0
        if self.done("teacher", "teacher.keras"):
            self.log("Reusing the teacher trained before")
            values = self.state["phases"]["teacher"]
            return (saving.load_model(self.shared_path("teacher.keras")), values["history"],
                    values["seconds"])
        teacher = build_model(section, data.vocabulary_size, "teacher",
                              seed=self.config["training"]["seed"])
        self.log(f"Training the teacher ({teacher.count_params():,} parameters, "
                 f"{counted(section['epochs'], 'epoch')})")
        history, seconds = self.fit_alone(
            teacher, data, self.config["training"]["seed"], section["epochs"],
            section["learning_rate"], "teacher", "teacher")
        saving.save_model(common.without_training_state(teacher), self.path("teacher.keras"))
        self.save_phase("teacher", history=history, seconds=seconds)
        return teacher, history, seconds

    def check_teacher(self, teacher, data):
        """Refuses a teacher that cannot read the text's windows, before it is scored."""
        vocabulary = model_vocabulary(teacher)
        if vocabulary is not None and vocabulary != data.vocabulary_size:
            raise ConfigError(
                f"The teacher's vocabulary ({vocabulary} tokens) differs from the text's "
                f"tokenizer ({data.vocabulary_size} tokens): their token ids mean "
                "different things."
            )
        limit = language_models.max_sequence_length(teacher)
        if limit is not None and limit < data.sequence_length:
            raise ConfigError(
                f"The teacher reads sequences of at most {limit} tokens (its "
                f"max_sequence_length), shorter than the text's windows. Set "
                f"`data.sequence_length` to {limit} or less, or use another teacher. "
                f"Received: data.sequence_length={data.sequence_length}"
            )

    def distiller(self, teacher, student, seed, end_token_id=None):
        """The `Distiller` the `distillation:` section asks for (on-policy when λ > 0,
        its samples stopping at `end_token_id`)."""
        distillation = self.config["distillation"]
        arguments = {
            "teacher": teacher, "student": student,
            "distillation_losses": distillation["losses"],
            "distillation_loss_weights": distillation["loss_weights"],
            "student_loss_weight": distillation["student_loss_weight"],
        }
        if distillation["top_k"] is not None:
            arguments["distillation_losses"] = [topk_loss(self.config)]
            arguments["distillation_loss_weights"] = None
        if not distillation["on_policy"]:
            return Distiller(**arguments)
        sampling = distillation["sampling"]
        return OnPolicyDistiller(
            on_policy_fraction=distillation["on_policy"],
            prompt_length=prompt_length(self.config),
            sampling_temperature=sampling["temperature"], top_k=sampling["top_k"],
            top_p=sampling["top_p"], end_token_id=end_token_id, seed=seed, **arguments)

    def distill(self, teacher, student, data, seed):
        """Distills into `student`; returns `(history, seconds)`.

        With `distillation.top_k`, the teacher's top-k log-probabilities of
        the training windows are cached once (in `topk_cache/`, fingerprinted:
        a cache of another teacher or text is refused) and the student learns
        from them without running the teacher; the cache's build counts in
        the distillation time.
        """
        training = self.config["training"]
        distiller = self.distiller(teacher, student, seed, data.end_token_id)
        distiller.compile(
            optimizer=language_optimizer(self.config, data,
                                         learning_rate=training["learning_rate"],
                                         epochs=training["epochs"]),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=common.jit_compile(self.config),
        )
        start = time.perf_counter()
        k = self.config["distillation"]["top_k"]
        order = self.epoch_order(data, seed)
        if k is not None:
            train = self.topk_dataset(teacher, data, k, order)
        elif data.teacher is not None:
            # The teacher reads its own tokens, aligned to the student's.
            train = data.dataset("train", self.config["data"]["batch_size"], order=order,
                                 with_teacher=True)
        else:
            train = None
        history, _ = self.fit(distiller, data, order, training["epochs"],
                              f"distill{self.suffix(seed)}",
                              f"distilled student{self.seed_text(seed)}", train=train)
        return history, time.perf_counter() - start

    def topk_dataset(self, teacher, data, k, order):
        """The training windows with the teacher's top-`k` log-probabilities,
        cached, in `order` (a `callbacks.EpochOrder`)."""
        cache = build_topk_cache(
            teacher, (data.inputs("train"), *data.windows["train"][1:]),
            self.path("topk_cache"), k=k,
            temperature=topk_loss(self.config).temperature,
            tokenizer=TOKENIZER_IDENTITY if data.tokenizer == "bytes" else data.tokenizer,
            verbose=self.verbose)
        self.log(f"Top-k teacher cache: k={k}, {cache.bytes_per_token:.0f} bytes per "
                 f"token ({4 * data.vocabulary_size} dense)")
        return cache.dataset(self.config["data"]["batch_size"], shuffle=True, order=order)

    def tokens_per_second(self, data, epochs, seconds):
        """Training tokens per second of `epochs` that took `seconds` (None if none)."""
        if not seconds:
            return None
        tokens = (steps_per_epoch(self.config, data) * epochs
                  * self.config["data"]["batch_size"] * data.sequence_length)
        return tokens / seconds

    def perplexities(self, model, teacher, data, seed):
        """Test and validation perplexity, and the teacher's NLL of the model's samples."""
        batch = self.config["data"]["batch_size"]
        row = {
            "test_perplexity": perplexity(model, data.dataset("test", batch)),
            "validation_perplexity": perplexity(model, data.dataset("validation", batch)),
        }
        row["test_nll"] = math.log(row["test_perplexity"])
        sampling = self.config["distillation"]["sampling"]
        windows = sampling["sample_windows"]
        # Sampled continuations need one prompt length for every window, and
        # the teacher's tokens: not instruction data, nor another tokenizer.
        comparable = data.padding is None and data.teacher is None
        if windows and comparable and teacher is not None and model is not teacher:
            row["sample_nll"] = teacher_nll_of_samples(
                teacher, model, data.windows["test"][0][:windows], prompt_length(self.config),
                seed=seed, temperature=sampling["temperature"], top_k=sampling["top_k"],
                top_p=sampling["top_p"], batch_size=batch)
        return row


def load_preset_model(preset, argument):
    """A causal LM from a KerasHub preset; a `ConfigError` names what is wrong."""
    try:
        return presets.load_causal_lm(preset, argument)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def weak_teacher_warnings(rows):
    """A warning when the teacher's validation perplexity is no better than a student alone's."""
    teacher = next(row for row in rows if row["model"] == "teacher")["validation_perplexity"]
    alone = [row["validation_perplexity"] for row in rows if row["model"] == "student alone"]
    if not alone or teacher < min(alone):
        return []
    return [f"The teacher is no better than the student trained alone on the validation "
            f"text (perplexity {teacher:.3f} vs {min(alone):.3f}): distilling from it can "
            "only pass its mistakes on. Train the teacher longer (`teacher.epochs`) or "
            "make it larger."]


def run(config, verbose=1, log=print, restart=False):
    """Runs a validated `task: language` config; returns the metrics."""
    return LanguageJob(config, verbose=verbose, log=log, restart=restart).run()
