"""Distilling KerasHub causal language models.

`build_causal_lm` builds a GPT-2, Gemma or Llama-style `CausalLM` from sizes;
the `Distiller` takes such models as teacher and student (see `models`: the
padding mask of `{"token_ids", "padding_mask"}` masks every token-level term,
and vocabularies, tokenizers and lengths are checked); `next_token_batch`
turns token ids into `(x, y, sample_weight)`. `sequence_level_dataset` is
sequence-level KD; it decodes with `generate_continuations` (KerasHub's KV
cache, a seeded sampler, an optional end token), as
`tf_distill.OnPolicyDistiller` (GKD) does. `perplexity` and `teacher_nll_of_samples`
(the exposure-bias measure) score a trained LM (see `evaluation`).
KerasHub presets come in with `load_causal_lm` and go out with
`save_causal_lm_preset`; `student_from_teacher` keeps some of a teacher's
blocks (see `presets`). A teacher with another tokenizer is aligned to the
student's positions (see `alignment`).

Names load on first use (PEP 562): `tf_distill.batches` imports `models`.
"""

import importlib

_PUBLIC = {
    "build_causal_lm": "tf_distill.language.builders",
    "generate_continuations": "tf_distill.language.sampling",
    "check_tokenizers": "tf_distill.language.models",
    "load_causal_lm": "tf_distill.language.presets",
    "save_causal_lm_preset": "tf_distill.language.presets",
    "student_from_teacher": "tf_distill.language.presets",
    "next_token_batch": "tf_distill.language.models",
    "perplexity": "tf_distill.language.evaluation",
    "sample_continuations": "tf_distill.language.sampling",
    "sequence_level_dataset": "tf_distill.language.sequence_level",
    "teacher_nll_of_samples": "tf_distill.language.evaluation",
}

__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tf_distill.language' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
