"""KD from a sparse teacher target: its top-k classes and the rest as one bucket.

Storing a language model's full next-token distribution costs `4·V` bytes per
token (200 KB at V = 50k). Keeping the teacher's `k` most likely tokens (as
the logit caches of DistillKit and ms-swift do) plus the log of the mass of
all the others costs `k·4 + 4` bytes (uint16 ids; `k·6 + 4` above 65,536
ids), and the KL over those `k + 1` buckets is
computed exactly against the student's full logits:

    K      = the teacher's top-k token ids (per position)
    a_j    = log p_t[j] for j ∈ K,  r_t = log(1 − Σ_{j∈K} p_t[j])
    log q  = log_softmax(s / T),    r_s = log Σ_{v∉K} q[v]
    loss   = T² · ( Σ_{j∈K} e^{a_j} (a_j − log q[j]) + e^{r_t} (r_t − r_s) )

It is the forward KL between the two distributions coarsened to the buckets
`{j} for j ∈ K` and `V \\ K`, so it is at most the dense forward KL (the log-sum
inequality) and equals it when `k = V` (the rest is then empty: `r_t = −∞`
contributes 0). The teacher's log-probabilities were taken at the temperature
the cache was built with; give the loss the same one.

`tf_distill.cache.topk` writes these targets; a batch carries them packed into
one float32 tensor under the teacher's `"logits"` key (`pack_topk`), so the
`Distiller` trains on them as on cached logits.
"""

from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.base import DistillationLoss
from tf_distill.losses.base import reduce_per_example
from tf_distill.losses.base import static_shape
from tf_distill.losses.registry import register
from tf_distill.losses.soft_labels import scaled_log_probs
from tf_distill.validation import check_positive

# Stands for log 0 where a finite value is needed: the student's logits at
# the kept ids are replaced by it to sum the mass of the rest, so that an empty
# rest (k = V) gives a finite log-sum-exp and a finite gradient.
_LOG_ZERO = -1e30


def topk_targets(teacher_logits, k, temperature=1.0):
    """The teacher's top-k log-probabilities, their ids and the rest's log-mass.

    Args:
        teacher_logits: Tensor `[..., vocab]`.
        k: Number of classes kept, `1 ≤ k ≤ vocab`.
        temperature: Softening temperature `T > 0` of `log_softmax(t / T)`.

    Returns:
        `(log_probs, indices, rest)`: float32 `[..., k]` (decreasing), int32
        `[..., k]`, and float32 `[...]`, the log of the mass outside the k
        (`−inf` when `k = vocab`).
    """
    check_positive("temperature", temperature)
    log_p = scaled_log_probs(teacher_logits, temperature)
    log_probs, indices = tf.math.top_k(log_p, k=k)
    rest = rest_log_mass(log_p, indices, fill=float("-inf"))
    return log_probs, indices, rest


def rest_log_mass(log_probs, indices, fill=_LOG_ZERO):
    """`log Σ_{v ∉ indices} exp(log_probs[v])` over the last axis.

    Exact (the kept entries are replaced, not subtracted), so a rest of
    1e-30 next to a kept mass of 1 is not lost to cancellation.

    Args:
        log_probs: Tensor `[..., vocab]`.
        indices: int Tensor `[..., k]` of distinct ids.
        fill: What a kept entry is replaced by: `−inf` gives `−inf` for an
            empty rest; a large negative finite value keeps the gradient
            finite there.

    Returns:
        Tensor `[...]`.
    """
    shape = tf.shape(log_probs)
    vocabulary = shape[-1]
    flat = tf.reshape(log_probs, [-1, vocabulary])
    flat_indices = tf.reshape(tf.cast(indices, tf.int32), [tf.shape(flat)[0], -1])
    rows = tf.broadcast_to(tf.range(tf.shape(flat)[0])[:, None], tf.shape(flat_indices))
    coordinates = tf.reshape(tf.stack([rows, flat_indices], axis=-1), [-1, 2])
    masked = tf.tensor_scatter_nd_update(
        flat, coordinates, tf.fill([tf.shape(coordinates)[0]], tf.constant(fill, flat.dtype))
    )
    return tf.reshape(tf.reduce_logsumexp(masked, axis=-1), shape[:-1])


