"""On-policy distillation (GKD), its sampling, and sequence-level KD."""

import numpy as np
import pytest

import tf_distill
from tf_distill import OnPolicyDistiller
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.language import build_causal_lm
from tf_distill.language import next_token_batch
from tf_distill.language import sample_continuations
from tf_distill.language import sequence_level_dataset
from tf_distill.language.sampling import filter_logits

VOCABULARY = 64
LENGTH = 16
PROMPT = 4
ALPHA = 0.5


def tiny_gpt2(name, seed, hidden_dim=16, num_layers=1):
    keras.utils.set_random_seed(seed)
    return build_causal_lm(
        "gpt2",
        vocabulary_size=VOCABULARY,
        num_layers=num_layers,
        hidden_dim=hidden_dim,
        num_heads=2,
        max_sequence_length=LENGTH,
        name=name,
    )


@pytest.fixture(scope="module")
def teacher():
    return tiny_gpt2("teacher", seed=1, hidden_dim=32, num_layers=2)


def batch(seed=0):
    ids = np.random.default_rng(seed).integers(1, VOCABULARY, size=(4, LENGTH + 1))
    return next_token_batch(ids.astype("int32"))


def on_policy(teacher, fraction, seed=3, prompt_length=PROMPT, **kwargs):
    distiller = OnPolicyDistiller(
        teacher,
        tiny_gpt2("student", seed=2),
        "kd",
        on_policy_fraction=fraction,
        prompt_length=prompt_length,
        student_loss_weight=ALPHA,
        seed=seed,
        **kwargs,
    )
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", run_eagerly=True)
    return distiller


def test_sampling_is_deterministic_with_a_seed_and_compiled_equals_eager():
    x, _, _ = batch()
    ids = x["token_ids"]
    teacher = tiny_gpt2("sampler", seed=5)  # One layer: a short trace.
    first = sample_continuations(teacher, ids, PROMPT, seed=[7, 1], top_k=8)
    again = sample_continuations(teacher, ids, PROMPT, seed=[7, 1], top_k=8)
    other = sample_continuations(teacher, ids, PROMPT, seed=[8, 1], top_k=8)
    np.testing.assert_array_equal(first, again)
    assert (np.asarray(first) != np.asarray(other)).any()
    np.testing.assert_array_equal(first[:, :PROMPT], ids[:, :PROMPT])
    compiled = tf.function(lambda t: sample_continuations(teacher, t, PROMPT, [7, 1], top_k=8))
    np.testing.assert_array_equal(compiled(ids), first)


def test_sampled_tokens_respect_top_k_and_greedy_is_argmax(teacher):
    x, _, _ = batch(1)
    sampled = np.asarray(sample_continuations(teacher, x["token_ids"], PROMPT, [0, 0], top_k=3))
    logits = np.asarray(teacher({"token_ids": sampled, "padding_mask": np.ones_like(sampled)}))
    top3 = np.argsort(-logits, axis=-1)[..., :3]
    for position in range(PROMPT, LENGTH):
        tokens = sampled[:, position]
        assert all(token in top3[row, position - 1] for row, token in enumerate(tokens))
    greedy = np.asarray(sample_continuations(teacher, x["token_ids"], PROMPT, [0, 0], greedy=True))
    logits = np.asarray(teacher({"token_ids": greedy, "padding_mask": np.ones_like(greedy)}))
    np.testing.assert_array_equal(greedy[:, PROMPT:], logits[:, PROMPT - 1 : -1].argmax(-1))


def test_filter_logits_hand_checked():
    logits = tf.constant([[0.0, 1.0, 2.0, 3.0]])
    minus_infinity = -np.inf
    np.testing.assert_array_equal(
        filter_logits(logits, top_k=2), [[minus_infinity, minus_infinity, 2.0, 3.0]]
    )
    # softmax = [0.032, 0.087, 0.237, 0.644]: 0.7 needs the two largest.
    np.testing.assert_array_equal(
        filter_logits(logits, top_p=0.7), [[minus_infinity, minus_infinity, 2.0, 3.0]]
    )
    np.testing.assert_array_equal(
        filter_logits(logits, top_p=0.6), [[minus_infinity] * 3 + [3.0]]
    )
    np.testing.assert_allclose(filter_logits(logits, temperature=2.0), [[0.0, 0.5, 1.0, 1.5]])
    with pytest.raises(ValueError, match="`top_k` must be a positive integer"):
        filter_logits(logits, top_k=0)
    with pytest.raises(ValueError, match=r"`top_p` must be in \(0, 1\]"):
        filter_logits(logits, top_p=1.5)


