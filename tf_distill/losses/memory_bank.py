"""The state of contrastive distillation: embedding heads and memory banks.

Keras layers a loss owns (`DistillationLoss.layers`): the `Distiller`
trains their trainable variables with the student's optimizer and keeps them
out of `distiller.student`. `EmbeddingHead` projects features into the
shared embedding space; `ContrastMemory` keeps one embedding per training
example for the student and for the teacher, as RepDistiller's
`crd/memory.py` does, and updates them in-graph (see
`tf_distill.losses.contrastive` for the loss that reads them).
"""

import math

from tf_distill.backend import keras
from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.losses.labels import class_indices
from tf_distill.validation import check_choice

# `tf.math.l2_normalize` clamps the *squared* norm at this value.
_NORMALIZE_EPSILON = 1e-12
ROLES = ("student", "teacher")
# How negatives are drawn: from the rows of other classes than the anchor's
# (RepDistiller's `contrast_idx`, mode "exact"), or from all rows.
NEGATIVES = ("other_classes", "uniform")
# A row whose class is not known yet (never seen in training, no labels set).
UNKNOWN_CLASS = -1
# Draws are uniform integers below this, reduced modulo the pool's size: the
# bias is below pool / 2³¹.
_DRAW_RANGE = 2**31 - 1


def momentum_update(rows, embeddings, momentum=0.5):
    """New bank rows: `normalize(m · rows + (1 − m) · embeddings)`.

    Args:
        rows: `[n, dim]` current rows of a memory bank.
        embeddings: `[n, dim]` the examples' new embeddings.
        momentum: `m`, in [0, 1].

    Returns:
        `[n, dim]` rows of unit L2 norm.
    """
    mixed = momentum * rows + (1.0 - momentum) * embeddings
    return tf.math.l2_normalize(mixed, axis=-1, epsilon=_NORMALIZE_EPSILON)


def _tf_variable(variable):
    # A Keras 3 variable wraps a tf.Variable (a MirroredVariable under
    # tf.distribute); tf_keras returns the tf.Variable itself.
    return variable if isinstance(variable, tf.Variable) else variable.value


def _replica_context():
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def across_replicas(value):
    """`value` concatenated over the replicas along axis 0 (itself on one device)."""
    context = _replica_context()
    return value if context is None else context.all_gather(value, axis=0)


def sum_across_replicas(value):
    """`value` summed over the replicas (itself on one device)."""
    context = _replica_context()
    return value if context is None else context.all_reduce(tf.distribute.ReduceOp.SUM, value)


