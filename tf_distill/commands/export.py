"""`tf-distill export`: which student and which data an export uses.

`tf-distill export RUN_DIR` exports the student of a `tf-distill run` folder
(its first seed's, or `--seed N`'s) and calibrates and verifies it on that run's data, read from the
`config.yaml` the run wrote. `tf-distill export MODEL.keras` does the same
when the model lies in a run folder, and otherwise uses the `digits` data,
saying so. `--data` overrides either. A model whose input shape does not fit
the data is refused by `export_litert` before anything is converted. The
student of a `task: language` run (a causal LM) is verified on the test
windows of the run's text (`export_litert` hands it to `export_causal_lm`).
"""

import json
import os

from tf_distill.commands import config as config_lib
from tf_distill.commands.checks import ConfigError
from tf_distill.commands.run import CONFIG_FILE
from tf_distill.language import models as language_models

# The data of a model exported outside any run folder, without `--data`.
DEFAULT_DATA = "digits"


def _run_seeds(folder):
    """The seeds a run trained, from its `metrics.json` (`[]` if it has none)."""
    try:
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as handle:
            return list(json.load(handle).get("seeds") or [])
    except (OSError, ValueError, AttributeError):
        return []


def run_student(folder, seed=None):
    """The path of a run folder's distilled student.

    `student.keras`, or with `training.seeds` the first seed's
    `student_seed<N>.keras` (the seeds are read from `metrics.json`).

    Args:
        folder: The output folder of a `tf-distill run`.
        seed: The seed whose student to take; `None` for the default above.

    Raises:
        ConfigError: if the folder holds no student, or none of `seed`.
    """
    seeds = _run_seeds(folder)
    single = os.path.join(folder, "student.keras")
    if seed is not None:
        if seed not in seeds:
            trained = (f"it trained seeds {seeds}" if seeds
                       else "its metrics.json records no seeds")
            raise ConfigError(
                f"The run folder {folder!r} has no student of seed {seed}: {trained}. "
                "Give one of these to --seed."
            )
        candidates = [single, os.path.join(folder, f"student_seed{seed}.keras")]
    else:
        candidates = [single] + [
            os.path.join(folder, f"student_seed{each}.keras") for each in seeds
        ]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ConfigError(
        f"The folder {folder!r} holds no distilled student: expected student.keras, "
        "or student_seed<N>.keras for the seeds in its metrics.json. Give the "
        "output folder of a finished `tf-distill run`, or a .keras file."
    )


def run_config(folder):
    """The validated config a run wrote into `folder`, or `None` if there is none."""
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    return config_lib.load(path)


def export_data(model, data_config, representative_size, tokenizer=None):
    """`(representative_data, validation_data)` for `export_litert` of `model`.

    A causal LM is verified on the test windows of the text `data_config`
    names (`{"token_ids", "padding_mask"}`), in `tokenizer`'s tokens (bytes
    when `None`, see `run_tokenizer`); a classifier is calibrated on the
    first `representative_size` training examples and verified on the test
    split.
    """
    from tf_distill.export.language import is_causal_lm

    if is_causal_lm(model):
        from tf_distill.commands.language_run import load_corpus

        corpus = load_corpus({k: v for k, v in data_config.items() if k != "seed"}, tokenizer)
        return None, corpus.inputs("test")
    from tf_distill.commands.common import load_data

    data = load_data(data_config)
    return data.x_train[:representative_size], (data.x_test, data.y_test)


