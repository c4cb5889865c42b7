"""On-policy distillation of causal LMs (GKD).

`OnPolicyDistiller` is the `Distiller` of generalized knowledge distillation
(Agarwal et al., "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes", ICLR 2024; TRL's `GKDTrainer`): with probability λ
a batch's continuations are sampled from the student itself (with the KV
cache of a KerasHub `CausalLM`, inside the compiled step), the teacher
scores the sampled sequences, and the same divergence as on the other
batches trains the student on its own samples, masked to the continuation
(and to the first end token). With probability 1 − λ the batch is a plain
supervised KD batch. λ = 0 is the `Distiller`; the divergence is any
distillation loss (forward KL as `"kd"`, reverse KL, generalized JSD, ...).

The distiller differs from the `Distiller` in two hooks: `prepare_batch`,
the batch a training step works on, and `example_weights`, the optional
token-level mean. Everything else (the teacher pass, the loss, the update,
the metrics) is the one step of `tf_distill.distillers.engine`.
Sequence-level KD is `tf_distill.language.sequence_level_dataset`.
"""

import numpy as np

from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.distillers.distiller import Distiller
from tf_distill.language import models as language_models
from tf_distill.language.models import PADDING_MASK
from tf_distill.language.models import TOKEN_IDS
from tf_distill.language.sampling import check_end_token_id
from tf_distill.language.sampling import check_sampling
from tf_distill.language.sampling import check_use_cache
from tf_distill.language.sampling import generate_continuations
from tf_distill.validation import check_choice
from tf_distill.validation import check_non_negative_integer
from tf_distill.validation import check_positive
from tf_distill.validation import check_unit_interval

# How a batch's loss averages its tokens: each sequence's mean, then the
# mean over sequences; or every token alike (TRL's GKD: sum ÷ token count).
REDUCTIONS = ("sequence", "token")


def _check_prompt_length(prompt_length):
    if not isinstance(prompt_length, int) or isinstance(prompt_length, bool) or prompt_length < 1:
        raise ValueError(
            f"`prompt_length` must be a positive integer. Received: prompt_length={prompt_length!r}"
        )


def _sampling_temperature(temperature, sampling_temperature):
    """The sampling temperature from the new name or the old one (`temperature`)."""
    if temperature is not None:
        check_positive("temperature", temperature)
    if sampling_temperature is not None:
        check_positive("sampling_temperature", sampling_temperature)
    if temperature is not None and sampling_temperature is not None:
        if float(temperature) != float(sampling_temperature):
            raise ValueError(
                "`temperature` is the old name of `sampling_temperature`: give one. Received: "
                f"temperature={temperature!r}, sampling_temperature={sampling_temperature!r}"
            )
    value = sampling_temperature if sampling_temperature is not None else temperature
    return 1.0 if value is None else float(value)


