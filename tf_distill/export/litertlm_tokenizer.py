"""A KerasHub tokenizer as a file the `.litertlm` container can hold.

The LiteRT-LM runtime tokenizes with either a SentencePiece model or a
Hugging Face `tokenizer.json`. `write_tokenizer` turns:

- a `SentencePieceTokenizer` (Gemma's, Llama's) into its own serialized
  model proto;
- a `BytePairTokenizer` (GPT-2's) into a byte-level BPE `tokenizer.json`
  with the same vocabulary and merges, its special tokens kept whole;
- a `ByteTokenizer` (a `task: language` run's, one id per byte) into a
  byte-level `tokenizer.json` of 256 single-byte tokens and no merges, with
  no start token and the NUL byte as its stop token (the runtime requires
  one).
"""

import dataclasses
import os

# GPT-2's byte-level BPE: the printable character standing for each byte.
_PRINTABLE = (
    list(range(ord("!"), ord("~") + 1))
    + list(range(ord("¡"), ord("¬") + 1))
    + list(range(ord("®"), ord("ÿ") + 1))
)


@dataclasses.dataclass(frozen=True)
class TokenizerFile:
    """A tokenizer written for the container.

    Attributes:
        path: The file.
        kind: `"sentencepiece"` or `"huggingface"`.
        start_token_id: The id the runtime puts before a prompt, or `None`.
        stop_token_ids: The ids that end generation (may be empty).
    """

    path: str
    kind: str
    start_token_id: int | None
    stop_token_ids: tuple


def byte_characters():
    """The 256 characters byte-level BPE writes for bytes 0..255, in byte order."""
    extra = iter(range(256, 512))
    return [chr(byte) if byte in _PRINTABLE else chr(next(extra)) for byte in range(256)]


def write_tokenizer(tokenizer, directory):
    """Writes `tokenizer` into `directory` in a form the container holds.

    Args:
        tokenizer: A KerasHub `SentencePieceTokenizer`, `BytePairTokenizer`
            or `ByteTokenizer` (or a subclass, as `GemmaTokenizer`).
        directory: An existing folder.

    Returns:
        A `TokenizerFile`.

    Raises:
        ValueError: For another tokenizer, or one without its vocabulary.
    """
    import keras_hub

    tokenizers = keras_hub.tokenizers
    start = _token_id(tokenizer, "start_token_id")
    end = _token_id(tokenizer, "end_token_id")
    stop = () if end is None else (end,)
    if isinstance(tokenizer, tokenizers.SentencePieceTokenizer):
        if tokenizer.proto is None:
            raise ValueError(
                "The SentencePiece tokenizer has no model (`proto` is None): give it one "
                "before exporting."
            )
        path = os.path.join(directory, "tokenizer.model")
        with open(path, "wb") as handle:
            handle.write(tokenizer.proto)
        return TokenizerFile(path, "sentencepiece", start, stop)
    if isinstance(tokenizer, tokenizers.BytePairTokenizer):
        if tokenizer.vocabulary is None:
            raise ValueError(
                "The byte-pair tokenizer has no vocabulary: give it one before exporting."
            )
        merges = [tuple(merge.split(" ")) for merge in tokenizer.merges]
        special = [
            token for token in (getattr(tokenizer, "special_tokens", None) or [])
            if token in tokenizer.vocabulary
        ]
        hf_tokenizer = _byte_level(dict(tokenizer.vocabulary), merges, special, lowercase=False)
        return TokenizerFile(_save(hf_tokenizer, directory), "huggingface", start, stop)
    if isinstance(tokenizer, tokenizers.ByteTokenizer):
        vocabulary = {character: byte for byte, character in enumerate(byte_characters())}
        hf_tokenizer = _byte_level(vocabulary, [], [], lowercase=tokenizer.lowercase)
        # The runtime requires a stop token and bytes have none: the NUL byte,
        # which text does not hold, stands in.
        return TokenizerFile(_save(hf_tokenizer, directory), "huggingface", start, stop or (0,))
    raise ValueError(
        "The `.litertlm` container holds a SentencePiece model or a Hugging Face "
        "tokenizer.json, made here from a KerasHub SentencePieceTokenizer (Gemma, "
        f"Llama), BytePairTokenizer (GPT-2) or ByteTokenizer. Received: a "
        f"{type(tokenizer).__name__}"
    )


def _token_id(tokenizer, attribute):
    value = getattr(tokenizer, attribute, None)
    return None if value is None else int(value)


def _byte_level(vocabulary, merges, special_tokens, lowercase):
    import tokenizers

    hf_tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocabulary, merges=merges))
    if lowercase:
        hf_tokenizer.normalizer = tokenizers.normalizers.Lowercase()
    hf_tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf_tokenizer.decoder = tokenizers.decoders.ByteLevel()
    if special_tokens:
        hf_tokenizer.add_special_tokens(
            [tokenizers.AddedToken(token, special=True) for token in special_tokens]
        )
    return hf_tokenizer


def _save(hf_tokenizer, directory):
    path = os.path.join(directory, "tokenizer.json")
    hf_tokenizer.save(path)
    return path