@register_serializable()
class EmbeddingHead(keras.layers.Layer):
    """A linear projection then L2 normalization (RepDistiller's `Embed`).

    Inputs of any rank are flattened to `[batch, features]`; computed in
    float32 whatever the global dtype policy.

    Args:
        feature_dim: The embedding's width.
    """

    def __init__(self, feature_dim=128, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.feature_dim = feature_dim
        self.projection = keras.layers.Dense(feature_dim, dtype="float32", name="projection")

    def build(self, input_shape):
        width = math.prod(tf.TensorShape(input_shape)[1:])
        self.projection.build((None, width))
        self.built = True

    def call(self, features):
        width = self.projection.kernel.shape[0]
        features = tf.reshape(tf.cast(features, tf.float32), [-1, width])
        return tf.math.l2_normalize(
            self.projection(features), axis=-1, epsilon=_NORMALIZE_EPSILON
        )

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return {**config, "feature_dim": self.feature_dim}


@register_serializable()
class ContrastMemory(keras.layers.Layer):
    """CRD's two memory banks and normalizing constants (RepDistiller's `ContrastMemory`).

    Holds, as non-trainable float32 variables, a student bank and a teacher
    bank of shape `[num_examples, feature_dim]`, initialized uniformly in
    `±1/sqrt(feature_dim / 3)` as RepDistiller's, and the two normalizing
    constants `Z` of the NCE loss, unset (−1) until the first training batch
    estimates them (`normalizer`).

    Under `tf.distribute` the variables are mirrored: every replica applies
    the updates of all replicas (gathered across them), so the copies stay
    equal.

    With `negatives="other_classes"` it also keeps each row's class
    (`example_labels`, int64, `UNKNOWN_CLASS` until known), so that
    negatives can be drawn from the other classes (`sample_negatives`).

    Args:
        num_examples: Rows of each bank: the size of the training set.
        feature_dim: The embeddings' width.
        num_negatives: `K`, rows drawn per example, with replacement.
        momentum: The banks' momentum `m` (see `momentum_update`).
        negatives: `"other_classes"` (rows of other classes than the
            anchor's, where its class is known) or `"uniform"` (all rows).
    """

    def __init__(
        self,
        num_examples,
        feature_dim=128,
        num_negatives=4096,
        momentum=0.5,
        negatives="other_classes",
        **kwargs,
    ):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        check_choice("negatives", negatives, NEGATIVES)
        self.num_examples = num_examples
        self.feature_dim = feature_dim
        self.num_negatives = num_negatives
        self.momentum = momentum
        self.negatives = negatives
        self.example_labels = None

    def build(self, input_shape=None):
        bound = 1.0 / math.sqrt(self.feature_dim / 3.0)
        for role in ROLES:
            bank = self.add_weight(
                shape=(self.num_examples, self.feature_dim),
                initializer=keras.initializers.RandomUniform(-bound, bound),
                trainable=False,
                name=f"{role}_bank",
            )
            normalizer = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(-1.0),
                trainable=False,
                name=f"{role}_normalizer",
            )
            setattr(self, f"{role}_bank", bank)
            setattr(self, f"{role}_normalizer", normalizer)
        self.example_labels = None
        if self.negatives == "other_classes":
            # Created last: a memory saved without it (tf_distill 0.1.0) has
            # the same first four variables (see `load_own_variables`).
            self.example_labels = self.add_weight(
                shape=(self.num_examples,),
                initializer=keras.initializers.Constant(UNKNOWN_CLASS),
                dtype="int64",
                trainable=False,
                name="example_labels",
            )
        self.built = True

    def load_own_variables(self, store):
        """Loads the saved variables; a memory saved before it kept the
        rows' classes (tf_distill 0.1.0: banks and normalizers only) loads
        too, its classes unknown until training sees them again."""
        if self.example_labels is not None and len(store.keys()) == len(self.weights) - 1:
            for index, variable in enumerate(self.weights[:-1]):
                variable.assign(store[str(index)])
            self.example_labels.assign(
                tf.fill([self.num_examples], tf.constant(UNKNOWN_CLASS, tf.int64))
            )
            return
        super().load_own_variables(store)

    def check_indices(self, example_indices):
        """`example_indices` as `[batch]` int64, asserted in `[0, num_examples)`."""
        example_indices = tf.cast(tf.reshape(example_indices, [-1]), tf.int64)
        tf.debugging.assert_non_negative(
            example_indices, message="CRDistillation: `example_indices` must be >= 0."
        )
        tf.debugging.assert_less(
            example_indices,
            tf.constant(self.num_examples, tf.int64),
            message=(
                "CRDistillation: every example index must be < num_examples="
                f"{self.num_examples} (the memory banks' rows): set `num_examples` "
                "to the size of the training set."
            ),
        )
        return example_indices

    def sample_negatives(self, batch_size, classes=None):
        """`[batch, K]` negative rows: RepDistiller's `contrast_idx` without
        its positive column.

        With `classes` (each anchor's class, `[batch]`) and
        `negatives="other_classes"`, each anchor's rows are drawn uniformly
        from those whose class is not the anchor's: the rows of other
        classes and the rows whose class is not known yet (never seen in
        training: they hold their random initial vectors, no example's
        embedding). An anchor whose class every row shares draws from all
        rows. Otherwise rows are drawn uniformly from all rows.

        Draws are with replacement. RepDistiller draws each example's `K`
        without replacement (`np.random.choice(..., replace=False)` when
        `K` is at most the pool): each negative has the same distribution
        either way, so the loss's expectation is the same, with a little
        more variance here (about `K / (2 · pool)` of the draws repeat a
        row); an exact draw without replacement (a top-k over all rows per
        example) costs 10 to 50 times as much on CPU.
        """
        shape = [batch_size, self.num_negatives]
        if classes is None or self.example_labels is None:
            return tf.random.uniform(shape, 0, self.num_examples, dtype=tf.int64)
        row_classes = tf.convert_to_tensor(self.example_labels)
        classes = tf.cast(tf.reshape(classes, [-1]), tf.int64)
        # Rows sorted by class: those of an anchor's class are one run
        # [start, start + count) of `order`; the pool is the rest.
        order = tf.argsort(row_classes, stable=True)
        sorted_classes = tf.gather(row_classes, order)
        start = tf.searchsorted(sorted_classes[None], classes[None], side="left")[0]
        end = tf.searchsorted(sorted_classes[None], classes[None], side="right")[0]
        count = end - start
        count = tf.where(count >= self.num_examples, tf.zeros_like(count), count)
        pool = self.num_examples - count
        draws = tf.random.uniform(shape, 0, _DRAW_RANGE, dtype=tf.int64)
        positions = draws % tf.cast(pool, tf.int64)[:, None]
        start, count = tf.cast(start, tf.int64)[:, None], tf.cast(count, tf.int64)[:, None]
        positions = tf.where(positions >= start, positions + count, positions)
        return tf.cast(tf.gather(order, positions), tf.int64)

    def assign_labels(self, labels):
        """Sets every row's class at once: `labels[i]` is example `i`'s.

        Makes the draw of negatives exact from the first step, as
        RepDistiller's (whose data set knows every label). Without it a row's
        class is learned when training first sees the example.

        Args:
            labels: `[num_examples]` class indices (or one-hot rows), in the
                order of the example indices.

        Raises:
            ValueError: with `negatives="uniform"` (no classes are kept), or
                for labels of another length.
        """
        if self.negatives != "other_classes":
            raise ValueError(
                "Example labels are kept only with `negatives='other_classes'`. "
                f"Received: negatives={self.negatives!r}"
            )
        labels = tf.cast(class_indices(labels), tf.int64)
        if labels.shape[0] != self.num_examples:
            raise ValueError(
                f"`labels` must hold one class per example ({self.num_examples}). "
                f"Received: labels of length {labels.shape[0]}"
            )
        if not self.built:
            self.build(None)
        _tf_variable(self.example_labels).assign(labels)

    def update_labels(self, example_indices, classes):
        """Records the classes of the examples at `example_indices` (gathered
        across replicas, as `update`)."""
        variable = _tf_variable(self.example_labels)
        indices = across_replicas(tf.cast(example_indices, tf.int64))
        classes = across_replicas(tf.cast(tf.reshape(classes, [-1]), tf.int64))
        return variable.scatter_update(tf.IndexedSlices(classes, indices))

    def rows(self, role, indices):
        """The `role` bank's rows at `indices` (any shape), without gradient."""
        return tf.stop_gradient(tf.gather(getattr(self, f"{role}_bank"), indices))

    def normalizer(self, role, scores, training=False):
        """`Z` for scores anchored at `role`: the stored one, or else
        `mean(scores) · num_examples` over this (global) batch, stored when
        `training`."""
        variable = getattr(self, f"{role}_normalizer")
        scores = tf.stop_gradient(tf.cast(scores, tf.float32))
        total = sum_across_replicas(
            tf.stack([tf.reduce_sum(scores), tf.cast(tf.size(scores), tf.float32)])
        )
        estimate = total[0] / total[1] * float(self.num_examples)
        current = tf.convert_to_tensor(variable)
        value = tf.where(current < 0.0, estimate, current)
        if training:
            _tf_variable(variable).assign(value)
        return value

    def update(self, role, example_indices, embeddings):
        """Moves the `role` bank's rows at `example_indices` toward `embeddings`.

        Under `tf.distribute` (in a replica), the indices and embeddings of
        every replica are gathered and each replica applies them all.
        """
        bank = _tf_variable(getattr(self, f"{role}_bank"))
        indices = across_replicas(tf.cast(example_indices, tf.int64))
        embeddings = across_replicas(tf.stop_gradient(tf.cast(embeddings, tf.float32)))
        rows = momentum_update(tf.gather(bank, indices), embeddings, self.momentum)
        return bank.scatter_update(tf.IndexedSlices(rows, indices))

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return {
            **config,
            "num_examples": self.num_examples,
            "feature_dim": self.feature_dim,
            "num_negatives": self.num_negatives,
            "momentum": self.momentum,
            "negatives": self.negatives,
        }
