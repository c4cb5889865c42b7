"""Tokenizers as the text loaders use them: ids, end tokens, fingerprints.

Any KerasHub tokenizer works: the byte tokenizer of the demo (256 ids, no
vocabulary file), a preset's BPE (`GPT2Tokenizer`), SentencePiece
(`GemmaTokenizer`, `LlamaTokenizer`) or WordPiece tokenizer.
"""

import hashlib

import numpy as np

# The byte tokenizer has no special tokens: byte 0 (NUL, never in text)
# ends a sequence, and pads it.
BYTE_END_TOKEN_ID = 0


def byte_tokenizer(lowercase=False):
    """KerasHub's `ByteTokenizer`: one token id per UTF-8 byte."""
    import keras_hub

    return keras_hub.tokenizers.ByteTokenizer(lowercase=lowercase)


def is_byte_tokenizer(tokenizer):
    import keras_hub

    return isinstance(tokenizer, keras_hub.tokenizers.ByteTokenizer)


def vocabulary_size(tokenizer):
    """The number of token ids `tokenizer` produces."""
    return int(tokenizer.vocabulary_size())


def encode(tokenizer, text):
    """The token ids of `text` (a str) as int32 NumPy, without special tokens."""
    if not text:
        return np.zeros((0,), np.int32)
    ids = tokenizer(text)
    ids = ids.numpy() if hasattr(ids, "numpy") else np.asarray(ids)
    return ids.astype(np.int32).reshape(-1)


def check_token_id(argument, token_id, tokenizer):
    """Raises unless `token_id` is a token id of `tokenizer`."""
    size = vocabulary_size(tokenizer)
    if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)) or not (
        0 <= token_id < size
    ):
        raise ValueError(
            f"`{argument}` must be a token id of the tokenizer, in [0, {size}). "
            f"Received: {argument}={token_id!r}"
        )
    return int(token_id)


def end_token_id(tokenizer, end_token_id=None):
    """The id that ends a sequence: `end_token_id`, else the tokenizer's own
    (`tokenizer.end_token_id`), else `BYTE_END_TOKEN_ID` for bytes.

    Raises:
        ValueError: for an id outside the vocabulary, or a tokenizer without
            an end token when none is given.
    """
    if end_token_id is None:
        end_token_id = getattr(tokenizer, "end_token_id", None)
        if end_token_id is None and is_byte_tokenizer(tokenizer):
            end_token_id = BYTE_END_TOKEN_ID
        if end_token_id is None:
            raise ValueError(
                f"The tokenizer {type(tokenizer).__name__} has no end token: give "
                "`end_token_id`. Received: end_token_id=None"
            )
    return check_token_id("end_token_id", end_token_id, tokenizer)


def start_token_id(tokenizer):
    """The id a sequence starts with (SentencePiece's `<s>`), or `None`.

    GPT-2's start token is its end token (`<|endoftext|>`), which KerasHub's
    GPT-2 preprocessor puts first too; the byte tokenizer has none.
    """
    token = getattr(tokenizer, "start_token_id", None)
    return None if token is None else int(token)


def pad_token_id(tokenizer):
    """The id padding positions hold (0 when the tokenizer names none)."""
    token = getattr(tokenizer, "pad_token_id", None)
    return 0 if token is None else int(token)


def tokenizer_fingerprint(tokenizer):
    """`"<class>:sha256:..."` of the tokenizer's config and vocabulary: two
    tokenizers with one fingerprint map text to the same ids."""
    digest = hashlib.sha256()
    config = tokenizer.get_config()
    config.pop("name", None)
    digest.update(repr(sorted(config.items(), key=lambda item: item[0])).encode())
    try:
        vocabulary = tokenizer.get_vocabulary()
    except (AttributeError, NotImplementedError, ValueError, TypeError):
        vocabulary = None
    if vocabulary is not None:
        digest.update("\0".join(map(str, vocabulary)).encode())
    proto = getattr(tokenizer, "proto", None)
    if isinstance(proto, bytes):
        digest.update(proto)
    return f"{type(tokenizer).__name__}:sha256:{digest.hexdigest()}"