def topk_kl(
    teacher_log_probs,
    teacher_indices,
    teacher_rest,
    student_logits,
    temperature=1.0,
    mask=None,
):
    """Forward KL from a top-k teacher target to the student, per example.

    See the module docstring for the formula: the KL over the teacher's k
    kept classes plus one bucket for all the others.

    Args:
        teacher_log_probs: `[batch, ..., k]` teacher log-probabilities of
            the kept classes (any float dtype).
        teacher_indices: `[batch, ..., k]` their class ids.
        teacher_rest: `[batch, ...]` log of the teacher's mass outside them
            (`−inf` for none).
        student_logits: `[batch, ..., vocab]` student logits.
        temperature: Temperature `T > 0` of the student's softmax (the one
            the target was made with).
        mask: Optional `[batch, time]` padding mask.

    Returns:
        A `[batch]` float32 tensor.
    """
    check_positive("temperature", temperature)
    log_q = scaled_log_probs(student_logits, temperature)
    indices = tf.cast(teacher_indices, tf.int32)
    kept_log_probs = tf.cast(teacher_log_probs, tf.float32)
    rest = tf.cast(teacher_rest, tf.float32)
    kept_student = tf.gather(log_q, indices, batch_dims=log_q.shape.rank - 1)
    student_rest = rest_log_mass(log_q, indices)
    kept = tf.reduce_sum(tf.exp(kept_log_probs) * (kept_log_probs - kept_student), axis=-1)
    has_rest = rest > float("-inf")
    # An empty rest contributes 0; the `where` keeps −∞ out of the product.
    safe_rest = tf.where(has_rest, rest, 0.0)
    rest_term = tf.where(has_rest, tf.exp(safe_rest) * (safe_rest - student_rest), 0.0)
    return reduce_per_example((kept + rest_term) * temperature**2, mask)


def pack_topk(log_probs, indices, rest, vocabulary_size):
    """One float32 tensor `[..., 2k+1]` holding a top-k target, for a batch.

    Layout: the k log-probabilities, the k ids (exact as float32 up to
    2^24), the rest's log-mass. Where `2k + 1` would equal the vocabulary
    size, one zero column is appended, so a packed target is never as wide as
    the logits and cannot be taken for them.

    Args:
        log_probs, indices, rest: As `topk_targets` returns them.
        vocabulary_size: V, the width of the logits.
    """
    log_probs = tf.cast(log_probs, tf.float32)
    columns = [log_probs, tf.cast(indices, tf.float32), tf.cast(rest, tf.float32)[..., None]]
    if 2 * log_probs.shape[-1] + 1 == vocabulary_size:
        columns.append(tf.zeros_like(columns[2]))
    return tf.concat(columns, axis=-1)


def unpack_topk(packed):
    """Inverse of `pack_topk`: `(log_probs, indices, rest)`."""
    k = (packed.shape[-1] - 1) // 2
    return packed[..., :k], tf.cast(packed[..., k : 2 * k], tf.int32), packed[..., 2 * k]


@register("topk_kd", "KD from a top-k teacher cache: KL over the k kept classes and the rest")
@register_serializable()
class TopKDistillation(DistillationLoss):
    """Hinton's KD from a top-k teacher cache, bucketed (Hinton et al. 2015).

    Reads the packed targets of a top-k teacher cache
    (`tf_distill.cache.build_topk_cache`; see `pack_topk`) under the teacher's
    logits key and computes `topk_kl` against the student's full logits, so
    a `Distiller` trains on the cache without running the teacher.

    The packed target stands where the teacher's logits would, so other
    losses that read the teacher's logits (and DKD's or DIST's stand-in label
    for unlabeled examples) cannot share a top-k cache.

    Args:
        temperature: Temperature `T > 0` of the student's softmax: the one the
            cache was built with. Defaults to 1.0.
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.

    Example:

    >>> cache = tf_distill.cache.build_topk_cache(teacher, (x, y, mask), "cache/", k=32)
    >>> distiller = tf_distill.Distiller(teacher, student, TopKDistillation())
    >>> distiller.fit(cache.dataset(batch_size=16), epochs=3)
    """

    def __init__(self, temperature=1.0, teacher=None):
        super().__init__(teacher=teacher)
        check_positive("temperature", temperature)
        self.temperature = float(temperature)

    def call(self, teacher_outputs, student_outputs, mask=None):
        log_probs, indices, rest = unpack_topk(tf.convert_to_tensor(teacher_outputs))
        return topk_kl(log_probs, indices, rest, student_outputs, self.temperature, mask)

    def validate_outputs(self, teacher_outputs, student_outputs):
        t_shape = static_shape(teacher_outputs)
        s_shape = static_shape(student_outputs)
        width, vocabulary = t_shape[-1], s_shape[-1]
        if width is not None and width == vocabulary:
            raise ValueError(
                "TopKDistillation reads a top-k teacher cache's packed targets "
                "`[..., 2k+1]`, not the teacher's logits. Received teacher outputs "
                f"of shape {tuple(t_shape)}, as wide as the student's logits "
                f"{tuple(s_shape)}: train on `build_topk_cache(...).dataset()`."
            )
        if width is not None and (width < 3 or (vocabulary is not None and width > 2 * vocabulary + 2)):
            raise ValueError(
                "Expected packed top-k targets of width 2k+1 with 1 ≤ k < V. Received "
                f"teacher outputs of shape {tuple(t_shape)} for student logits of "
                f"shape {tuple(s_shape)}."
            )
        if not t_shape[:-1].is_compatible_with(s_shape[:-1]):
            raise ValueError(
                "The top-k targets and the student's logits must cover the same "
                f"positions. Received targets of shape {tuple(t_shape)} and logits "
                f"of shape {tuple(s_shape)}."
            )

    def get_config(self):
        return {"temperature": self.temperature, **super().get_config()}
