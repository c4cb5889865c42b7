"""Token-level distillation that applies the LM heads in chunks of positions.

For a vocabulary of 256k, the `[batch, time, vocab]` logits of a step dwarf
the model: 4,096 tokens hold 4.2 GB of float32 logits, and a dense
token-level KD step keeps several such tensors at once (the teacher's and
the student's logits, their log-probabilities, the gradient). Here the
losses receive each model's final hidden states `h` (`[batch, time,
hidden]`) and its head (`logits = h · W + b`, KerasHub's
`token_embedding(h, reverse=True)`), and compute logits → divergence
`chunk_size` positions at a time:

    D(teacher, student) = (1 / |kept|) Σ_{chunks c} Σ_{i ∈ c} T² · d(softmax(t_i / T), softmax(s_i / T)),
    t_i = h_teacher,i · W_teacher,   s_i = h_student,i · W_student

with `d` one of `tf_distill.losses.TOKEN_DIVERGENCES`. The backward pass
recomputes each chunk's logits (a `tf.custom_gradient`) instead of keeping
them, so no tensor larger than `[chunk_size, vocab]` lives at any time; the
gradient reaches the student's hidden states and head weights, never the
teacher's. The student's own cross-entropy is computed the same way
(`chunked_head_crossentropy`), since its `[batch, time, vocab]` logits are
the other large tensor of a step. The values equal those of
`tf_distill.losses.token_divergence` on the full logits.

The approach is that of Liger Kernel's fused linear cross-entropy and JSD
(Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training",
2024), here in plain TensorFlow.
"""

from typing import Any
from typing import NamedTuple

from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.base import reduce_per_example
from tf_distill.losses.base import static_shape
from tf_distill.losses.registry import register
from tf_distill.losses.tokens import TOKEN_DIVERGENCES
from tf_distill.losses.tokens import TokenDistillation
from tf_distill.losses.tokens import token_divergence
from tf_distill.validation import check_choice
from tf_distill.validation import check_positive
from tf_distill.validation import check_positive_integer
from tf_distill.validation import check_unit_interval

DEFAULT_CHUNK_SIZE = 256


class LinearHead:
    """An LM head as tensors: `logits = h · W + b`, optionally soft-capped.

    Args:
        kernel: `[hidden, vocab]`, or `[vocab, hidden]` with
            `transposed=True` (a tied embedding matrix, as KerasHub's
            `ReversibleEmbedding` holds it).
        bias: `[vocab]`, or `None`.
        soft_cap: `c` of Gemma 2's `c · tanh(logits / c)`, or `None`.
        transposed: Whether `kernel` is `[vocab, hidden]`.
    """

    def __init__(self, kernel, bias=None, soft_cap=None, transposed=False):
        self.kernel = kernel
        self.bias = bias
        self.soft_cap = soft_cap
        self.transposed = bool(transposed)

    @property
    def parameters(self):
        """The head's tensors that gradients reach: `(kernel,)` or `(kernel, bias)`."""
        return (self.kernel,) if self.bias is None else (self.kernel, self.bias)

    def with_parameters(self, parameters):
        """The same head with other tensors for `parameters`."""
        bias = parameters[1] if len(parameters) > 1 else None
        return LinearHead(parameters[0], bias, self.soft_cap, self.transposed)

    def stop_gradient(self):
        """The same head, no gradient reaching its tensors (a teacher's)."""
        return self.with_parameters([tf.stop_gradient(value) for value in self.parameters])

    @property
    def vocabulary_size(self):
        """The number of logits per position (static), or `None`."""
        return static_shape(self.kernel)[0 if self.transposed else -1]

    def logits(self, hidden_states):
        """float32 logits `[..., vocab]` of hidden states `[..., hidden]`."""
        hidden_states = tf.convert_to_tensor(hidden_states)
        kernel = tf.cast(self.kernel, hidden_states.dtype)
        if hidden_states.shape.rank == 2:
            logits = tf.matmul(hidden_states, kernel, transpose_b=self.transposed)
        else:
            logits = tf.tensordot(
                hidden_states, tf.transpose(kernel) if self.transposed else kernel, 1
            )
        logits = tf.cast(logits, tf.float32)
        if self.bias is not None:
            logits += tf.cast(self.bias, tf.float32)
        if self.soft_cap is not None:
            logits = tf.tanh(logits / self.soft_cap) * self.soft_cap
        return logits


