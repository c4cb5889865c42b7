"""`tf-distill run` of a `task: language` config: distilling a KerasHub causal LM.

Text → the teacher (loaded from `teacher.path`, or trained) → for each seed
of `training.seeds`, the student trained alone and distilled from the same
initial weights → held-out perplexity of each, the teacher's NLL of each
student's own samples (the exposure-bias measure), training tokens per
second, `metrics.json`, `report.md` and `config.yaml`. The phases, resuming
and refusing another config's folder are the classifier run's
(`tf_distill.commands.run.Job`).
"""

import math
import os
import time

import yaml

from tf_distill import data as data_lib
from tf_distill import saving
from tf_distill.backend import keras
from tf_distill.cache.topk import build_topk_cache
from tf_distill.commands import common
from tf_distill.commands.config import ConfigError
from tf_distill.commands.language_report import language_comparison
from tf_distill.commands.language_report import write_language_report
from tf_distill.commands.run import CONFIG_FILE
from tf_distill.commands.run import Job
from tf_distill.commands.run import config_hash
from tf_distill.distillers.distiller import Distiller
from tf_distill.distillers.on_policy import OnPolicyDistiller
from tf_distill.files import atomic_write
from tf_distill.files import atomic_write_json
from tf_distill.language import build_causal_lm
from tf_distill.language.evaluation import perplexity
from tf_distill.language.evaluation import teacher_nll_of_samples
from tf_distill.losses.topk import TopKDistillation
from tf_distill.optimizers import learning_rate_schedule
from tf_distill.optimizers import make_optimizer

# What the top-k cache's fingerprint knows of the tokenizer.
TOKENIZER_IDENTITY = "keras_hub.ByteTokenizer"
MODEL_SIZES = ("num_layers", "hidden_dim", "num_heads", "intermediate_dim",
               "num_key_value_heads", "max_sequence_length", "dropout")


