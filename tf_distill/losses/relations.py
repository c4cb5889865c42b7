"""Relational distillation: matching how examples relate to one another.

Instead of matching each example's output, these losses match the structure
of the batch (pairwise distances, angles, similarities), so the teacher's and
the student's features may have different widths and need no adapter.

Every function takes `(teacher_features, student_features)`, teacher first;
inputs of any rank are flattened to `[batch, features]` and computed in
float32. The papers define batch-level losses; each function returns one row
per example whose batch mean is the paper's loss, so the `Distiller` can
weigh and average examples as it does for every other loss.
"""

from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.base import DistillationLoss
from tf_distill.losses.base import static_shape
from tf_distill.losses.registry import register
from tf_distill.losses.registry import register_former_name

# `tf.math.l2_normalize` clamps the *squared* norm at this value.
_NORMALIZE_EPSILON = 1e-12


def _flatten(features):
    features = tf.cast(features, tf.float32)
    if features.shape.rank == 0:
        raise ValueError("Relational losses need features with a batch axis. Received a scalar.")
    return tf.reshape(features, [tf.shape(features)[0], -1])


def _huber(x, y):
    """Elementwise smooth-L1 (Huber, δ = 1), as in the RKD paper."""
    difference = tf.abs(x - y)
    return tf.where(difference < 1.0, 0.5 * tf.square(difference), difference - 0.5)


def _pairwise_distances(features):
    """`[b, b]` Euclidean distances, 0 on the diagonal, finite gradients.

    The squared distance is clamped before `sqrt` (whose derivative is
    infinite at 0), as the RKD authors' `pdist` does.
    """
    squared_norms = tf.reduce_sum(tf.square(features), axis=-1)
    squared = (
        squared_norms[:, None]
        + squared_norms[None, :]
        - 2.0 * tf.matmul(features, features, transpose_b=True)
    )
    distances = tf.sqrt(tf.maximum(squared, 1e-12))
    batch = tf.shape(features)[0]
    return distances * (1.0 - tf.eye(batch, dtype=distances.dtype))


def _normalized_distances(features):
    """Distances divided by their mean over the pairs `i ≠ j`."""
    distances = _pairwise_distances(features)
    batch = tf.cast(tf.shape(features)[0], tf.float32)
    mean = tf.math.divide_no_nan(tf.reduce_sum(distances), batch * (batch - 1.0))
    return tf.math.divide_no_nan(distances, mean)


def rkd_distance(teacher_features, student_features):
    """Distance-wise RKD loss, one row per example.

    Park, Kim, Lu & Cho, "Relational Knowledge Distillation" (CVPR 2019).
    Pairwise distances are normalized by their mean, so only the *shape* of
    the batch is transferred, not its scale:

        ψ_D(t_i, t_j) = ‖t_i − t_j‖₂ / μ,   μ = mean_{i≠j} ‖t_i − t_j‖₂
        loss = mean_{i,j} huber(ψ_D(s_i, s_j) − ψ_D(t_i, t_j))

    with the Huber (smooth-L1, δ = 1) loss. The mean over all `b²` pairs
    (diagonal included, where both sides are 0) follows the authors' code;
    the paper writes a sum. Row `i` is `mean_j huber(...)`, so the batch mean
    is the loss.

    Args:
        teacher_features: Tensor `[batch, ...]`.
        student_features: Tensor `[batch, ...]`; its width may differ.

    Returns:
        A `[batch]` float32 tensor.
    """
    teacher = _normalized_distances(_flatten(teacher_features))
    student = _normalized_distances(_flatten(student_features))
    return tf.reduce_mean(_huber(student, teacher), axis=-1)


def _angles(features):
    """`[b, b, b]` cosines `⟨e(f_j − f_i), e(f_k − f_i)⟩` at each vertex `i`."""
    differences = features[None, :, :] - features[:, None, :]  # [i, j] = f_j − f_i
    directions = tf.math.l2_normalize(differences, axis=-1, epsilon=_NORMALIZE_EPSILON)
    return tf.matmul(directions, directions, transpose_b=True)


