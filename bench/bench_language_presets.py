"""Evidence for presets, real tokenizers and instruction data (issue 19).

Instruction-style JSONL is made from local text (the license texts under
/usr/share/common-licenses): each sentence's first words are the prompt and
the words after them the response, so only response tokens count in the
losses and in the perplexity. Two pairs, each through `tf-distill run`
(`tf_distill.commands.language_run.run`) with 3 paired seeds:

1. **Same tokenizer.** A GPT-2 teacher with a byte-level BPE tokenizer
   (trained on the same text with Hugging Face `tokenizers`, as published
   GPT-2 presets carry one), trained here and written as a KerasHub preset
   folder; the config names it (`teacher: {preset: DIR}`). The student (a
   quarter of its width, one block) is trained alone and distilled with
   token-level forward KL.
2. **Different tokenizers, both subword.** A Llama teacher with a
   SentencePiece tokenizer, as a preset; a GPT-2 student preset with the BPE
   tokenizer of pair 1 (`student: {preset: DIR}`, untrained), alone and
   distilled by Universal Logit Distillation (`uld`): the paper's setting,
   at α = 0.5 and at α = 0.9 (ULD weighed at 1/9 of the cross-entropy).
3. **Different tokenizers, bytes.** The same teacher; a byte-level GPT-2
   student (`student.tokenizer: bytes`), alone and distilled by `uld`.

The figure is the held-out perplexity of the responses (each model in its
own tokens), mean ± std over seeds with the raw numbers, and the paired
verdict of `tf_distill.comparison`.

Usage:

    python bench/bench_language_presets.py [--quick] [--output bench_language_presets.json]

`--quick` (a few minutes) runs 1 seed with tiny models and few steps.
"""

import argparse
import json
import os
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tokenizers trained locally for the tests (nothing downloads).
sys.path.insert(0, os.path.join(REPO, "tests"))

import common  # noqa: E402
import tiny_tokenizers  # noqa: E402

TEXT = "/usr/share/common-licenses"


def instruction_examples(limit, prompt_words=4, response_words=8):
    """`(prompt, response)` pairs from the sentences of the license texts."""
    from tf_distill.data.text import text_files

    examples = []
    for path in text_files(TEXT):
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = " ".join(handle.read().split())
        for sentence in re.split(r"(?<=[.;:])\s+", text):
            words = sentence.split()
            if len(words) < prompt_words + 3:
                continue
            prompt = " ".join(words[:prompt_words])
            response = " " + " ".join(words[prompt_words:prompt_words + response_words])
            if len(prompt) + len(response) <= 80:  # fits every tokenizer's window
                examples.append((prompt, response))
    # A seeded shuffle: every file in every split.
    import numpy as np

    order = np.random.default_rng(0).permutation(len(examples))[:limit]
    return [examples[i] for i in order]


def fitting(examples, settings):
    """The examples every tokenizer of the bench fits in its window."""
    import numpy as np

    limits = [(tiny_tokenizers.TOKENIZERS[name](settings["vocabulary"]), settings["length"])
              for name in ("gpt2", "llama")]
    kept = [(prompt, response) for prompt, response in examples
            if len((prompt + response).encode()) + 2 <= settings["student_length"]
            and all(len(np.asarray(tokenizer(prompt + response))) + 4 <= length
                    for tokenizer, length in limits)]
    common.log(f"{len(kept)} of {len(examples)} examples fit every tokenizer's window")
    return kept


def write_jsonl(path, examples):
    with open(path, "w", encoding="utf-8") as handle:
        for prompt, response in examples:
            handle.write(json.dumps({"prompt": prompt, "response": response}) + "\n")
    return path


def train_teacher_preset(folder, architecture, source, settings):
    """Trains a teacher on the instruction data in its own tokens; writes its preset."""
    import keras

    from tf_distill import data as data_lib
    from tf_distill.language import presets

    tokenizer = tiny_tokenizers.TOKENIZERS[architecture](settings["vocabulary"])
    data = data_lib.load_instructions(source, tokenizer, sequence_length=settings["length"],
                                      validation_fraction=0.1, test_fraction=0.1)
    teacher = tiny_tokenizers.causal_lm(
        architecture, num_layers=settings["teacher_layers"], hidden_dim=settings["teacher_width"],
        num_heads=4, sequence_length=settings["length"], seed=0, name="teacher",
        vocabulary_size=settings["vocabulary"])
    tokenizer = teacher.preprocessor.tokenizer
    model = presets.without_preprocessor(teacher)
    model.compile(keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[])
    model.fit(data.dataset("train", 32, seed=0), epochs=settings["teacher_epochs"], verbose=0)
    presets.save_causal_lm_preset(model, folder, teacher.preprocessor)
    common.log(f"{architecture} teacher ({tokenizer.vocabulary_size()} tokens, "
               f"{model.count_params():,} parameters) written to {folder}")
    return folder