def test_lambda_zero_is_the_distiller(teacher):
    x, y, weight = batch()
    gkd = on_policy(teacher, 0.0)
    plain = tf_distill.Distiller(
        teacher, tiny_gpt2("student", seed=2), "kd", student_loss_weight=ALPHA
    )
    plain.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", run_eagerly=True)
    gkd_history = gkd.fit(x, y, sample_weight=weight, batch_size=4, verbose=0).history
    plain_history = plain.fit(x, y, sample_weight=weight, batch_size=4, verbose=0).history
    for name in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(gkd_history[name], plain_history[name], rtol=1e-6)
    for gkd_weight, plain_weight in zip(gkd.student.weights, plain.student.weights):
        np.testing.assert_allclose(gkd_weight, plain_weight, atol=1e-6)


def test_lambda_one_trains_on_the_students_samples(teacher):
    x, y, weight = batch()
    gkd = on_policy(teacher, 1.0, top_k=10)
    sampled_x, mask = gkd.on_policy_batch(x, step=0)
    expected_mask = np.zeros((4, LENGTH), "float32")
    expected_mask[:, PROMPT - 1 : LENGTH - 1] = 1.0
    np.testing.assert_array_equal(mask, expected_mask)
    # Before the step: the Distiller's distillation term on the samples, masked.
    expected = gkd.compute_loss_terms(sampled_x, None, mask, training=True)
    # Unshuffled: the rows must be in the order `on_policy_batch` sampled.
    history = gkd.fit(x, y, sample_weight=weight, batch_size=4, shuffle=False, verbose=0).history
    assert history["student_loss"] == [0.0]
    np.testing.assert_allclose(history["distillation_loss"], expected["distillation_loss"], rtol=1e-5)
    np.testing.assert_allclose(
        history["loss"], (1 - ALPHA) * float(expected["distillation_loss"]), rtol=1e-5
    )