def load_corpus(data_config):
    """The text a config's `data:` section names, as `TextSplits`."""
    options = {k: v for k, v in data_config.items() if k not in ("source", "batch_size")}
    try:
        return data_lib.load_text(data_config["source"], **options)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(f"`data`: {error}") from None


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
    """Runs one `task: language` config; `LanguageJob(config).run()` returns the metrics."""

    def run(self):
        common.check_output_folder(self.output)
        return self.run_in(None)

    def train_dataset(self, data, seed):
        batch = self.config["data"]["batch_size"]
        return data.dataset("train", batch, shuffle=True, seed=seed).repeat()

    def fit(self, model, data, seed, epochs, phase, train=None):
        """Fits a compiled model (or distiller); returns `(history, seconds, tokens/s)`."""
        steps = steps_per_epoch(self.config, data)
        if epochs == 0:
            return {}, 0.0, None
        self.claim()
        start = time.perf_counter()
        # No validation pass per epoch: the validation perplexity is measured
        # once at the end, and each evaluation graph costs a trace.
        history = model.fit(
            self.train_dataset(data, seed) if train is None else train,
            steps_per_epoch=steps, epochs=epochs,
            verbose=self.verbose,
            callbacks=[self.backup(phase), keras.callbacks.TerminateOnNaN()],
        )
        seconds = time.perf_counter() - start
        history = common.history_dict(history)
        common.check_finite(history, phase)
        return history, seconds, self.trained_tokens(data, epochs) / seconds

    def train_alone(self, model, data, seed, epochs, learning_rate, phase):
        model.compile(
            optimizer=language_optimizer(self.config, data, learning_rate=learning_rate,
                                         epochs=epochs),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[],
            jit_compile=common.jit_compile(self.config),
        )
        return self.fit(model, data, seed, epochs, phase)

    def teacher(self, data):
        """The teacher: loaded, reused from an interrupted run, or trained."""
        section = self.config["teacher"]
        if section["path"] is not None:
            if not os.path.isfile(section["path"]):
                raise ConfigError(f"`teacher.path` is not a readable file. Received: "
                                  f"teacher.path={section['path']!r}")
            teacher = saving.load_model(section["path"], unsafe=self.config["unsafe"])
            self.log(f"Teacher: loaded {section['path']}")
            return teacher, None, 0.0, None
        if self.done("teacher", "teacher.keras"):
            self.log("Reusing the teacher trained before")
            values = self.state["phases"]["teacher"]
            return (saving.load_model(self.shared_path("teacher.keras")), values["history"],
                    values["seconds"], values["tokens_per_second"])
        teacher = build_model(section, data.vocabulary_size, "teacher",
                              seed=self.config["training"]["seed"])
        self.log(f"Training the teacher ({teacher.count_params():,} parameters, "
                 f"{section['epochs']} epochs)")
        history, seconds, speed = self.train_alone(
            teacher, data, self.config["training"]["seed"], section["epochs"],
            section["learning_rate"], "teacher")
        saving.save_model(common.without_training_state(teacher), self.path("teacher.keras"))
        self.save_phase("teacher", history=history, seconds=seconds, tokens_per_second=speed)
        return teacher, history, seconds, speed

    def check_teacher(self, teacher, data):
        vocabulary = model_vocabulary(teacher)
        if vocabulary is not None and vocabulary != data.vocabulary_size:
            raise ConfigError(
                f"The teacher's vocabulary ({vocabulary} tokens) differs from the text's "
                f"tokenizer ({data.vocabulary_size} byte tokens): their token ids mean "
                "different things."
            )

    def distiller(self, teacher, student, seed):
        """The `Distiller` the `distillation:` section asks for (on-policy when λ > 0)."""
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
            temperature=sampling["temperature"], top_k=sampling["top_k"],
            top_p=sampling["top_p"], seed=seed, **arguments)

    def distill(self, teacher, student, data, seed):
        """Distills into `student`; returns `(history, seconds, tokens/s)`.

        With `distillation.top_k`, the teacher's top-k log-probabilities of
        the training windows are cached once (in `topk_cache/`, fingerprinted:
        a cache of another teacher or text is refused) and the student learns
        from them without running the teacher; the cache's build counts in
        the distillation time.
        """
        training = self.config["training"]
        distiller = self.distiller(teacher, student, seed)
        distiller.compile(
            optimizer=language_optimizer(self.config, data,
                                         learning_rate=training["learning_rate"],
                                         epochs=training["epochs"]),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=common.jit_compile(self.config),
        )
        start = time.perf_counter()
        train = None
        k = self.config["distillation"]["top_k"]
        if k is not None:
            cache = build_topk_cache(
                teacher, (data.inputs("train"), *data.windows["train"][1:]),
                self.path("topk_cache"), k=k,
                temperature=topk_loss(self.config).temperature,
                tokenizer=TOKENIZER_IDENTITY)
            self.log(f"Top-k teacher cache: k={k}, {cache.bytes_per_token:.0f} bytes per "
                     f"token ({4 * data.vocabulary_size} dense)")
            train = cache.dataset(self.config["data"]["batch_size"], shuffle=True, seed=seed,
                                  repeat=True)
        history, seconds, _ = self.fit(distiller, data, seed, training["epochs"],
                                       f"distill{self.suffix(seed)}", train=train)
        seconds = time.perf_counter() - start
        return history, seconds, self.trained_tokens(data, training["epochs"]) / seconds

    def trained_tokens(self, data, epochs):
        return (steps_per_epoch(self.config, data) * epochs * self.config["data"]["batch_size"]
                * data.sequence_length)

    def scores(self, model, teacher, data, seed):
        """Test and validation perplexity, and the teacher's NLL of the model's samples."""
        batch = self.config["data"]["batch_size"]
        row = {
            "test_perplexity": perplexity(model, data.dataset("test", batch)),
            "validation_perplexity": perplexity(model, data.dataset("validation", batch)),
        }
        row["test_nll"] = math.log(row["test_perplexity"])
        sampling = self.config["distillation"]["sampling"]
        windows = sampling["sample_windows"]
        if windows and teacher is not None and model is not teacher:
            row["sample_nll"] = teacher_nll_of_samples(
                teacher, model, data.windows["test"][0][:windows], prompt_length(self.config),
                seed=seed, temperature=sampling["temperature"], top_k=sampling["top_k"],
                top_p=sampling["top_p"], batch_size=batch)
        return row

    def run_in(self, strategy):
        training = self.config["training"]
        keras.utils.set_random_seed(training["seed"])
        data = load_corpus(self.config["data"])
        self.hash = config_hash(self.config, data)
        self.state = {"config_hash": self.hash, "phases": {}}
        self.read_state()
        self.log(f"Text: {data.name}: {data.sizes['train']} train, "
                 f"{data.sizes['validation']} validation, {data.sizes['test']} test "
                 f"windows of {data.sequence_length} byte tokens")
        teacher, teacher_history, teacher_seconds, teacher_speed = self.teacher(data)
        self.check_teacher(teacher, data)
        histories = {"teacher": teacher_history} if teacher_history else {}
        rows = [{"model": "teacher", "seed": None,
                 "parameters": int(teacher.count_params()), "train_seconds": teacher_seconds,
                 "tokens_per_second": teacher_speed,
                 **self.scores(teacher, None, data, training["seed"])}]
        for seed in self.seeds():
            rows += self.run_seed(teacher, data, seed, histories)
        warnings = weak_teacher_warnings(rows)
        for warning in warnings:
            self.log(f"Warning: {warning}")
        results = {
            "task": "language",
            "data": {"name": data.name, "identity": data.fingerprint,
                     "sequence_length": data.sequence_length,
                     "vocabulary_size": data.vocabulary_size,
                     **{split: data.tokens(split) for split in data_lib.text.TEXT_SPLITS}},
            "seeds": self.seeds(),
            "models": rows,
            "histories": histories,
            "warnings": warnings,
        }
        results["comparison"] = language_comparison(rows)
        results["summary"] = results["comparison"]["sentence"] if results["comparison"] else None
        atomic_write_json(self.path("metrics.json"), results)
        config_text = yaml.safe_dump(self.config, sort_keys=False)
        atomic_write(self.path(CONFIG_FILE), config_text)
        results["files"] = write_language_report(self.folder, results, histories, config_text)
        return results

    def run_seed(self, teacher, data, seed, histories):
        """The student alone and distilled, from the same initial weights, for one seed."""
        training = self.config["training"]
        suffix = self.suffix(seed)
        student = build_model(self.config["student"], data.vocabulary_size, "student",
                              seed=seed)
        initial_weights = student.get_weights()
        rows = []
        if training["baseline"]:
            phase, filename = f"baseline{suffix}", f"student_alone{suffix}.keras"
            if self.done(phase, filename):
                self.log(f"Reusing the student trained alone{self.seed_text(seed)} before")
                alone = saving.load_model(self.shared_path(filename))
                values = self.state["phases"][phase]
            else:
                alone = build_model(self.config["student"], data.vocabulary_size,
                                    "student_alone", seed=seed)
                alone.set_weights(initial_weights)
                self.log(f"Training the student alone{self.seed_text(seed)} "
                         f"({alone.count_params():,} parameters, {training['epochs']} epochs)")
                keras.utils.set_random_seed(seed)
                history, seconds, speed = self.train_alone(
                    alone, data, seed, training["epochs"], training["learning_rate"], phase)
                saving.save_model(common.without_training_state(alone), self.path(filename))
                values = {"history": history, "seconds": seconds, "tokens_per_second": speed}
                self.save_phase(phase, **values)
            histories[f"student alone{self.seed_text(seed)}"] = values["history"]
            rows.append({"model": "student alone", "seed": seed,
                         "parameters": int(alone.count_params()),
                         "train_seconds": values["seconds"],
                         "tokens_per_second": values["tokens_per_second"],
                         **self.scores(alone, teacher, data, seed)})
        self.log(f"Distilling into the student{self.seed_text(seed)} "
                 f"({training['epochs']} epochs)")
        keras.utils.set_random_seed(seed)
        history, seconds, speed = self.distill(teacher, student, data, seed)
        histories[f"distilled student{self.seed_text(seed)}"] = history
        saving.save_model(common.without_training_state(student),
                          self.path(f"student{suffix}.keras"))
        rows.append({"model": "distilled student", "seed": seed,
                     "parameters": int(student.count_params()), "train_seconds": seconds,
                     "tokens_per_second": speed, **self.scores(student, teacher, data, seed)})
        return rows


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
