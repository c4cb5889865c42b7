"""`build_causal_lm`: KerasHub causal LMs from sizes, and its argument checks."""

import numpy as np
import pytest

from tf_distill.language import build_causal_lm


@pytest.mark.parametrize("architecture", ["gpt2", "gemma", "llama"])
def test_build_causal_lm_returns_logits_over_the_vocabulary(architecture):
    import keras_hub

    model = build_causal_lm(
        architecture,
        vocabulary_size=64,
        num_layers=1,
        hidden_dim=16,
        num_heads=2,
        max_sequence_length=16,
    )
    assert isinstance(model, keras_hub.models.CausalLM)
    assert model.preprocessor is None
    assert model.backbone.max_sequence_length == 16
    ids = np.arange(24).reshape(2, 12) % 64
    logits = model({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    assert tuple(logits.shape) == (2, 12, 64)
    assert np.isfinite(np.asarray(logits)).all()


def test_build_causal_lm_refuses_bad_arguments():
    with pytest.raises(ValueError, match="Invalid value for argument `architecture`"):
        build_causal_lm("bert")
    with pytest.raises(ValueError, match="`num_layers` must be a positive integer"):
        build_causal_lm(num_layers=0)
    with pytest.raises(ValueError, match="hidden_dim=30, num_heads=4"):
        build_causal_lm(hidden_dim=30, num_heads=4)