def test_generalized_jsd_trains_on_the_students_samples(teacher):
    # GKD's divergence (Agarwal et al. 2024), on a mixture of batches.
    x, y, weight = batch()
    gkd = OnPolicyDistiller(
        teacher,
        tiny_gpt2("student", seed=2),
        tf_distill.losses.get({"name": "token_kd", "divergence": "generalized_jsd", "beta": 0.5}),
        on_policy_fraction=0.5,
        prompt_length=PROMPT,
        top_p=0.9,
        seed=3,  # Draws: off-policy, then on-policy twice.
    )
    gkd.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    draws = [bool(gkd.is_on_policy(step)) for step in range(3)]
    history = gkd.fit(x, y, sample_weight=weight, batch_size=4, epochs=3, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    # Sampled steps have no label loss; the others do.
    assert [value == 0.0 for value in history["student_loss"]] == draws
    assert any(draws) and not all(draws)


def test_on_policy_draws_follow_lambda_and_the_seed(teacher):
    half = on_policy(teacher, 0.5)
    draws = [bool(half.is_on_policy(step)) for step in range(200)]
    assert 70 < sum(draws) < 130
    same_seed = on_policy(teacher, 0.5)
    assert draws == [bool(same_seed.is_on_policy(step)) for step in range(200)]
    other_seed = on_policy(teacher, 0.5, seed=4)
    assert draws != [bool(other_seed.is_on_policy(step)) for step in range(200)]
    always, never = on_policy(teacher, 1.0), on_policy(teacher, 0.0)
    assert all(bool(always.is_on_policy(step)) for step in range(20))
    assert not any(bool(never.is_on_policy(step)) for step in range(20))


def test_warmup_steps_are_supervised(teacher):
    warm = on_policy(teacher, 1.0, warmup_steps=3)
    assert [bool(warm.is_on_policy(step)) for step in range(6)] == [False] * 3 + [True] * 3
    assert OnPolicyDistiller.from_config(warm.get_config()).warmup_steps == 3
    with pytest.raises(ValueError, match=r"Received: warmup_steps=-1"):
        on_policy(teacher, 1.0, warmup_steps=-1)


def test_on_policy_arguments_are_checked(teacher):
    with pytest.raises(ValueError, match="on_policy_fraction"):
        on_policy(teacher, 1.5)
    with pytest.raises(ValueError, match="`prompt_length` must be a positive integer"):
        OnPolicyDistiller(teacher, tiny_gpt2("student", seed=2), prompt_length=0)
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        OnPolicyDistiller(teacher, tiny_gpt2("student", seed=2), temperature=0.0)
    # A prompt as long as the windows leaves nothing to sample: refused at
    # the first step (at trace time), not trained at loss 0.
    x, y, mask = batch()
    for prompt_length in (LENGTH, 40):
        gkd = on_policy(teacher, 1.0, prompt_length=prompt_length)
        with pytest.raises(ValueError, match=(
            rf"`prompt_length` must be shorter than the sequences.*Received: "
            rf"prompt_length={prompt_length} for sequences of {LENGTH} tokens"
        )):
            gkd.fit(x, y, sample_weight=mask, batch_size=4, epochs=1, verbose=0)


def test_config_round_trip_keeps_the_on_policy_arguments(teacher):
    gkd = on_policy(teacher, 0.25, top_p=0.9)
    restored = OnPolicyDistiller.from_config(gkd.get_config())
    assert (restored.on_policy_fraction, restored.prompt_length) == (0.25, PROMPT)
    assert (restored.top_p, restored.seed) == (0.9, 3)


def test_sequence_level_dataset_holds_the_teachers_greedy_continuations(teacher):
    x, _, _ = batch(2)
    prompts = np.asarray(x["token_ids"])[:, :PROMPT]
    dataset = sequence_level_dataset(teacher, prompts, LENGTH - 1)
    (inputs, labels, weights), = list(dataset)
    ids = np.concatenate([np.asarray(inputs["token_ids"]), np.asarray(labels)[:, -1:]], axis=1)
    np.testing.assert_array_equal(ids[:, :PROMPT], prompts)
    logits = np.asarray(teacher({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
    np.testing.assert_array_equal(ids[:, PROMPT:], logits[:, PROMPT - 1 : -1].argmax(-1))
    expected = np.zeros((4, LENGTH - 1), "float32")
    expected[:, PROMPT - 1 :] = 1.0
    np.testing.assert_array_equal(weights, expected)
    with pytest.raises(ValueError, match="max_sequence_length=16. Received: sequence length 17"):
        sequence_level_dataset(teacher, prompts, LENGTH)


@pytest.mark.slow
def test_on_policy_steps_report_no_metric_against_the_students_own_samples(teacher):
    x, y, weight = batch()
    gkd = OnPolicyDistiller(
        teacher, tiny_gpt2("student", seed=2), "kd", on_policy_fraction=0.5,
        prompt_length=PROMPT, seed=3,  # Draws: off-policy, then on-policy twice.
    )
    gkd.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                metrics=["accuracy"], run_eagerly=True)
    draws = [bool(gkd.is_on_policy(step)) for step in range(3)]
    assert draws == [False, True, True]
    expected = keras.metrics.SparseCategoricalAccuracy()
    expected.update_state(y, gkd.student(x), sample_weight=weight)
    history = gkd.fit(x, y, sample_weight=weight, batch_size=4, epochs=3, verbose=0).history
    # The first epoch's accuracy is on the real batch; the sampled epochs
    # update no metric (their accuracy against the student's own samples
    # would be inflated).
    np.testing.assert_allclose(history["accuracy"][0], float(expected.result()), rtol=1e-6)
    assert history["accuracy"][1:] == [0.0, 0.0]


@pytest.mark.slow
def test_the_cached_step_equals_the_full_forward_step_compiled(teacher):
    x, y, weight = batch()
    histories = []
    for use_cache, eager in ((False, True), (True, False)):
        gkd = OnPolicyDistiller(
            teacher, tiny_gpt2("student", seed=2), "kd", on_policy_fraction=1.0,
            prompt_length=PROMPT, seed=3, use_cache=use_cache,
        )
        gkd.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                    run_eagerly=eager, jit_compile=False)
        histories.append(gkd.fit(x, y, sample_weight=weight, batch_size=4, verbose=0).history)
    np.testing.assert_allclose(histories[0]["loss"], histories[1]["loss"], rtol=1e-5)


@pytest.mark.slow
def test_the_end_token_ends_the_on_policy_loss(teacher):
    x, y, weight = batch()
    probe = on_policy(teacher, 1.0, top_k=1)  # top_k=1: the student's greedy tokens.
    greedy, _ = probe.on_policy_batch(x, step=0)
    end = int(np.asarray(greedy["token_ids"])[0, PROMPT + 1])
    gkd = on_policy(teacher, 1.0, top_k=1, end_token_id=end)
    sampled_x, mask = gkd.on_policy_batch(x, step=0)
    tokens, mask = np.asarray(sampled_x["token_ids"]), np.asarray(mask)
    stop = PROMPT + int(np.argmax(tokens[0, PROMPT:] == end))
    assert stop <= PROMPT + 1
    expected = np.zeros(LENGTH, "float32")
    expected[PROMPT - 1 : stop] = 1.0
    np.testing.assert_array_equal(mask[0], expected)
    assert (tokens[0, stop:] == end).all()
    expected_terms = gkd.compute_loss_terms(sampled_x, None, mask, training=True)
    history = gkd.fit(x, y, sample_weight=weight, batch_size=4, shuffle=False, verbose=0).history
    np.testing.assert_allclose(
        history["distillation_loss"], expected_terms["distillation_loss"], rtol=1e-5
    )


def test_token_reduction_is_the_mean_over_all_tokens(teacher):
    x, y, _ = batch()
    # Rows keep 3, 6, 9 and 15 positions: their per-sequence means weigh
    # alike, their tokens do not.
    mask = np.zeros((4, LENGTH), "float32")
    for row, count in enumerate((3, 6, 9, 15)):
        mask[row, :count] = 1.0
    token = on_policy(teacher, 0.0, reduction="token")
    sequence = on_policy(teacher, 0.0)
    terms = token.compute_loss_terms(x, y, mask)
    rows = [
        sequence.compute_loss_terms(
            {key: value[row : row + 1] for key, value in x.items()}, y[row : row + 1],
            mask[row : row + 1],
        )
        for row in range(4)
    ]
    counts = mask.sum(axis=1)
    for name in ("student_loss", "distillation_loss"):
        per_row = np.array([float(row[name]) for row in rows])
        np.testing.assert_allclose(terms[name], (per_row * counts).sum() / counts.sum(), rtol=1e-5)
        mean = sequence.compute_loss_terms(x, y, mask)[name]
        np.testing.assert_allclose(mean, per_row.mean(), rtol=1e-5)


def test_sampling_temperature_is_the_new_name_and_old_configs_load(teacher):
    gkd = on_policy(teacher, 0.5, sampling_temperature=0.7, end_token_id=3, reduction="token")
    assert gkd.sampling_temperature == gkd.temperature == 0.7
    config = gkd.get_config()
    assert "temperature" not in config
    restored = OnPolicyDistiller.from_config(config)
    assert (restored.sampling_temperature, restored.end_token_id, restored.reduction) == (
        0.7, 3, "token")
    # A config saved before these arguments: `temperature`, no new keys.
    old = {key: value for key, value in config.items()
           if key not in ("sampling_temperature", "end_token_id", "reduction", "use_cache")}
    old["temperature"] = 0.7
    restored = OnPolicyDistiller.from_config(old)
    assert (restored.sampling_temperature, restored.end_token_id, restored.reduction) == (
        0.7, None, "sequence")
    with pytest.raises(ValueError, match="`temperature` is the old name of `sampling_temperature`"):
        on_policy(teacher, 0.5, temperature=0.5, sampling_temperature=0.7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sampling_temperature": 0.0}, r"`sampling_temperature` must be > 0. Received: "
                                        r"sampling_temperature=0.0"),
        ({"top_k": 0}, r"Received: top_k=0"),
        ({"top_p": 1.5}, r"Received: top_p=1.5"),
        ({"end_token_id": VOCABULARY}, rf"< {VOCABULARY} \(the vocabulary\). Received: "
                                       rf"end_token_id={VOCABULARY}"),
        ({"reduction": "mean"}, r"Received: reduction='mean'"),
        ({"use_cache": 1}, r"Received: use_cache=1"),
    ],
)
def test_sampler_settings_out_of_range_are_refused(teacher, kwargs, message):
    with pytest.raises(ValueError, match=message):
        OnPolicyDistiller(teacher, tiny_gpt2("student", seed=2), prompt_length=PROMPT, **kwargs)