def rkd_angle(teacher_features, student_features):
    """Angle-wise RKD loss, one row per example.

    Park, Kim, Lu & Cho, "Relational Knowledge Distillation" (CVPR 2019).
    For every triplet, the cosine of the angle at the vertex `i`:

        e_ij = (t_j − t_i) / ‖t_j − t_i‖₂
        ψ_A(t_i, t_j, t_k) = ⟨e_ij, e_ik⟩
        loss = mean_{i,j,k} huber(ψ_A(s_i, s_j, s_k) − ψ_A(t_i, t_j, t_k))

    with the Huber (smooth-L1, δ = 1) loss, averaged over all `b³` triplets
    like the authors' code (degenerate triplets, `j = i` or `k = i`, are 0 on
    both sides). Row `i` averages the triplets whose vertex is example `i`.
    Invariant to translating or scaling either feature space. Memory grows as
    `b² · features`.

    Args:
        teacher_features: Tensor `[batch, ...]`.
        student_features: Tensor `[batch, ...]`; its width may differ.

    Returns:
        A `[batch]` float32 tensor.
    """
    teacher = _angles(_flatten(teacher_features))
    student = _angles(_flatten(student_features))
    return tf.reduce_mean(_huber(student, teacher), axis=[1, 2])


def _similarity(features):
    """`normalize_rows(F Fᵀ)`: the batch's row-normalized Gram matrix."""
    gram = tf.matmul(features, features, transpose_b=True)
    return tf.math.l2_normalize(gram, axis=-1, epsilon=_NORMALIZE_EPSILON)


def similarity_preserving(teacher_features, student_features):
    """Similarity-preserving KD loss, one row per example.

    Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).
    With `F` the `[b, features]` activations of the batch:

        G = F Fᵀ,   G̃[i, :] = G[i, :] / ‖G[i, :]‖₂
        loss = ‖G̃_t − G̃_s‖_F² / b²

    Row `i` is `Σ_j (G̃_t − G̃_s)[i, j]² / b`, so the batch mean is the loss.
    Invariant to any permutation (indeed any orthogonal transform) of the
    feature channels.

    Args:
        teacher_features: Tensor `[batch, ...]`.
        student_features: Tensor `[batch, ...]`; its width may differ.

    Returns:
        A `[batch]` float32 tensor.
    """
    teacher = _similarity(_flatten(teacher_features))
    student = _similarity(_flatten(student_features))
    batch = tf.cast(tf.shape(teacher)[0], tf.float32)
    return tf.reduce_sum(tf.square(teacher - student), axis=-1) / batch


def _conditional_probabilities(features):
    """`p_{j|i}` from the cosine kernel, with `p_{i|i} = 0`."""
    directions = tf.math.l2_normalize(features, axis=-1, epsilon=_NORMALIZE_EPSILON)
    kernel = (tf.matmul(directions, directions, transpose_b=True) + 1.0) / 2.0
    batch = tf.shape(features)[0]
    kernel = kernel * (1.0 - tf.eye(batch, dtype=kernel.dtype))
    return tf.math.divide_no_nan(kernel, tf.reduce_sum(kernel, axis=-1, keepdims=True))


def pkt(teacher_features, student_features, epsilon=1e-7):
    """Probabilistic knowledge transfer, one row per example.

    Passalis & Tefas, "Learning Deep Representations with Probabilistic
    Knowledge Transfer" (ECCV 2018), with the cosine kernel:

        K(a, b) = (cos(a, b) + 1) / 2                   # in [0, 1]
        p_{j|i} = K(t_i, t_j) / Σ_{k≠i} K(t_i, t_k)      (j ≠ i)
        loss_i = Σ_{j≠i} p_{j|i} · log(p_{j|i} / q_{j|i})

    with `q` the same for the student: the KL divergence from the teacher's
    to the student's conditional distributions. The paper sums `loss_i` over
    the batch; the batch mean of these rows is that sum divided by `b`. (The
    authors' code also keeps `j = i` and averages over all `b²` entries,
    which divides once more by `b`.) `epsilon` is added inside the logs, as
    in the authors' code, since the kernel can be exactly 0.

    Args:
        teacher_features: Tensor `[batch, ...]`.
        student_features: Tensor `[batch, ...]`; its width may differ.
        epsilon: Added to both probabilities inside the log.

    Returns:
        A `[batch]` float32 tensor.
    """
    teacher = _conditional_probabilities(_flatten(teacher_features))
    student = _conditional_probabilities(_flatten(student_features))
    log_ratio = tf.math.log(teacher + epsilon) - tf.math.log(student + epsilon)
    return tf.reduce_sum(teacher * log_ratio, axis=-1)


