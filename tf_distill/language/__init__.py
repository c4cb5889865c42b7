"""Distilling KerasHub causal language models.

`build_causal_lm` builds a GPT-2, Gemma or Llama-style `CausalLM` from sizes.
"""

from tf_distill.language.builders import build_causal_lm

__all__ = ["build_causal_lm"]