@pytest.mark.slow
def test_sequence_level_continuations_stop_at_the_end_token(teacher):
    x, _, _ = batch(2)
    prompts = np.asarray(x["token_ids"])[:, :PROMPT]
    (inputs, _, _), = list(sequence_level_dataset(teacher, prompts, LENGTH - 1))
    end = int(np.asarray(inputs["token_ids"])[0, PROMPT + 1])
    (inputs, labels, weights), = list(
        sequence_level_dataset(teacher, prompts, LENGTH - 1, end_token_id=end)
    )
    ids = np.concatenate([np.asarray(inputs["token_ids"]), np.asarray(labels)[:, -1:]], axis=1)
    stop = PROMPT + int(np.argmax(ids[0, PROMPT:] == end))
    assert stop <= PROMPT + 1 and (ids[0, stop:] == end).all()
    expected = np.zeros(LENGTH - 1, "float32")
    expected[PROMPT - 1 : stop] = 1.0
    np.testing.assert_array_equal(np.asarray(weights)[0], expected)
    assert not np.asarray(inputs["padding_mask"])[0, stop + 1 :].any()
    with pytest.raises(ValueError, match=r"Received: end_token_id=-2"):
        sequence_level_dataset(teacher, prompts, LENGTH - 1, end_token_id=-2)
    with pytest.raises(ValueError, match=r"Received: top_k=0"):
        sequence_level_dataset(teacher, prompts, LENGTH - 1, greedy=False, top_k=0)


def test_batches_in_the_teachers_own_tokens_are_refused(teacher):
    x, y, weight = batch()
    gkd = on_policy(teacher, 0.5)
    wrapped = {"inputs": x, "teacher_inputs": {**x, "alignment": np.zeros((4, LENGTH, 2), "int32")}}
    with pytest.raises(ValueError, match="batches carrying the teacher's own tokens"):
        gkd.prepare_batch(tf_distill.batches.unpack((wrapped, y, weight)), training=True)