@register_serializable()
class OnPolicyDistiller(Distiller):
    """A `Distiller` that trains a causal LM on its own samples (GKD).

    Each training step draws `u ~ U(0, 1)` (seeded). If `u < λ`
    (`on_policy_fraction`), the tokens after the first `prompt_length` of
    each sequence are replaced by the student's own continuation (sampled
    inside the compiled step with `sampling_temperature`, `top_k`, `top_p`,
    with the KV cache of a KerasHub `CausalLM`: see
    `tf_distill.language.sampling`), the teacher scores that sequence, and
    the loss is the distillation term `(1 − α)·Σ wᵢ·Dᵢ(teacher, student)`
    over the positions that predict a sampled token, up to the first
    `end_token_id`. The samples have no labels, so the label loss is 0
    there (as for unlabeled data in the `Distiller`), and the compiled
    metrics (accuracy, ...) skip the step: they come from real data only.
    Otherwise the step is the `Distiller`'s. `evaluate` is the
    `Distiller`'s (supervised).

    **GKD as published** (Agarwal et al. 2024; TRL's `GKDTrainer`) is
    `student_loss_weight=0`: both kinds of step then minimise the same
    divergence, the one the distillation losses name (forward KL `"kd"`,
    `TokenDistillation("reverse_kl")`, `("generalized_jsd", beta=β)`).
    With α > 0 the off-policy steps add the label loss that the samples
    cannot have. `reduction="token"` is TRL's mean over tokens.

    **Two temperatures.** `sampling_temperature` divides the student's
    logits when it samples; a distillation loss's own `temperature` (e.g.
    `TokenDistillation(temperature=...)`) softens the distributions it
    compares. They are independent.

    Inputs are KerasHub's `{"token_ids", "padding_mask"}` dicts of length
    `time`; labels the next tokens `[batch, time]`; a sample weight, if
    given, is a `[batch, time]` mask (the padding mask by default).

    Args:
        teacher, student: `keras_hub.models.CausalLM` models (or models with
            the same inputs and outputs).
        distillation_losses: as for `Distiller`; defaults to `"kd"`
            (forward KL at temperature 1).
        on_policy_fraction: λ in [0, 1], the probability that a batch is
            sampled from the student.
        prompt_length: `P`, the number of leading tokens kept as prompt
            (fewer in a row whose padding mask ends sooner).
        temperature: The old name of `sampling_temperature`, read from
            configs saved before it; give one or the other.
        top_k, top_p: Optional truncations of the student's sampling
            (`top_k` a positive integer, `top_p` in (0, 1]; see
            `tf_distill.language.sampling.filter_logits`). Defaults to
            none: plain sampling at `sampling_temperature`.
        seed: an int fixing the draws and the samples; drawn from NumPy's
            global state (see `keras.utils.set_random_seed`) when `None`.
        warmup_steps: the first `warmup_steps` training steps are all
            supervised (GKD starts from a supervised student: samples of an
            untrained one teach little). Defaults to 0.
        sampling_temperature: The temperature (> 0) the student samples at.
            Defaults to 1.0 (the student's own distribution).
        end_token_id: Optional end token: a sampled row stops at its first
            one (included in the loss; what follows is masked, also when the
            pad id is the end id). `None`: every position is sampled.
        reduction: `"sequence"` (default): each sequence's mean over its
            tokens, averaged over the batch; `"token"`: the sum over all
            tokens of the batch ÷ their count (TRL's), so longer sequences
            weigh more. Applies to every step and to `evaluate`. Under
            `tf.distribute`, each replica's batch is averaged over its own
            tokens.
        use_cache: `None` (default) samples with the KV cache when the
            student has one, else with a full forward pass per token;
            `True` requires the cache; `False` never uses it.
        **kwargs: the `Distiller`'s other arguments.

    Raises:
        ValueError: for an argument out of range, naming it; at the first
            step, for a prompt as long as the sequences.

    Example:

    ```python
    distiller = OnPolicyDistiller(teacher, student,
                                  TokenDistillation("generalized_jsd", beta=0.5),
                                  on_policy_fraction=0.5, prompt_length=8,
                                  sampling_temperature=1.0, end_token_id=2,
                                  student_loss_weight=0.0, reduction="token",
                                  seed=0)
    distiller.compile("adam", loss="sparse_categorical_crossentropy")
    distiller.fit(x, y, epochs=1)
    ```
    """

    def __init__(
        self,
        teacher=None,
        student=None,
        distillation_losses="kd",
        on_policy_fraction=0.5,
        prompt_length=1,
        temperature=None,
        top_k=None,
        top_p=None,
        seed=None,
        warmup_steps=0,
        sampling_temperature=None,
        end_token_id=None,
        reduction="sequence",
        use_cache=None,
        **kwargs,
    ):
        check_unit_interval("on_policy_fraction", on_policy_fraction)
        check_non_negative_integer("warmup_steps", warmup_steps)
        _check_prompt_length(prompt_length)
        sampling_temperature = _sampling_temperature(temperature, sampling_temperature)
        check_sampling(sampling_temperature, top_k, top_p)
        check_end_token_id(end_token_id, language_models.vocabulary_size(student)
                           if student is not None else None)
        check_choice("reduction", reduction, REDUCTIONS)
        check_use_cache(use_cache)
        super().__init__(teacher, student, distillation_losses, **kwargs)
        self.on_policy_fraction = float(on_policy_fraction)
        self.prompt_length = prompt_length
        self.sampling_temperature = sampling_temperature
        self.top_k = top_k
        self.top_p = top_p
        self.seed = int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed)
        self.warmup_steps = warmup_steps
        self.end_token_id = end_token_id
        self.reduction = reduction
        self.use_cache = use_cache

    @property
    def temperature(self):
        """The old name of `sampling_temperature`."""
        return self.sampling_temperature

    def get_config(self):
        return {
            **super().get_config(),
            "on_policy_fraction": self.on_policy_fraction,
            "prompt_length": self.prompt_length,
            "sampling_temperature": self.sampling_temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "seed": self.seed,
            "warmup_steps": self.warmup_steps,
            "end_token_id": self.end_token_id,
            "reduction": self.reduction,
            "use_cache": self.use_cache,
        }

    def _step_seed(self, step):
        return tf.random.experimental.stateless_fold_in(
            tf.constant([self.seed, 0], tf.int64), tf.cast(step, tf.int64)
        )

    def is_on_policy(self, step):
        """Whether training step `step` (from 0) samples from the student."""
        draw = tf.random.stateless_uniform([], seed=self._step_seed(step))
        warm = tf.cast(step, tf.int64) >= self.warmup_steps
        return tf.logical_and(warm, draw < self.on_policy_fraction)

    def on_policy_batch(self, x, step):
        """The batch that step `step` trains on when it is on-policy.

        Returns:
            `(x, mask)`: `x` with the student's continuation after the
            prompt (sampled with the step's seed) and its padding mask, and
            the float32 `[batch, time]` mask of the positions predicting
            sampled tokens (up to the first end token).
        """
        continuations = generate_continuations(
            self.student,
            x[TOKEN_IDS],
            self.prompt_length,
            tf.random.experimental.stateless_fold_in(self._step_seed(step), 1),
            temperature=self.sampling_temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            padding_mask=x[PADDING_MASK],
            end_token_id=self.end_token_id,
            use_cache=self.use_cache,
        )
        sampled_x = {TOKEN_IDS: continuations.token_ids, PADDING_MASK: continuations.padding_mask}
        return sampled_x, continuations.loss_mask

    def example_weights(self, sample_weight, mask):
        """Each example's weight: with `reduction="token"`, its count of
        positions (scaled to a mean of 1), so the batch mean of per-sequence
        means is the mean over all tokens."""
        if self.reduction != "token" or mask is None:
            return super().example_weights(sample_weight, mask)
        mask = tf.cast(mask, tf.float32)
        counts = tf.reduce_sum(tf.reshape(mask, [tf.shape(mask)[0], -1]), axis=1)
        size = tf.cast(tf.shape(counts)[0], tf.float32)
        return tf.math.divide_no_nan(counts * size, tf.reduce_sum(counts))

    def prepare_batch(self, batch, training):
        """The batch of a training step: with probability λ the student's own
        continuations (no label loss and no metric: `Batch.labeled` is 0
        everywhere), else the supervised batch."""
        if not training or self.on_policy_fraction == 0.0:
            return batch
        if batch.teacher_outputs is not None:
            raise ValueError(
                "OnPolicyDistiller needs the live teacher to score the student's samples: "
                "cached teacher outputs cannot be used (on_policy_fraction > 0)."
            )
        if batch.teacher_inputs is not None:
            raise ValueError(
                "OnPolicyDistiller samples in the student's tokens, which the teacher must "
                "read: batches carrying the teacher's own tokens (another tokenizer, "
                "`teacher_inputs`) cannot be sampled (on_policy_fraction > 0)."
            )
        x = batch.x
        if not language_models.is_token_batch(x):
            raise ValueError(
                "OnPolicyDistiller expects inputs {'token_ids', 'padding_mask'}. Received: "
                f"x={x!r}"
            )
        length = x[TOKEN_IDS].shape[-1]
        if length is not None and self.prompt_length >= length:
            # Nothing would be sampled: every step would train at loss 0.
            raise ValueError(
                "`prompt_length` must be shorter than the sequences, leaving tokens for "
                f"the student to sample. Received: prompt_length={self.prompt_length} for "
                f"sequences of {length} tokens"
            )
        sample_weight = tf.cast(batch.sample_weight, tf.float32)
        if sample_weight.shape.rank != 2:
            raise ValueError(
                "OnPolicyDistiller expects a `[batch, time]` sample weight (a mask). "
                f"Received: sample_weight of shape {sample_weight.shape}"
            )
        has_labels = batch.y is not None
        # Unlabeled data: a placeholder of the labels' shape (no label loss).
        y = batch.y if has_labels else tf.zeros_like(x[TOKEN_IDS])
        step = self.optimizer.iterations

        def sampled():
            sampled_x, mask = self.on_policy_batch(x, step)
            # The real labels stand in (`labeled` is 0: no loss, no metric).
            padding_mask = tf.cast(sampled_x[PADDING_MASK], tf.bool)
            return sampled_x[TOKEN_IDS], padding_mask, y, mask, tf.zeros_like(mask)

        def supervised():
            padding_mask = tf.cast(x[PADDING_MASK], tf.bool)
            return x[TOKEN_IDS], padding_mask, y, sample_weight, tf.ones_like(sample_weight)

        if self.on_policy_fraction == 1.0:
            token_ids, padding_mask, labels, weights, labeled = sampled()
        else:
            token_ids, padding_mask, labels, weights, labeled = tf.cond(
                self.is_on_policy(step), sampled, supervised
            )
        return batch._replace(
            x={TOKEN_IDS: token_ids, PADDING_MASK: padding_mask},
            y=labels if has_labels else None,
            sample_weight=weights,
            labeled=labeled,
        )