class HeadOutputs(NamedTuple):
    """A model's logits, deferred: its final hidden states and its head.

    What a loss that applies the head (`ChunkedHeadDistillation`) reads in
    place of `[batch, time, vocab]` logits: `head.logits(hidden_states)`
    would be them.

    Attributes:
        hidden_states: `[batch, time, hidden]`.
        head: A `LinearHead`.
    """

    hidden_states: Any
    head: Any


def check_chunk_size(chunk_size):
    """Raises `ValueError` unless `chunk_size` is an integer > 0.

    ``` `chunk_size` must be an integer > 0. Received: chunk_size=0```.
    """
    check_positive_integer("chunk_size", chunk_size)


# Plain TensorFlow (its loops are `tf.while_loop`s): converting these functions
# with AutoGraph, as `fit`'s step would, only costs seconds of tracing.
@tf.autograph.experimental.do_not_convert
def chunked_token_values(function, hidden_states, head, per_token=(), chunk_size=256):
    """Per-token values of `function` on a head's logits, chunk by chunk.

    `function(logits, per_token_chunks)` maps `[n, vocab]` logits (and the
    `[n, ...]` slices of `per_token`) to `[n]` float32 values. It runs on
    `chunk_size` rows at a time, in forward and backward alike: the backward
    pass recomputes a chunk's logits and takes their gradient there, so the
    `[rows, vocab]` logits never exist whole. Gradients reach
    `hidden_states` and the head's parameters; none reaches `per_token`
    (teacher outputs, labels).

    Args:
        function: `(logits [n, vocab], tuple of [n, ...]) -> [n]`.
        hidden_states: `[rows, hidden]`.
        head: A `LinearHead`.
        per_token: Tensors `[rows, ...]` sliced with the rows.
        chunk_size: Rows per chunk, an integer > 0.

    Returns:
        A `[rows]` float32 tensor.
    """
    check_chunk_size(chunk_size)
    per_token = tuple(tf.convert_to_tensor(value) for value in per_token)

    def chunk_values(hidden_chunk, parameters, start, stop):
        sliced = tuple(value[start:stop] for value in per_token)
        return function(head.with_parameters(parameters).logits(hidden_chunk), sliced)

    @tf.custom_gradient
    def values_of(hidden, *parameters):
        rows = tf.shape(hidden)[0]
        # At least one (empty) chunk: a TensorArray of none cannot be concatenated.
        chunks = tf.maximum((rows + chunk_size - 1) // chunk_size, 1)

        def forward(index, values):
            start = index * chunk_size
            stop = tf.minimum(start + chunk_size, rows)
            return index + 1, values.write(
                index, chunk_values(hidden[start:stop], parameters, start, stop)
            )

        values = tf.TensorArray(tf.float32, size=chunks, infer_shape=False, element_shape=[None])
        # One chunk at a time: parallel iterations would hold several.
        _, values = tf.while_loop(
            lambda index, _: index < chunks, forward, (0, values), parallel_iterations=1
        )
        values = tf.reshape(values.concat(), [rows])

        def gradient(upstream):
            def backward(index, hidden_gradients, *parameter_gradients):
                start = index * chunk_size
                stop = tf.minimum(start + chunk_size, rows)
                hidden_chunk = hidden[start:stop]
                with tf.GradientTape() as tape:
                    tape.watch([hidden_chunk, *parameters])
                    chunk = chunk_values(hidden_chunk, parameters, start, stop)
                gradients = tape.gradient(
                    chunk,
                    [hidden_chunk, *parameters],
                    output_gradients=upstream[start:stop],
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
                summed = [
                    total + tf.cast(gradient_, total.dtype)
                    for total, gradient_ in zip(parameter_gradients, gradients[1:])
                ]
                return (index + 1, hidden_gradients.write(index, gradients[0]), *summed)

            hidden_gradients = tf.TensorArray(
                hidden.dtype, size=chunks, infer_shape=False, element_shape=[None, None]
            )
            initial = [tf.zeros_like(value) for value in parameters]
            results = tf.while_loop(
                lambda index, *_: index < chunks,
                backward,
                (0, hidden_gradients, *initial),
                parallel_iterations=1,
            )
            hidden_gradient = tf.reshape(results[1].concat(), tf.shape(hidden))
            return (hidden_gradient, *results[2:])

        return values, gradient

    hidden_states = tf.convert_to_tensor(hidden_states)
    parameters = [tf.convert_to_tensor(value) for value in head.parameters]
    return values_of(hidden_states, *parameters)


def _positions(hidden_states, mask):
    """The kept positions of `[batch, time, hidden]` as rows, and their indices."""
    hidden_states = tf.convert_to_tensor(hidden_states)
    shape = tf.shape(hidden_states)
    if mask is None:
        mask = tf.ones(shape[:2], tf.bool)
    else:
        mask = tf.cast(mask, tf.float32) > 0
    indices = tf.where(mask)
    return tf.gather_nd(hidden_states, indices), indices, shape[:2]


def _per_example(values, indices, shape, mask):
    """Per-example masked means of per-row `values` kept at `indices`."""
    values = tf.scatter_nd(indices, values, tf.cast(shape, tf.int64))
    if mask is None:
        return tf.reduce_mean(values, axis=1)
    return reduce_per_example(values, mask)


def _check_rank(argument, outputs):
    if not isinstance(outputs, HeadOutputs):
        raise ValueError(
            f"`{argument}` must be `HeadOutputs(hidden_states, head)` (the final hidden "
            f"states and the LM head). Received: {argument} of type {type(outputs).__name__}"
        )
    rank = static_shape(outputs.hidden_states).rank
    if rank != 3:
        raise ValueError(
            f"`{argument}.hidden_states` must be [batch, time, hidden]. Received: "
            f"hidden_states of shape {tuple(static_shape(outputs.hidden_states))}"
        )


@tf.autograph.experimental.do_not_convert
def chunked_head_divergence(
    teacher_outputs,
    student_outputs,
    divergence="forward_kl",
    temperature=1.0,
    beta=0.5,
    alpha=0.1,
    mask=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
):
    """A token-level divergence of two LMs' heads, applied in chunks.

    `token_divergence(teacher_logits, student_logits, divergence, ...)`
    per example, where each model's logits are `head.logits(hidden_states)`,
    computed `chunk_size` kept positions at a time and recomputed in the
    backward pass (see the module's docstring). Padding positions (`mask`
    0) are skipped, not computed.

    Args:
        teacher_outputs: `HeadOutputs` of the teacher (no gradient reaches it).
        student_outputs: `HeadOutputs` of the student; its head has the
            teacher's vocabulary.
        divergence: One of `TOKEN_DIVERGENCES`.
        temperature: Softening temperature `T > 0`.
        beta: `β` of `"generalized_jsd"`, in [0, 1].
        alpha: `α` of the skewed divergences, in [0, 1].
        mask: Optional `[batch, time]` padding mask.
        chunk_size: Positions computed at a time, an integer > 0. A
            chunk's logits are `[chunk_size, vocab]` float32 (256 positions
            at V = 256,000: 262 MB).

    Returns:
        A `[batch]` float32 tensor.

    Raises:
        ValueError: for a bad `chunk_size`, `divergence`, `temperature`,
            `beta` or `alpha`, outputs that are not `HeadOutputs` of rank-3
            hidden states, or heads of different vocabularies.

    Example:

    >>> teacher = HeadOutputs(teacher_hidden, LinearHead(teacher_embeddings, transposed=True))
    >>> student = HeadOutputs(student_hidden, LinearHead(student_embeddings, transposed=True))
    >>> chunked_head_divergence(teacher, student, "reverse_kl", mask=padding_mask)
    """
    check_chunk_size(chunk_size)
    check_choice("divergence", divergence, TOKEN_DIVERGENCES)
    check_positive("temperature", temperature)
    check_unit_interval("beta", beta)
    check_unit_interval("alpha", alpha)
    check_head_outputs(teacher_outputs, student_outputs)
    teacher_rows, indices, shape = _positions(tf.stop_gradient(teacher_outputs.hidden_states), mask)
    student_rows = tf.gather_nd(student_outputs.hidden_states, indices)
    teacher_head = teacher_outputs.head.stop_gradient()

    def divergence_of(student_logits, sliced):
        (teacher_hidden,) = sliced
        return token_divergence(
            teacher_head.logits(teacher_hidden),
            student_logits,
            divergence,
            temperature=temperature,
            beta=beta,
            alpha=alpha,
        )

    values = chunked_token_values(
        divergence_of, student_rows, student_outputs.head, (teacher_rows,), chunk_size
    )
    return _per_example(values, indices, shape, mask)


@tf.autograph.experimental.do_not_convert
def chunked_head_crossentropy(labels, student_outputs, mask=None, chunk_size=DEFAULT_CHUNK_SIZE):
    """The student's cross-entropy on next-token labels, its head applied in chunks.

    `sparse_softmax_cross_entropy(labels, head.logits(hidden_states))`
    averaged per example over the kept positions, computed as
    `chunked_head_divergence` computes its divergence.

    Args:
        labels: Integer token ids `[batch, time]` (or `[batch, time, 1]`).
        student_outputs: `HeadOutputs` of the student.
        mask: Optional `[batch, time]` padding mask.
        chunk_size: Positions computed at a time, an integer > 0.

    Returns:
        A `[batch]` float32 tensor.

    Raises:
        ValueError: for a bad `chunk_size` or labels that are not token ids
            of the hidden states' `[batch, time]`.
    """
    check_chunk_size(chunk_size)
    _check_rank("student_outputs", student_outputs)
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 3 and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, -1)
    if labels.shape.rank != 2 or not labels.dtype.is_integer:
        raise ValueError(
            "Invalid value for argument `labels`. Expected integer token ids of shape "
            "[batch, time] (the LM head is applied in chunks, so one-hot labels are not "
            f"read). Received: labels of shape {tuple(labels.shape)} and dtype "
            f"{labels.dtype.name}"
        )
    student_rows, indices, shape = _positions(student_outputs.hidden_states, mask)
    label_rows = tf.gather_nd(tf.cast(labels, tf.int32), indices)

    def crossentropy(logits, sliced):
        (label_chunk,) = sliced
        return tf.nn.sparse_softmax_cross_entropy_with_logits(label_chunk, logits)

    values = chunked_token_values(
        crossentropy, student_rows, student_outputs.head, (label_rows,), chunk_size
    )
    return _per_example(values, indices, shape, mask)


def check_head_outputs(teacher_outputs, student_outputs):
    """Raises `ValueError` unless both are `HeadOutputs` of one vocabulary."""
    _check_rank("teacher_outputs", teacher_outputs)
    _check_rank("student_outputs", student_outputs)
    teacher_size = teacher_outputs.head.vocabulary_size
    student_size = student_outputs.head.vocabulary_size
    if teacher_size is not None and student_size is not None and teacher_size != student_size:
        raise ValueError(
            "The teacher's and the student's heads must score one vocabulary. "
            f"Received: teacher vocabulary of {teacher_size} and student vocabulary "
            f"of {student_size}."
        )


@register(
    "chunked_head_kd",
    "Token-level KD of large vocabularies: the LM heads applied in chunks of positions",
)
@register_serializable()
class ChunkedHeadDistillation(TokenDistillation):
    """Token-level distillation with the LM heads applied in chunks (large vocabularies).

    `TokenDistillation`'s divergences (forward KL, reverse KL, GKD's
    JSD(β), DistiLLM's skew KLs), with the same values, for vocabularies
    where `[batch, time, vocab]` logits do not fit twice: the `Distiller`
    gives this loss each model's final hidden states and head
    (`HeadOutputs`) instead of logits, and it computes logits →
    divergence `chunk_size` positions at a time, recomputing them in the
    backward pass (`chunked_head_divergence`). The student's label loss is
    then computed in chunks too (`chunked_head_crossentropy`), so a step
    never holds a `[batch, time, vocab]` tensor.

    The teacher and the student are KerasHub `CausalLM`s (their head is
    `backbone.token_embedding(h, reverse=True)`) or Functional models
    ending in a linear `Dense` over `[batch, time, hidden]` (see
    `tf_distill.language.heads`). Such a loss is the Distiller's only
    distillation loss, with one teacher, no compiled metrics (they would
    read full logits) and a crossentropy label loss.

    Args:
        divergence: One of `TOKEN_DIVERGENCES`. Defaults to `"forward_kl"`.
        temperature: Softening temperature `T > 0`. Defaults to 1.0.
        beta: `β` of `"generalized_jsd"`, in [0, 1].
        alpha: `α` of `"skew_kl"` and `"skew_reverse_kl"`, in [0, 1].
        chunk_size: Positions computed at a time (an integer > 0; the
            student's cross-entropy uses the same). Defaults to 256.
        teacher: Accepted for the common interface; must be `None` (one
            teacher).

    Example:

    >>> loss = ChunkedHeadDistillation("forward_kl", chunk_size=512)
    >>> distiller = tf_distill.Distiller(gemma_teacher, gemma_student, loss)
    """

    applies_head = True
    divergence_function = staticmethod(chunked_head_divergence)

    def __init__(
        self,
        divergence="forward_kl",
        temperature=1.0,
        beta=0.5,
        alpha=0.1,
        chunk_size=DEFAULT_CHUNK_SIZE,
        teacher=None,
    ):
        # Checked first: here a chunk size is required (`TokenDistillation`
        # takes None for all positions at once).
        check_chunk_size(chunk_size)
        super().__init__(divergence, temperature, beta, alpha, chunk_size, teacher)

    def validate_outputs(self, teacher_outputs, student_outputs):
        check_head_outputs(teacher_outputs, student_outputs)
