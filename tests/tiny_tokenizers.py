"""Tiny real tokenizers and presets for tests, built locally (nothing downloads).

A byte-level BPE GPT-2 tokenizer trained with Hugging Face `tokenizers`, and
a SentencePiece model (Gemma's and Llama's tokenizer) trained with
`sentencepiece`, both on a local license text: the kinds of tokenizer
published presets carry, at a few hundred tokens.
"""

import functools
import io
import json

TEXT_FILE = "/usr/share/common-licenses/GPL-3"


def corpus_lines():
    with open(TEXT_FILE, encoding="utf-8") as handle:
        return [line for line in handle.read().splitlines() if line.strip()]


@functools.cache
def bpe_vocabulary(vocabulary_size=400):
    """`(vocabulary, merges)` of a byte-level BPE, GPT-2's format."""
    from tokenizers import Tokenizer
    from tokenizers import models
    from tokenizers import pre_tokenizers
    from tokenizers import trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocabulary_size, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus_lines(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in model["merges"]]
    return model["vocab"], merges


def gpt2_tokenizer(vocabulary_size=400):
    import keras_hub

    vocabulary, merges = bpe_vocabulary(vocabulary_size)
    return keras_hub.models.GPT2Tokenizer(vocabulary=dict(vocabulary), merges=list(merges))


@functools.cache
def sentencepiece_proto(vocabulary_size=300, model_type="bpe", start="<s>", end="</s>"):
    """A serialized SentencePiece model: pad 0, unk 1, start 2, end 3."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()), model_writer=model,
        vocab_size=vocabulary_size, model_type=model_type, pad_id=0, unk_id=1, bos_id=2,
        eos_id=3, pad_piece="<pad>", unk_piece="<unk>", bos_piece=start, eos_piece=end,
        minloglevel=2)
    return model.getvalue()


def llama_tokenizer(vocabulary_size=300):
    import keras_hub

    return keras_hub.models.LlamaTokenizer(proto=sentencepiece_proto(vocabulary_size))


def gemma_tokenizer(vocabulary_size=300):
    import keras_hub

    proto = sentencepiece_proto(vocabulary_size, start="<bos>", end="<eos>")
    return keras_hub.models.GemmaTokenizer(proto=proto)


TOKENIZERS = {"gpt2": gpt2_tokenizer, "llama": llama_tokenizer, "gemma": gemma_tokenizer}


def causal_lm(architecture="gpt2", num_layers=2, hidden_dim=16, num_heads=2,
              sequence_length=32, seed=0, name=None, vocabulary_size=None):
    """A tiny `CausalLM` with its preprocessor and a real tokenizer (of the
    tokenizer's default size unless `vocabulary_size` is given)."""
    import keras

    from tf_distill.language import build_causal_lm
    from tf_distill.language import presets

    make = TOKENIZERS[architecture]
    tokenizer = make() if vocabulary_size is None else make(vocabulary_size)
    keras.utils.set_random_seed(seed)
    model = build_causal_lm(architecture, tokenizer.vocabulary_size(), num_layers=num_layers,
                            hidden_dim=hidden_dim, num_heads=num_heads,
                            max_sequence_length=sequence_length, name=name)
    return presets.with_preprocessor(
        model, presets.preprocessor_for(model, tokenizer, sequence_length))


def write_preset(folder, architecture="gpt2", **kwargs):
    """Writes a tiny preset folder; returns the model."""
    from tf_distill.language import presets

    model = causal_lm(architecture, **kwargs)
    presets.save_causal_lm_preset(model, folder)
    return model


# The export tests' smaller tokenizers.

# A few KB of text: enough for a SentencePiece model of about 70 pieces.
SHORT_TEXT = (
    "the quick brown fox jumps over the lazy dog. once upon a time a small model "
    "learned to write short sentences about foxes, dogs and the weather. it rains "
    "in the morning and the sun shines in the afternoon. distillation moves "
    "knowledge from a teacher to a student. a b c d e f g h i j k l m n o p. "
) * 16

# The special pieces each KerasHub tokenizer looks up by name.
SPECIAL_PIECES = {
    "gemma": {"pad_piece": "<pad>", "bos_piece": "<bos>", "eos_piece": "<eos>",
              "unk_piece": "<unk>"},
    "llama": {"pad_piece": "<pad>", "bos_piece": "<s>", "eos_piece": "</s>",
              "unk_piece": "<unk>"},
}


@functools.cache
def small_sentencepiece_proto(family):
    """The serialized SentencePiece model (bytes) for `"gemma"` or `"llama"`."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SHORT_TEXT.split(". ")),
        model_writer=model,
        vocab_size=96,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        character_coverage=1.0,
        minloglevel=2,
        **SPECIAL_PIECES[family],
    )
    return model.getvalue()


def small_sentencepiece_tokenizer(family):
    """A KerasHub `GemmaTokenizer` or `LlamaTokenizer` of the tiny model."""
    import keras_hub

    tokenizer_class = {
        "gemma": keras_hub.models.GemmaTokenizer,
        "llama": keras_hub.models.LlamaTokenizer,
    }[family]
    return tokenizer_class(proto=small_sentencepiece_proto(family))


def small_gpt2_tokenizer():
    """A KerasHub `GPT2Tokenizer`: every byte, a few merges and `<|endoftext|>`."""
    import keras_hub

    from tf_distill.export.litertlm_tokenizer import byte_characters

    vocabulary = {character: index for index, character in enumerate(byte_characters())}
    merges = ["t h", "th e", "Ġ th", "Ġth e", "o n", "Ġ a", "e r", "Ġ f", "o x", "Ġf ox"]
    for merge in merges:
        vocabulary.setdefault(merge.replace(" ", ""), len(vocabulary))
    vocabulary["<|endoftext|>"] = len(vocabulary)
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
