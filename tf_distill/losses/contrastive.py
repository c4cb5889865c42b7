"""Contrastive representation distillation (CRD): NCE against memory banks.

Tian, Krishnan & Isola, "Contrastive Representation Distillation" (ICLR
2020), as the authors' RepDistiller code computes it (`crd/criterion.py`,
`crd/memory.py`). Teacher and student features are projected by two
embedding heads (linear, then L2 normalization) into one space. Two memory
banks keep one embedding per training example, one bank for the student's
embeddings and one for the teacher's. For each example, the student's
embedding is contrasted with the teacher bank's row of the same example (the
positive) and `K` rows of examples of other classes (the negatives, as
RepDistiller's training script draws them: `contrast_idx`, mode `exact`),
and symmetrically the teacher's embedding with the student bank. The banks
follow the embeddings by momentum at the batch's example indices, so the data
pipeline must carry them (`tf_distill.with_example_indices`).

The pure functions (`contrast_scores`, `nce_contrast_loss`, `crd_loss`) are
the maths; the Keras layers that hold the state (`EmbeddingHead`,
`ContrastMemory`) are in `memory_bank`; `CRDistillation` is the thin loss
the `Distiller` calls, which owns those layers (`DistillationLoss.layers`):
they are trained with the student but are not part of `distiller.student`.
"""

from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.base import DistillationLoss
from tf_distill.losses.base import static_shape
from tf_distill.losses.labels import class_indices
from tf_distill.losses.memory_bank import NEGATIVES
from tf_distill.losses.memory_bank import ROLES
from tf_distill.losses.memory_bank import ContrastMemory
from tf_distill.losses.memory_bank import EmbeddingHead
from tf_distill.losses.registry import register
from tf_distill.validation import check_choice
from tf_distill.validation import check_positive
from tf_distill.validation import check_positive_integer
from tf_distill.validation import check_unit_interval

# RepDistiller's `eps` in the NCE loss.
NCE_EPSILON = 1e-7


def contrast_scores(anchors, rows, temperature=0.07):
    """Unnormalized NCE scores `exp(⟨rows[b, k], anchors[b]⟩ / τ)`.

    Args:
        anchors: `[batch, dim]` embeddings.
        rows: `[batch, 1 + K, dim]` memory-bank rows, the positive first.
        temperature: τ > 0.

    Returns:
        A `[batch, 1 + K]` tensor.
    """
    return tf.exp(tf.einsum("bkd,bd->bk", rows, anchors) / temperature)


def nce_contrast_loss(scores, normalizer, num_examples):
    """Per-example NCE loss of the paper's Eq. 18 (RepDistiller's `ContrastLoss`).

    With `P = scores / Z` the estimated probabilities, the positive first,
    `K` negatives and the uniform noise distribution `P_n = 1 / N`:

        h⁺ = P₀ / (P₀ + K·P_n + ε),   h⁻_k = K·P_n / (P_k + K·P_n + ε)
        loss = −(log h⁺ + Σ_k log h⁻_k)

    The batch mean of these rows is RepDistiller's loss.

    Args:
        scores: `[batch, 1 + K]` from `contrast_scores`.
        normalizer: `Z`, the partition function's estimate (a scalar).
        num_examples: `N`, the number of examples in the memory bank.

    Returns:
        A `[batch]` tensor.
    """
    probabilities = scores / tf.cast(normalizer, scores.dtype)
    num_negatives = tf.cast(tf.shape(scores)[1] - 1, scores.dtype)
    noise = num_negatives / tf.cast(num_examples, scores.dtype)
    positive, negatives = probabilities[:, 0], probabilities[:, 1:]
    log_positive = tf.math.log(positive / (positive + noise + NCE_EPSILON))
    log_negatives = tf.math.log(noise / (negatives + noise + NCE_EPSILON))
    return -(log_positive + tf.reduce_sum(log_negatives, axis=-1))


def estimate_normalizer(scores, num_examples):
    """`Z = mean(scores) · N`, as RepDistiller sets it on the first batch."""
    return tf.reduce_mean(scores) * tf.cast(num_examples, scores.dtype)


