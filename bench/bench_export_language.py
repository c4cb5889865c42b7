"""Benchmark: LiteRT export of a small causal LM, every quantization mode.

A KerasHub GPT-2 (2 layers, hidden 64, byte vocabulary of 256, length 32) is
trained briefly on the texts of `/usr/share/common-licenses` (bytes as
tokens), then exported with `tf_distill.export.export_causal_lm` in the
float32, float16, dynamic and int8 (weight-only) modes and verified on
held-out sequences. Reported, side by side in one run:

1. each file's size, the largest logit difference from Keras, the
   perplexity of Keras and LiteRT on the held-out tokens and its change;
2. whether `greedy_decode` over each file reproduces the Keras greedy output
   (`keras_greedy_decode`) for 32 tokens;
3. the conversion that gave NaN logits (`from_concrete_functions` with the
   model as trackable object): its file size and the `ExportError` that
   verification raises on it.

With `--part litertlm`, the `.litertlm` export (`export_litertlm`: prefill
and decode signatures over a KV cache, run by the LiteRT-LM runtime):

4. a GPT-2 of the same shape but 1,024 positions, trained the same way, in
   float32, int8 and int4: perplexity change, greedy tokens equal to
   Keras's `generate` (64 tokens after 3 prompts), the interpreter's decode
   latency per token at positions 32 and 512 (one 576-row cache: the
   goal is a ratio <= 1.5) beside the fixed-window file's at L = 32 and
   512 and the cached step's by cache length, and the runtime's own prefill
   and decode tokens per second (`litert_lm.Benchmark`) beside Keras's;
5. a wider, untrained GPT-2 (4 layers, hidden 512: 12.9M parameters) in the
   three modes: file size and the peak RSS of a process that loads the file
   in `litert_lm.Engine` and generates 64 tokens (nothing else imported),
   also less that process's RSS right after `import litert_lm`.

Usage (from the repository root; about 5 minutes each on 2 shared CPU cores):

    python bench/bench_export_language.py
    python bench/bench_export_language.py --part litertlm

Writes section "export_language" (or "export_litertlm") of docs/BENCHMARKS.md
unless --no-write.
"""

import argparse
import glob
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import numpy as np  # noqa: E402

MODES = ("float32", "float16", "dynamic", "int8")
SEQUENCE_LENGTH = 32
PROMPT = b"This License "


def corpus_sequences(folder, length):
    """The folder's files as byte tokens, cut into sequences of `length`."""
    text = b"".join(
        open(path, "rb").read()
        for path in sorted(glob.glob(os.path.join(folder, "*")))
        if os.path.isfile(path)
    )
    tokens = np.frombuffer(text, np.uint8).astype("int32")
    count = len(tokens) // length
    return tokens[: count * length].reshape(count, length)


def train_model(train, epochs, seed, max_sequence_length=SEQUENCE_LENGTH):
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        intermediate_dim=128,
        max_sequence_length=max_sequence_length,
    )
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inputs = {"token_ids": train[:, :-1], "padding_mask": np.ones_like(train[:, :-1], bool)}
    model.fit(inputs, train[:, 1:], batch_size=64, epochs=epochs, verbose=0)
    return model


def nan_conversion(model, token_data):
    """The conversion that gave NaN logits, and what verification says of it."""
    import tensorflow as tf

    from tf_distill import export

    @tf.function
    def logits(token_ids, padding_mask):
        return model({"token_ids": token_ids, "padding_mask": padding_mask}, training=False)

    function = logits.get_concrete_function(
        tf.TensorSpec([1, SEQUENCE_LENGTH], tf.int32, name="token_ids"),
        tf.TensorSpec([1, SEQUENCE_LENGTH], tf.bool, name="padding_mask"),
    )
    broken = tf.lite.TFLiteConverter.from_concrete_functions([function], model).convert()
    try:
        export.verify_causal_lm(broken, model, token_data, latency_runs=0)
    except export.ExportError as error:
        return len(broken), str(error).split(". Nothing")[0]
    return len(broken), "not caught"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="/usr/share/common-licenses")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--held-out", type=int, default=64, help="held-out sequences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="do not write docs/BENCHMARKS.md")
    parser.add_argument("--part", choices=("fixed", "litertlm"), default="fixed",
                        help="the fixed-window .tflite export, or the .litertlm one")
    args = parser.parse_args(argv)
    if args.part == "litertlm":
        import bench_litertlm

        return bench_litertlm.main(args, argv)

    from tf_distill import export

    sequences = corpus_sequences(args.corpus, SEQUENCE_LENGTH)
    np.random.RandomState(args.seed).shuffle(sequences)
    train, held_out = sequences[: -args.held_out], sequences[-args.held_out :]
    conditions = common.machine_conditions()
    model = train_model(train, args.epochs, args.seed)
    prompt = np.frombuffer(PROMPT, np.uint8).astype("int32")
    expected = export.keras_greedy_decode(model, prompt, num_tokens=32)
    reports, greedy_rows = [], []
    with tempfile.TemporaryDirectory() as folder:
        for mode in MODES:
            path = os.path.join(folder, f"lm_{mode}.tflite")
            report = export.export_causal_lm(
                model, path, token_data=held_out, quantization=mode, latency_runs=50
            )
            reports.append(report)
            generated = export.greedy_decode(path, prompt, num_tokens=32)
            greedy_rows.append(
                {
                    "mode": f"`{mode}`",
                    "equal": f"{int(np.sum(generated == expected))}/32",
                    "output": f"`{bytes(generated.astype(np.uint8))!r}`",
                }
            )
    broken_size, caught = nan_conversion(model, held_out[:8])
    greedy = common.markdown_table(
        greedy_rows,
        [
            ("mode", "Mode", "s"),
            ("equal", "Tokens equal to Keras greedy", "s"),
            ("output", "LiteRT greedy output", "s"),
        ],
    )
    markdown = "\n".join(
        [
            "## LiteRT export of a causal LM",
            "",
            f"Command: `{common.command_line(argv)}`",
            "",
            f"GPT-2 (2 layers, hidden 64, vocabulary 256, length {SEQUENCE_LENGTH}), "
            f"{args.epochs} epochs on {len(train)} byte sequences of {args.corpus}; "
            f"verified on {len(held_out)} held-out sequences "
            f"({reports[0].num_tokens} next-token predictions).",
            "",
            export.reports_table(reports),
            f"Greedy decoding from the prompt {PROMPT!r}, 32 tokens "
            f"(Keras: `{bytes(expected.astype(np.uint8))!r}`):",
            "",
            greedy,
            "",
            "The conversion that gave NaN logits (`from_concrete_functions([fn], model)`): "
            f"a {broken_size:,}-byte file (no weights in it; float32 with weights: "
            f"{reports[0].file_size_bytes:,} bytes). Verification: {caught}.",
            "",
            common.conditions_markdown(conditions, load_after=common.current_load()),
        ]
    )
    common.publish("export_language", markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