def run_pair(name, folder, teacher_preset, student, losses, source, settings,
             student_loss_weight=0.5):
    from tf_distill.commands import config as config_lib
    from tf_distill.commands.language_run import run as language_run

    raw = {
        "task": "language",
        "data": {"source": source, "sequence_length": settings["student_length"]
                 if student.get("tokenizer") == "bytes" else settings["length"],
                 "batch_size": 32, "validation_fraction": 0.1, "test_fraction": 0.1},
        "teacher": {"preset": teacher_preset},
        "student": student,
        "distillation": {"losses": losses, "student_loss_weight": student_loss_weight},
        "training": {"epochs": settings["epochs"], "learning_rate": 2e-3,
                     "seeds": settings["seeds"], "jit_compile": False,
                     "steps_per_epoch": settings["steps_per_epoch"]},
        "output": os.path.join(folder, name),
    }
    metrics = language_run(config_lib.validate(raw), verbose=0, log=common.log)
    rows = metrics["models"]
    teacher = next(row for row in rows if row["model"] == "teacher")
    return {
        "teacher_test_perplexity": teacher["test_perplexity"],
        "alone": [row["test_perplexity"] for row in rows if row["model"] == "student alone"],
        "distilled": [row["test_perplexity"] for row in rows
                      if row["model"] == "distilled student"],
        "student_loss_weight": student_loss_weight,
        "comparison": metrics["comparison"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: tiny everything")
    parser.add_argument("--output", default="bench_language_presets.json")
    args = parser.parse_args(argv)
    settings = {
        "examples": 6000, "vocabulary": 512, "length": 64, "student_length": 96,
        "teacher_layers": 2, "teacher_width": 128, "teacher_epochs": 12,
        "epochs": 3, "steps_per_epoch": None, "seeds": [0, 1, 2],
        "student": {"architecture": "gpt2", "num_layers": 1, "hidden_dim": 32,
                    "num_heads": 2},
    }
    if args.quick:
        settings.update(examples=600, teacher_epochs=1, epochs=1, steps_per_epoch=4,
                        seeds=[0], teacher_width=32)
    conditions = common.machine_conditions()
    with tempfile.TemporaryDirectory() as folder:
        source = write_jsonl(os.path.join(folder, "instructions.jsonl"),
                             fitting(instruction_examples(settings["examples"]), settings))
        results = {"settings": settings, "conditions": conditions}
        bpe = train_teacher_preset(os.path.join(folder, "gpt2_teacher"), "gpt2", source,
                                   settings)
        results["same_tokenizer"] = run_pair(
            "same", folder, bpe, settings["student"], [{"name": "token_kd"}], source, settings)
        sentencepiece = train_teacher_preset(os.path.join(folder, "llama_teacher"), "llama",
                                             source, settings)
        student_preset = os.path.join(folder, "gpt2_student")
        student = settings["student"]
        tiny_tokenizers.write_preset(
            student_preset, "gpt2", num_layers=student["num_layers"],
            hidden_dim=student["hidden_dim"], num_heads=student["num_heads"],
            sequence_length=settings["length"], vocabulary_size=settings["vocabulary"])
        results["cross_tokenizer_subword"] = run_pair(
            "cross_subword", folder, sentencepiece, {"preset": student_preset},
            [{"name": "uld"}], source, settings)
        # The paper weighs ULD against the cross-entropy (its λ); a light
        # weight, α = 0.9 (ULD at 1/9 of the cross-entropy).
        results["cross_tokenizer_subword_light"] = run_pair(
            "cross_subword_light", folder, sentencepiece, {"preset": student_preset},
            [{"name": "uld"}], source, settings, student_loss_weight=0.9)
        results["cross_tokenizer_bytes"] = run_pair(
            "cross_bytes", folder, sentencepiece, {**student, "tokenizer": "bytes"},
            [{"name": "uld"}], source, settings)
    for name in ("same_tokenizer", "cross_tokenizer_subword", "cross_tokenizer_subword_light",
                 "cross_tokenizer_bytes"):
        common.log(f"{name}: {results[name]['comparison']['sentence']}")
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=2)
    common.log(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
