"""On-policy distillation of causal LMs (GKD).

`OnPolicyDistiller` is the `Distiller` of generalized knowledge distillation
(Agarwal et al., "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes", ICLR 2024): with probability λ a batch's
continuations are sampled from the student itself, the teacher scores the
sampled sequences, and the distillation losses train the student on its own
samples, masked to the continuation. With probability 1 − λ the batch is a
plain supervised KD batch. λ = 0 is the `Distiller`; the divergence is any
distillation loss (forward KL as `"kd"`, reverse KL, generalized JSD, ...).

The distiller differs from the `Distiller` in one hook, `prepare_batch`: the
batch a training step works on. Everything else (the teacher pass, the loss,
the update, the metrics) is the one step of `tf_distill.distillers.engine`.
Sequence-level KD is `tf_distill.language.sequence_level_dataset`.
"""

import numpy as np

from tf_distill.backend import register_serializable
from tf_distill.backend import tf
from tf_distill.distillers.distiller import Distiller
from tf_distill.language import models as language_models
from tf_distill.language.models import PADDING_MASK
from tf_distill.language.models import TOKEN_IDS
from tf_distill.language.sampling import continuation_mask
from tf_distill.language.sampling import filter_logits
from tf_distill.language.sampling import sample_continuations
from tf_distill.validation import check_non_negative_integer
from tf_distill.validation import check_unit_interval


def _check_prompt_length(prompt_length):
    if not isinstance(prompt_length, int) or isinstance(prompt_length, bool) or prompt_length < 1:
        raise ValueError(
            f"`prompt_length` must be a positive integer. Received: prompt_length={prompt_length!r}"
        )


@register_serializable()
class OnPolicyDistiller(Distiller):
    """A `Distiller` that trains a causal LM on its own samples (GKD).

    Each training step draws `u ~ U(0, 1)` (seeded). If `u < λ`
    (`on_policy_fraction`), the tokens after the first `prompt_length` of
    each sequence are replaced by the student's own continuation (sampled
    compiled, inside the step, with `temperature`, `top_k`, `top_p`; see
    `tf_distill.language.sampling`), the teacher scores that sequence, and
    the loss is the distillation term alone, `(1 − α)·Σ wᵢ·Dᵢ(teacher,
    student)`, over the positions that predict a sampled token: the samples
    have no labels, so the student's label loss is 0 there, as for
    unlabeled data in the `Distiller`. Otherwise the step is the
    `Distiller`'s. `evaluate` is the `Distiller`'s (supervised).

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
        prompt_length: `P`, the number of leading tokens kept as prompt.
        temperature, top_k, top_p: the student's sampling (see
            `tf_distill.language.sampling.filter_logits`).
        seed: an int fixing the draws and the samples; drawn from NumPy's
            global state (see `keras.utils.set_random_seed`) when `None`.
        warmup_steps: the first `warmup_steps` training steps are all
            supervised (GKD starts from a supervised student: samples of an
            untrained one teach little). Defaults to 0.
        **kwargs: the `Distiller`'s other arguments.

    Example:

    ```python
    distiller = OnPolicyDistiller(teacher, student, "reverse_kl",
                                  on_policy_fraction=0.5, prompt_length=8,
                                  top_k=20, seed=0)
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
        temperature=1.0,
        top_k=None,
        top_p=None,
        seed=None,
        warmup_steps=0,
        **kwargs,
    ):
        check_unit_interval("on_policy_fraction", on_policy_fraction)
        check_non_negative_integer("warmup_steps", warmup_steps)
        _check_prompt_length(prompt_length)
        filter_logits(tf.zeros([1, 2]), temperature, top_k, top_p)  # Checks them.
        super().__init__(teacher, student, distillation_losses, **kwargs)
        self.on_policy_fraction = float(on_policy_fraction)
        self.prompt_length = prompt_length
        self.temperature = float(temperature)
        self.top_k = top_k
        self.top_p = top_p
        self.seed = int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed)
        self.warmup_steps = warmup_steps

    def get_config(self):
        return {
            **super().get_config(),
            "on_policy_fraction": self.on_policy_fraction,
            "prompt_length": self.prompt_length,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "seed": self.seed,
            "warmup_steps": self.warmup_steps,
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
            prompt (sampled with the step's seed), and the float32
            `[batch, time]` mask of the positions predicting sampled tokens.
        """
        token_ids = sample_continuations(
            self.student,
            x[TOKEN_IDS],
            self.prompt_length,
            tf.random.experimental.stateless_fold_in(self._step_seed(step), 1),
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            padding_mask=x[PADDING_MASK],
        )
        positions = tf.range(tf.shape(token_ids)[1])[tf.newaxis, :]
        padding_mask = tf.logical_or(tf.cast(x[PADDING_MASK], tf.bool), positions >= self.prompt_length)
        mask = continuation_mask(tf.shape(token_ids), self.prompt_length)
        return {TOKEN_IDS: token_ids, PADDING_MASK: padding_mask}, mask

    def prepare_batch(self, batch, training):
        """The batch of a training step: with probability λ the student's own
        continuations (no label loss: `Batch.labeled` is 0 everywhere; the
        metrics read the samples' next tokens, masked to the continuation),
        else the supervised batch."""
        if not training or self.on_policy_fraction == 0.0:
            return batch
        if batch.teacher_outputs is not None:
            raise ValueError(
                "OnPolicyDistiller needs the live teacher to score the student's samples: "
                "cached teacher outputs cannot be used (on_policy_fraction > 0)."
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
            ids = sampled_x[TOKEN_IDS]
            # The labels of a sampled batch are its next tokens (for metrics).
            labels = tf.concat([ids[:, 1:], ids[:, -1:]], axis=1)
            return ids, sampled_x[PADDING_MASK], tf.cast(labels, y.dtype), mask, tf.zeros_like(mask)

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