def export_inputs(target, data=None, seed=None):
    """The model file and the data config of `tf-distill export TARGET`.

    Args:
        target: A run folder or a `.keras` model file.
        data: The `--data` source, which overrides the run's data.
        seed: The `--seed` whose student a run folder gives; `None` for its
            first seed's. Refused for a model file.

    Returns:
        `(model_path, data_config, origin)`: the data config is a `data:`
        section for `common.load_data`; `origin` says in words where the
        data comes from.

    Raises:
        ConfigError: for a folder without a student (of `seed`), or a `seed`
            with a model file.
    """
    target = os.fspath(target)
    if os.path.isdir(target):
        folder, model_path = target, run_student(target, seed)
    elif seed is not None:
        raise ConfigError(
            f"--seed chooses the student of a run folder; {target!r} is a model file. "
            "Give the run folder, or leave out --seed."
        )
    else:
        folder, model_path = os.path.dirname(target) or ".", target
    if data is not None:
        return model_path, {"source": data, "seed": 0}, f"{data} (--data)"
    config = run_config(folder)
    if config is not None:
        where = os.path.join(folder, CONFIG_FILE)
        return model_path, config["data"], f"{config['data']['source']} (from {where})"
    if os.path.isdir(target):
        raise ConfigError(
            f"The run folder {target!r} has no {CONFIG_FILE} (a run made before "
            "tf-distill wrote one) to read its data from. Give the data with "
            "--data SOURCE (as in a config's `data.source`)."
        )
    return (model_path, {"source": DEFAULT_DATA, "seed": 0},
            f"{DEFAULT_DATA} (the default; give --data for other data)")


# The `.litertlm` export of a language run: prompts of the runtime check and
# at most this many test windows to verify on (each token is one decode call).
LANGUAGE_PROMPTS = ("the", "a", "once upon a time")
LANGUAGE_VERIFY_WINDOWS = 16
# The cache of a student that records no maximum length, exported with --data.
DEFAULT_LANGUAGE_CACHE_LENGTH = 128


def run_tokenizer(model, model_path):
    """The tokenizer of a language run's student, or `None` for bytes.

    Its preprocessor's, else that of the preset folder a run writes beside a
    student with a tokenizer (`student_preset/` beside `student.keras`).
    """
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if tokenizer is not None:
        return tokenizer
    folder = os.path.splitext(os.fspath(model_path))[0] + "_preset"
    if not os.path.isdir(folder):
        return None
    import keras_hub

    return keras_hub.tokenizers.Tokenizer.from_preset(folder)


def export_language(model, model_path, output, data_config, quantization, latency_runs=20):
    """Writes a language run's student as a verified `.litertlm` and its report.

    The tokenizer is the student's (`run_tokenizer`; the byte tokenizer of
    `tf_distill.data.load_text` when it has none). The cache is the
    student's `max_sequence_length` long (the run's `data.sequence_length`
    for a Gemma or Llama student, whose `.keras` file does not record it),
    a prefill call takes up to 32
    tokens (half the cache for short models), and the student is verified on
    the first test windows of the run's text, cut to the runtime's context,
    and on the prompts of `LANGUAGE_PROMPTS` that fit.

    Returns:
        The `ExportReport`.
    """
    from tf_distill.export.litertlm import export_litertlm
    from tf_distill.export.quantizer import check_language_quantization

    check_language_quantization(quantization)
    # Gemma and Llama record no maximum in a .keras file: the run's windows.
    cache_length = (language_models.max_sequence_length(model)
                    or data_config.get("sequence_length") or DEFAULT_LANGUAGE_CACHE_LENGTH)
    prefill_length = min(32, cache_length // 2)
    context = cache_length - prefill_length
    tokenizer = run_tokenizer(model, model_path)
    inputs = export_data(model, data_config, 0, tokenizer)[1]
    token_data = {key: value[:LANGUAGE_VERIFY_WINDOWS, :context] for key, value in inputs.items()}
    if tokenizer is None:
        import keras_hub

        tokenizer = keras_hub.tokenizers.ByteTokenizer(
            lowercase=bool(data_config.get("lowercase", False)))
    # A prompt has at most one token per character, and a start token.
    prompts = [prompt for prompt in LANGUAGE_PROMPTS if len(prompt) + 1 < context] or ["a"]
    num_tokens = max(1, min(32, context - max(len(prompt) for prompt in prompts) - 1))
    return export_litertlm(
        model, output, token_data, tokenizer=tokenizer, quantization=quantization,
        cache_length=cache_length, prefill_length=prefill_length, prompts=prompts,
        num_tokens=num_tokens, latency_runs=latency_runs,
        report_path=os.path.splitext(output)[0] + ".md",
    )
