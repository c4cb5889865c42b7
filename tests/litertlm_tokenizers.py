"""Tiny real tokenizers built here, nothing downloaded: SentencePiece (Gemma's and
Llama's special pieces) trained on a few KB of text, and a GPT-2 byte-level BPE."""

import functools
import io

# A few KB of text: enough for a SentencePiece model of about 70 pieces.
TEXT = (
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
def sentencepiece_proto(family):
    """The serialized SentencePiece model (bytes) for `"gemma"` or `"llama"`."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT.split(". ")),
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


def sentencepiece_tokenizer(family):
    """A KerasHub `GemmaTokenizer` or `LlamaTokenizer` of the tiny model."""
    import keras_hub

    tokenizer_class = {
        "gemma": keras_hub.models.GemmaTokenizer,
        "llama": keras_hub.models.LlamaTokenizer,
    }[family]
    return tokenizer_class(proto=sentencepiece_proto(family))


def gpt2_tokenizer():
    """A KerasHub `GPT2Tokenizer`: every byte, a few merges and `<|endoftext|>`."""
    import keras_hub

    from tf_distill.export.litertlm_tokenizer import byte_characters

    vocabulary = {character: index for index, character in enumerate(byte_characters())}
    merges = ["t h", "th e", "Ġ th", "Ġth e", "o n", "Ġ a", "e r", "Ġ f", "o x", "Ġf ox"]
    for merge in merges:
        vocabulary.setdefault(merge.replace(" ", ""), len(vocabulary))
    vocabulary["<|endoftext|>"] = len(vocabulary)
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