def crd_loss(
    teacher_embeddings,
    student_embeddings,
    teacher_rows,
    student_rows,
    teacher_normalizer,
    student_normalizer,
    num_examples,
    temperature=0.07,
):
    """Per-example CRD loss: both anchors, as RepDistiller's `CRDLoss`.

    The student's embedding is contrasted with rows of the *teacher* bank,
    and the teacher's with rows of the *student* bank:

        loss = NCE(exp(T_rows · s / τ) / Z_s) + NCE(exp(S_rows · t / τ) / Z_t)

    with `NCE` as `nce_contrast_loss`.

    Args:
        teacher_embeddings: `[batch, dim]`, L2-normalized.
        student_embeddings: `[batch, dim]`, L2-normalized.
        teacher_rows: `[batch, 1 + K, dim]` rows of the teacher bank, the
            positive (the example's own row) first.
        student_rows: `[batch, 1 + K, dim]` rows of the student bank.
        teacher_normalizer: `Z_t`, for the scores anchored at the teacher.
        student_normalizer: `Z_s`, for the scores anchored at the student.
        num_examples: `N`, the banks' number of rows.
        temperature: τ > 0.

    Returns:
        A `[batch]` tensor.
    """
    student_scores = contrast_scores(student_embeddings, teacher_rows, temperature)
    teacher_scores = contrast_scores(teacher_embeddings, student_rows, temperature)
    return nce_contrast_loss(student_scores, student_normalizer, num_examples) + (
        nce_contrast_loss(teacher_scores, teacher_normalizer, num_examples)
    )