class _RelationLoss(DistillationLoss):
    """A relational loss: no arguments but the layers it reads."""

    def __init__(self, teacher_layer_name=None, student_layer_name=None, teacher=None):
        super().__init__(teacher=teacher)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def call(self, teacher_outputs, student_outputs, mask=None):
        return type(self).function(teacher_outputs, student_outputs)

    def validate_outputs(self, teacher_outputs, student_outputs):
        super().validate_outputs(teacher_outputs, student_outputs)
        t_shape = static_shape(teacher_outputs)
        s_shape = static_shape(student_outputs)
        if not t_shape[:1].is_compatible_with(s_shape[:1]):
            raise ValueError(
                f"{type(self).__name__} needs the same batch for teacher and "
                f"student. Received: teacher {tuple(t_shape)} and student "
                f"{tuple(s_shape)}."
            )

    def get_config(self):
        return {
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            **super().get_config(),
        }


@register("rkd_distance", "Relational KD: mean-normalized pairwise distances (Huber)")
@register_serializable()
class RelationalDistanceDistillation(_RelationLoss):
    """Distance-wise relational KD (Park et al., CVPR 2019).

    See `rkd_distance`. The paper weighs it 25 (and the angle loss 50) next
    to the task loss; set that with the `Distiller`'s loss weights.

    Args:
        teacher_layer_name: Name of the teacher layer to read (often the
            embedding), or `None` for the final output.
        student_layer_name: Name of the student layer to read, or `None`.
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.
    """

    function = staticmethod(rkd_distance)


@register("rkd_angle", "Relational KD: angles of example triplets (Huber)")
@register_serializable()
class RelationalAngleDistillation(_RelationLoss):
    """Angle-wise relational KD (Park et al., CVPR 2019).

    See `rkd_angle`. Memory grows as `batch² · features`.

    Args:
        teacher_layer_name: Name of the teacher layer to read, or `None`.
        student_layer_name: Name of the student layer to read, or `None`.
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.
    """

    function = staticmethod(rkd_angle)


@register(
    "similarity_preserving",
    "Similarity-preserving KD: row-normalized batch Gram matrices",
)
@register_serializable()
class SimilarityPreservingDistillation(_RelationLoss):
    """Similarity-preserving KD (Tung & Mori, ICCV 2019).

    See `similarity_preserving`.

    Args:
        teacher_layer_name: Name of the teacher layer to read, or `None`.
        student_layer_name: Name of the student layer to read, or `None`.
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.
    """

    function = staticmethod(similarity_preserving)


@register("pkt", "Probabilistic KT: KL between cosine-kernel neighbour distributions")
@register_serializable()
class ProbabilisticTransferDistillation(_RelationLoss):
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018).

    See `pkt`.

    Args:
        teacher_layer_name: Name of the teacher layer to read, or `None`.
        student_layer_name: Name of the student layer to read, or `None`.
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.
    """

    function = staticmethod(pkt)


# Former names, kept for code and saved configs that use them.
RKDDistance = register_former_name(RelationalDistanceDistillation, "RKDDistance")
RKDAngle = register_former_name(RelationalAngleDistillation, "RKDAngle")
SimilarityPreserving = register_former_name(SimilarityPreservingDistillation, "SimilarityPreserving")
PKT = register_former_name(ProbabilisticTransferDistillation, "PKT")
