"""A language model split at its LM head: the body's hidden states, the head's tensors.

`tf_distill.losses.ChunkedHeadDistillation` applies the heads itself, in
chunks of positions, so the `Distiller` runs each model only up to its
final hidden states. `LMHeadSplit` finds that split:

- a KerasHub `CausalLM`: the body is `model.backbone` (its output is the
  final, normalized hidden states `[batch, time, hidden]`) and the head is
  `backbone.token_embedding(h, reverse=True)`: the tied embedding matrix
  (or the untied `reverse_embeddings`), with its logit soft cap (Gemma 2);
- a Functional model whose output is a linear `Dense` layer's: the body is
  the graph up to that layer's input, the head its kernel and bias.
"""

from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.language import models as language_models
from tf_distill.losses.lm_head import HeadOutputs
from tf_distill.losses.lm_head import LinearHead


class LMHeadSplit:
    """A model as a body (inputs → hidden states) and a linear LM head.

    Shares the model's layers and variables: training through it trains the
    model.

    Args:
        model: A KerasHub `CausalLM`, or a Functional model whose output is
            a linear `Dense` layer's.
        role: `"teacher"` or `"student"`, for error messages.

    Raises:
        ValueError: for a model of another form, naming it.
    """

    def __init__(self, model, role="model"):
        self.model = model
        self.role = role
        if language_models.is_causal_lm(model):
            embedding = model.backbone.token_embedding
            self.body = model.backbone
            self._head = _embedding_head(embedding)
            return
        layer = _final_dense(model)
        if layer is None:
            raise ValueError(
                f"Invalid value for argument `{role}`: applying its LM head in chunks needs "
                "a KerasHub CausalLM or a Functional model whose output is a linear "
                f"Dense layer's. Received: {role}={model.name!r} of type "
                f"{type(model).__name__}"
            )
        self.body = keras.Model(model.inputs, layer.input, name=f"{model.name}_body")
        self._head = lambda: LinearHead(layer.kernel, layer.bias if layer.use_bias else None)

    def head(self):
        """The head's current tensors, a `LinearHead` (read inside the step)."""
        return self._head()

    def outputs(self, x, training=False):
        """`HeadOutputs(hidden_states, head)` of a batch: the logits, deferred."""
        return HeadOutputs(self.body(x, training=training), self.head())


def _embedding_head(embedding):
    def head():
        soft_cap = getattr(embedding, "logit_soft_cap", None)
        if getattr(embedding, "tie_weights", True):
            return LinearHead(embedding.embeddings, soft_cap=soft_cap, transposed=True)
        return LinearHead(embedding.reverse_embeddings, soft_cap=soft_cap)

    return head


def _final_dense(model):
    """The Dense layer whose output is `model`'s single output, or `None`."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or len(outputs) != 1 or not model.layers:
        return None
    layer = model.layers[-1]
    if not isinstance(layer, keras.layers.Dense) or layer.activation not in (
        None,
        keras.activations.linear,
    ):
        return None
    if len(getattr(layer, "_inbound_nodes", ())) > 1:
        return None  # Called twice: which call is the head is ambiguous.
    return layer


def head_outputs_stop_gradient(outputs):
    """`HeadOutputs` with no gradient reaching them (a teacher's)."""
    return HeadOutputs(tf.stop_gradient(outputs.hidden_states), outputs.head.stop_gradient())