@register("crd", "Contrastive representation distillation: NCE against memory banks")
@register_serializable()
class CRDistillation(DistillationLoss):
    """Contrastive representation distillation (Tian et al., ICLR 2020).

    Maximizes a lower bound on the mutual information between the teacher's
    and the student's representations, with noise-contrastive estimation
    against memory banks of embeddings (see `crd_loss`):

        s = normalize(W_s f_s),   t = normalize(W_t f_t)
        h(t, s) = exp(t · s / τ) / Z
        loss = −log h⁺ / (h⁺ + K/N) − Σ_k log (K/N) / (h⁻_k + K/N)   (both ways)

    The embedding heads (`W_s`, `W_t`) and the memory banks are Keras layers
    this loss owns (`layers`): the `Distiller` trains the heads with the
    student, updates the banks at the batch's example indices in training
    steps only, and keeps all of them out of `distiller.student`. The
    training data must carry example indices: wrap it with
    `tf_distill.with_example_indices` (or use `cache_teacher_outputs`, which
    adds them for this loss). In evaluation without indices each example's
    positive is the other model's current embedding, so `validation_data`
    needs no indices (and should have none: indices always name rows of the
    training set's banks).

    **Negatives.** RepDistiller's training script (`CIFAR100InstanceSample`,
    mode `exact`, with which the paper's results were obtained) draws each
    example's `K` negatives from the examples of *other classes*; drawn
    uniformly from all rows, about `1/C` of them would share the anchor's
    class and push apart embeddings of one class. With
    `negatives="other_classes"` (the default) the loss reads the batch's
    labels (the `Distiller` passes them), records each example's class at its
    row when training sees it, and draws the negatives from the rows whose
    class differs from the anchor's (see `ContrastMemory.sample_negatives`).
    Until an example is first seen its row's class is unknown and the row
    may be drawn: it still holds its random initial vector, not an
    embedding, so no drawn row holds an embedding of the anchor's class at
    any step; `set_example_labels(y_train)` records every class up front,
    as RepDistiller's data set knows them. Differences that remain: the
    draws are with replacement (RepDistiller's without: the same expected
    loss, see `sample_negatives`), and a batch **without labels** (`y` is
    `None`: unlabeled data) draws from all rows, as
    `negatives="uniform"` always does (tf_distill 0.1.0's behaviour). An
    unlabeled example within a labeled batch (label -1) counts as of the
    teacher's predicted class, as the `Distiller` fills it in.

    The paper weighs CRD 0.8 next to the task loss (and KD); set that with
    the `Distiller`'s loss weights. It uses `K = 16384` negatives; the
    default here, 4096, keeps small runs cheap.

    Args:
        teacher_layer_name: Teacher layer to read (the paper: the
            penultimate features), or `None` for the logits.
        student_layer_name: Student layer to read, or `None`.
        feature_dim: Width of the shared embedding space.
        num_negatives: `K`, negatives per example, < `num_examples`.
        nce_temperature: τ of the scores.
        momentum: Momentum of the memory banks, in [0, 1].
        num_examples: Size of the training set: the banks' rows, indexed by
            the example indices. Required before training.
        negatives: `"other_classes"` (default: RepDistiller's draw, from
            the examples of other classes than the anchor's when the batch
            has labels) or `"uniform"` (from all examples; tf_distill
            0.1.0's draw).
        teacher: With several teachers, the one whose outputs the loss
            reads (its name or index); `None` for the ensemble's logits.

    Raises:
        ValueError: for an invalid argument, `num_negatives >= num_examples`,
            or (in the `Distiller`) `num_examples=None`.

    Example:

    ```python
    train = tf_distill.with_example_indices(
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
    ).shuffle(len(x_train)).batch(64)
    crd = tf_distill.losses.CRDistillation(
        teacher_layer_name="features", student_layer_name="features",
        num_examples=len(x_train),
    )
    distiller = tf_distill.Distiller(teacher, student, ["kd", crd],
                                     distillation_loss_weights=[1.0, 0.8])
    distiller.compile("adam", "sparse_categorical_crossentropy")
    distiller.fit(train, epochs=10)
    ```
    """

    call_arguments = ("labels", "example_indices", "training")

    def __init__(
        self,
        teacher_layer_name=None,
        student_layer_name=None,
        feature_dim=128,
        num_negatives=4096,
        nce_temperature=0.07,
        momentum=0.5,
        num_examples=None,
        negatives="other_classes",
        teacher=None,
    ):
        super().__init__(teacher=teacher)
        check_choice("negatives", negatives, NEGATIVES)
        check_positive_integer("feature_dim", feature_dim)
        check_positive_integer("num_negatives", num_negatives)
        if num_examples is not None:
            check_positive_integer("num_examples", num_examples)
        check_positive("nce_temperature", nce_temperature)
        check_unit_interval("momentum", momentum)
        if num_examples is not None and num_negatives >= num_examples:
            raise ValueError(
                "`num_negatives` must be < `num_examples` (negatives are drawn from "
                f"the other examples' rows). Received: num_negatives={num_negatives}, "
                f"num_examples={num_examples}"
            )
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.feature_dim = feature_dim
        self.num_negatives = num_negatives
        self.nce_temperature = float(nce_temperature)
        self.momentum = float(momentum)
        self.num_examples = num_examples
        self.negatives = negatives
        self.teacher_head = EmbeddingHead(feature_dim)
        self.student_head = EmbeddingHead(feature_dim)
        self.memory = None
        if num_examples is not None:
            self.memory = ContrastMemory(
                num_examples, feature_dim, num_negatives, self.momentum, negatives=negatives
            )

    @property
    def layers(self):
        """The embedding heads and, once `num_examples` is known, the memory."""
        return [self.teacher_head, self.student_head] + ([self.memory] if self.memory else [])

    def _check_num_examples(self):
        if self.memory is None:
            raise ValueError(
                "CRDistillation needs `num_examples`, the size of the training set "
                "(its memory banks keep one row per example). Received: num_examples=None"
            )

    def validate_model_compatibility(self, teacher, student):
        """Checks the layers, and builds the heads and banks (inside a
        `tf.distribute` scope, if the Distiller is made in one)."""
        super().validate_model_compatibility(teacher, student)
        self._check_num_examples()
        self._build_memory()
        for head, model, name in (
            (self.teacher_head, teacher, self.teacher_layer_name),
            (self.student_head, student, self.student_layer_name),
        ):
            shape = _output_shape(model, name)
            if not head.built and shape is not None:
                head.build(shape)

    def validate_outputs(self, teacher_outputs, student_outputs):
        t_shape = static_shape(teacher_outputs)
        s_shape = static_shape(student_outputs)
        if t_shape.rank is not None and (
            t_shape.rank < 2 or not t_shape[:1].is_compatible_with(s_shape[:1])
        ):
            raise ValueError(
                "CRDistillation needs `[batch, ...]` features with the same batch for "
                f"teacher and student. Received: teacher {tuple(t_shape)} and student "
                f"{tuple(s_shape)}."
            )

    def _build_memory(self):
        if not self.memory.built:
            self.memory.build(None)

    def set_example_labels(self, labels):
        """Records every training example's class up front (see the class
        docstring): `labels[i]` is the class of the example of index `i`,
        the order `tf_distill.with_example_indices` numbers them in. Call it
        once the `Distiller` is made (it builds the memory, under the
        Distiller's distribution strategy if any).

        Raises:
            ValueError: without `num_examples`, with `negatives="uniform"`,
                or for labels of another length.
        """
        self._check_num_examples()
        self.memory.assign_labels(labels)

    def call(
        self,
        teacher_outputs,
        student_outputs,
        mask=None,
        labels=None,
        example_indices=None,
        training=None,
    ):
        self._check_num_examples()
        training = bool(training)
        if training and example_indices is None:
            raise ValueError(
                "CRDistillation needs each training example's index, to read and "
                "update its memory-bank rows. Wrap the training data with "
                "`tf_distill.with_example_indices(dataset)` (or cache it with "
                "`tf_distill.cache_teacher_outputs`). Received: example_indices=None"
            )
        self._build_memory()
        memory = self.memory
        embeddings = {
            "teacher": self.teacher_head(tf.stop_gradient(tf.cast(teacher_outputs, tf.float32))),
            "student": self.student_head(student_outputs),
        }
        classes = None
        if self.negatives == "other_classes" and labels is not None:
            classes = class_indices(labels)
        if example_indices is not None:
            example_indices = memory.check_indices(example_indices)
        if training and classes is not None:
            # Before the draw: this batch's own rows are of known classes.
            memory.update_labels(example_indices, classes)
        negatives = memory.sample_negatives(tf.shape(embeddings["student"])[0], classes)
        rows = {}
        if example_indices is None:
            # Evaluation on other data: the positive is the other model's
            # current embedding rather than a bank row.
            for role in ROLES:
                positive = tf.stop_gradient(embeddings[role])[:, None]
                rows[role] = tf.concat([positive, memory.rows(role, negatives)], axis=1)
        else:
            contrast_indices = tf.concat([example_indices[:, None], negatives], axis=1)
            rows = {role: memory.rows(role, contrast_indices) for role in ROLES}
        # Z for the student's embedding against the teacher bank, and vice
        # versa: set from the first training batch's scores.
        normalizers = {
            anchor: memory.normalizer(
                anchor,
                contrast_scores(embeddings[anchor], rows[other], self.nce_temperature),
                training,
            )
            for anchor, other in (("student", "teacher"), ("teacher", "student"))
        }
        loss = crd_loss(
            embeddings["teacher"],
            embeddings["student"],
            rows["teacher"],
            rows["student"],
            normalizers["teacher"],
            normalizers["student"],
            self.num_examples,
            self.nce_temperature,
        )
        if training:
            # After the rows were read: automatic control dependencies keep
            # the program order of one variable's reads and writes.
            with tf.control_dependencies([loss]):
                for role in ROLES:
                    memory.update(role, example_indices, embeddings[role])
        return loss

    def get_config(self):
        return {
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            "feature_dim": self.feature_dim,
            "num_negatives": self.num_negatives,
            "nce_temperature": self.nce_temperature,
            "momentum": self.momentum,
            "num_examples": self.num_examples,
            "negatives": self.negatives,
            **super().get_config(),
        }


def _output_shape(model, layer_name):
    """The static shape of a model's tapped output, or None if unknown."""
    try:
        if layer_name is None:
            return tuple(model.outputs[0].shape)
        from tf_distill.taps import find_layer  # as DistillationLoss: no import cycle

        return tuple(find_layer(model, layer_name).output.shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
