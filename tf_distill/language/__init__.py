"""Distilling KerasHub causal language models.

`build_causal_lm` builds a GPT-2, Gemma or Llama-style `CausalLM` from sizes;
the `Distiller` takes such models as teacher and student (see `models`:
the padding mask of `{"token_ids", "padding_mask"}` masks every token-level
term, and vocabularies, tokenizers and lengths are checked);
`next_token_batch` turns token ids into `(x, y, sample_weight)`.
"""

from tf_distill.language.builders import build_causal_lm
from tf_distill.language.models import check_tokenizers
from tf_distill.language.models import next_token_batch

__all__ = ["build_causal_lm", "check_tokenizers", "next_token_batch"]
