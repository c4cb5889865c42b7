"""Tests of the sharded top-k teacher cache (`tf_distill.cache.topk`)."""

import glob
import json
import os

import numpy as np
import pytest

import tf_distill
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.cache import StaleCacheError
from tf_distill.cache import TopKCache
from tf_distill.cache import build_topk_cache
from tf_distill.cache import open_topk_cache
from tf_distill.losses import TopKDistillation
from tf_distill.losses import topk_kl
from tf_distill.losses import topk_targets

VOCABULARY, LENGTH, EXAMPLES, K = 64, 16, 32, 4


def language_model(seed, scale=1.0):
    keras.utils.set_random_seed(seed)
    initializer = keras.initializers.RandomNormal(stddev=scale)
    return keras.Sequential(
        [
            keras.Input([LENGTH], dtype="int32"),
            keras.layers.Embedding(VOCABULARY, 8, embeddings_initializer=initializer),
            keras.layers.Dense(VOCABULARY, kernel_initializer=initializer),
        ]
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCABULARY, size=[EXAMPLES, LENGTH]).astype(np.int32)
    mask = np.ones([EXAMPLES, LENGTH], np.float32)
    mask[::3, LENGTH // 2 :] = 0.0
    return tokens, np.roll(tokens, -1, axis=1), mask


@pytest.fixture(scope="module")
def teacher():
    return language_model(0)


def test_two_workers_write_shards_that_join_and_read_back(tmp_path, data, teacher):
    messages = []
    first = build_topk_cache(
        teacher, data, tmp_path, k=K, shard=(0, 2), tokenizer="bytes", log=messages.append
    )
    assert first is None  # shard 1 is missing
    assert not os.path.exists(tmp_path / "manifest.json")
    with pytest.raises(FileNotFoundError, match="No joined top-k cache"):
        open_topk_cache(teacher, data, tmp_path, tokenizer="bytes")
    cache = build_topk_cache(teacher, data, tmp_path, k=K, shard=(1, 2), tokenizer="bytes")
    assert isinstance(cache, TopKCache)
    assert (cache.k, cache.vocabulary_size, cache.num_examples) == (K, VOCABULARY, EXAMPLES)
    # Writing a shard again reuses it.
    build_topk_cache(teacher, data, tmp_path, k=K, shard=(0, 2), tokenizer="bytes",
                     log=messages.append)
    assert "already written" in messages[-1]

    opened = open_topk_cache(teacher, data, tmp_path, tokenizer="bytes")
    assert opened.fingerprint == cache.fingerprint
    log_probs, indices, rest = (np.asarray(v) for v in topk_targets(teacher(data[0]), K))
    seen = np.zeros(EXAMPLES, bool)
    for x, y, weight in opened.dataset(batch_size=5, shuffle=True, seed=1):
        packed = x["teacher_outputs"]["logits"].numpy()
        assert packed.shape[1:] == (LENGTH, 2 * K + 1)
        # Each batch's targets belong to its own examples, in both shards.
        rows = [int(np.flatnonzero((data[0] == row).all(axis=1))[0]) for row in x["inputs"].numpy()]
        seen[rows] = True
        np.testing.assert_array_equal(packed[..., K : 2 * K], indices[rows])
        np.testing.assert_allclose(packed[..., :K], log_probs[rows], rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(packed[..., 2 * K], rest[rows], rtol=1e-6)
        np.testing.assert_array_equal(y.numpy(), data[1][rows])
        np.testing.assert_array_equal(weight.numpy(), data[2][rows])
    assert seen.all()


@pytest.mark.slow
def test_distiller_trains_on_the_cache_without_the_teacher(tmp_path, data, teacher):
    cache = build_topk_cache(teacher, data, tmp_path, k=K)
    student = language_model(1, scale=0.1)
    distiller = tf_distill.Distiller(teacher, student, TopKDistillation(), student_loss_weight=0.0)
    distiller.compile(keras.optimizers.Adam(0.1), "sparse_categorical_crossentropy")
    (x, y, weight), = cache.dataset(batch_size=EXAMPLES, shuffle=False).take(1)
    terms = distiller.compute_loss_terms(x, y, weight)
    log_probs, indices, rest = topk_targets(teacher(data[0]), K)
    expected = topk_kl(tf.cast(tf.cast(log_probs, tf.float16), tf.float32), indices, rest,
                       student(data[0]), mask=data[2])
    np.testing.assert_allclose(
        float(terms["distillation_loss"]), float(np.mean(expected)), rtol=1e-4
    )
    # Training on the cache never runs the teacher: its output layer counts calls
    # (a traced call counts too).
    calls = []
    output_layer = teacher.layers[-1]
    original_call = output_layer.call

    def counting_call(*args, **kwargs):
        calls.append(1)
        return original_call(*args, **kwargs)

    output_layer.call = counting_call
    try:
        history = distiller.fit(cache.dataset(batch_size=16, seed=0).repeat(5), verbose=0)
        teacher(data[0][:1])
    finally:
        output_layer.call = original_call
    # Only the call made on purpose after training reached the teacher.
    assert calls == [1]
    after = distiller.compute_loss_terms(x, y, weight)
    assert float(after["distillation_loss"]) < 0.5 * float(terms["distillation_loss"])
    assert np.isfinite(history.history["loss"]).all()


def test_bytes_per_token_on_disk(tmp_path, data, teacher):
    cache = build_topk_cache(teacher, data, tmp_path, k=K, shard=(0, 1))
    on_disk = sum(os.path.getsize(path) for path in glob.glob(str(tmp_path / "shard-*" / "*.npy")))
    tokens = EXAMPLES * LENGTH
    # float16 log-probabilities, uint16 ids (V = 64 <= 65,536), a float32 rest.
    assert cache.bytes_per_token == K * 4 + 4
    assert on_disk / tokens <= K * 4 + 8
    assert np.load(tmp_path / "shard-00000-of-00001" / "indices.npy").dtype == np.uint16


def test_writing_a_shard_shows_a_progress_bar_only_when_verbose(tmp_path, data, teacher,
                                                                capsys):
    build_topk_cache(teacher, data, tmp_path / "quiet", k=K, shard=(1, 2))
    assert capsys.readouterr().out == ""  # quiet by default, as before
    build_topk_cache(teacher, data, tmp_path / "shown", k=K, shard=(1, 2),
                     inference_batch_size=8, verbose=1)
    shown = capsys.readouterr().out
    half = EXAMPLES // 2
    assert f"8/{half}" in shown and f"{half}/{half}" in shown  # the shard's own examples


def test_k_not_below_the_vocabulary_is_refused_before_any_work(tmp_path, data, teacher):
    for k in (VOCABULARY, VOCABULARY + 1):
        with pytest.raises(ValueError) as error:
            build_topk_cache(teacher, data, tmp_path / "cache", k=k)
        assert str(error.value) == (
            f"`k` must be < the vocabulary size V={VOCABULARY} (k = V would store more "
            f"than the full logits). Received: k={k}"
        )
    assert not os.path.exists(tmp_path / "cache")


def test_cache_of_another_teacher_or_tokenizer_is_refused(tmp_path, data, teacher):
    cache = build_topk_cache(teacher, data, tmp_path, k=K, tokenizer="bytes-v1")
    other_teacher = language_model(2)
    # Another teacher with the same tokenizer; the same teacher with another.
    for model, tokenizer in ((other_teacher, "bytes-v1"), (teacher, "bytes-v2")):
        for function, kwargs in ((open_topk_cache, {}), (build_topk_cache, {"k": K})):
            with pytest.raises(StaleCacheError) as error:
                function(model, data, tmp_path, tokenizer=tokenizer, **kwargs)
            message = str(error.value)
            assert "\n" not in message
            assert f"has fingerprint {cache.fingerprint}" in message
            other = message.split(" give ")[1].split(":")[0]
            assert len(other) == 64 and other != cache.fingerprint
            assert "another teacher or tokenizer" in message


def test_argument_errors(tmp_path, data, teacher):
    with pytest.raises(ValueError, match=r"`shard` must be `\(index, count\)`.*shard=\(2, 2\)"):
        build_topk_cache(teacher, data, tmp_path, shard=(2, 2))
    with pytest.raises(ValueError, match=r"`k` must be an integer >= 1. Received: k=0"):
        build_topk_cache(teacher, data, tmp_path, k=0)
    with pytest.raises(ValueError, match="Cannot cache an infinite pipeline"):
        build_topk_cache(teacher, tf.data.Dataset.from_tensor_slices(data).repeat(), tmp_path)
    with pytest.raises(ValueError, match="random augmentation"):
        noisy = tf.data.Dataset.from_tensor_slices(data).map(
            lambda x, y, w: (x, y, w * tf.random.uniform([]))
        )
        build_topk_cache(teacher, noisy, tmp_path)
    assert not os.path.exists(tmp_path / "manifest.json")

    class Tokenizer:
        def vocabulary_size(self):
            return 50

    with pytest.raises(ValueError, match=r"tokenizer's vocabulary has 50 tokens.*V=64"):
        build_topk_cache(teacher, data, tmp_path, tokenizer=Tokenizer())


def test_a_kerashub_teacher_caches_the_readmes_call_and_refuses_bare_token_ids(tmp_path):
    from tf_distill.language import build_causal_lm
    from tf_distill.language import next_token_batch

    teacher = build_causal_lm(
        "gpt2", vocabulary_size=VOCABULARY, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=LENGTH,
    )
    token_ids = np.random.default_rng(1).integers(0, VOCABULARY, size=[6, LENGTH + 1])
    # As the README shows it: KerasHub's inputs, the next tokens, their mask.
    x, labels, mask = next_token_batch(token_ids.astype(np.int32))
    cache = tf_distill.build_topk_cache(teacher, (x, labels, mask), tmp_path / "ok", k=K)
    assert (cache.k, cache.num_examples) == (K, 6)
    # Token ids alone: one clear error, before the teacher runs.
    with pytest.raises(ValueError, match=r"reads \{'token_ids', 'padding_mask'\}.*next_token_batch"
                       r".*Received: x of type ndarray with shape \(6, 16\)"):
        tf_distill.build_topk_cache(
            teacher, (token_ids[:, :-1], token_ids[:, 1:]), tmp_path / "refused", k=K
        )
    assert not (tmp_path / "refused").exists()


def _cut_short(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_64_bytes(path):
    data = bytearray(path.read_bytes())
    for offset in range(len(data) - 64, len(data)):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(key, value):
    def edit(path):
        manifest = path.parent.parent / "manifest.json"
        content = json.loads(manifest.read_text())
        content[key] = value
        manifest.write_text(json.dumps(content))

    return edit


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_cut_short, "does not match its checksum"),
        (_flip_64_bytes, "does not match its checksum"),
        (_edit_manifest("k", K - 1), "its manifest: its k, temperature, vocabulary"),
        (_edit_manifest("vocabulary_size", 300), "its manifest: its k, temperature, vocabulary"),
    ],
    ids=["cut_short", "flipped_bytes", "manifest_k", "manifest_vocabulary"],
)
def test_a_damaged_cache_is_refused_in_one_line_and_rebuilt(tmp_path, data, teacher, damage,
                                                            reason):
    build_topk_cache(teacher, data, tmp_path, k=K, tokenizer="bytes")
    shard = tmp_path / "shard-00000-of-00001"
    expected = {name: np.load(shard / f"{name}.npy") for name in ("log_probs", "indices", "rest")}
    damage(shard / "log_probs.npy")
    with pytest.raises(StaleCacheError, match=rf"top-k cache in {tmp_path} is damaged \(.*{reason}"):
        open_topk_cache(teacher, data, tmp_path, tokenizer="bytes")
    messages = []
    rebuilt = build_topk_cache(teacher, data, tmp_path, k=K, tokenizer="bytes",
                               log=messages.append)
    assert rebuilt.k == K and rebuilt.vocabulary_size == VOCABULARY
    assert any("damaged" in message for message in messages) or reason.startswith("its manifest")
    for name, value in expected.items():
        np.testing.assert_array_equal(np.load(shard / f"{name}.npy"), value)
    assert open_topk_cache(teacher, data, tmp_path, tokenizer="bytes").k == K


# --- At scale: uint16 ids, old caches, pipelines and text files -----------------


def _packed(cache):
    """Every example's packed target, in the data's order."""
    (x, _, _), = cache.dataset(batch_size=EXAMPLES, shuffle=False).take(1)
    return x["teacher_outputs"]["logits"].numpy()


def test_ids_are_int32_above_65536_tokens(tmp_path):
    vocabulary = (1 << 16) + 1
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input([4], dtype="int32"),
                                keras.layers.Embedding(vocabulary, 2),
                                keras.layers.Dense(vocabulary)])
    tokens = np.random.default_rng(0).integers(0, vocabulary, size=[3, 4]).astype(np.int32)
    cache = build_topk_cache(teacher, (tokens, tokens), tmp_path, k=2)
    assert cache.bytes_per_token == 2 * 6 + 4
    indices = np.load(tmp_path / "shard-00000-of-00001" / "indices.npy")
    assert indices.dtype == np.int32
    _, expected, _ = topk_targets(teacher(tokens), 2)
    np.testing.assert_array_equal(indices, expected.numpy())


def _as_format_2(directory):
    """Rewrites a cache as format 2 wrote it: int32 ids, no dtypes in the records."""
    from tf_distill.cache.store import file_sha256

    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for shard in manifest["shards"]:
        folder = directory / shard["folder"]
        path = folder / "indices.npy"
        np.save(path, np.load(path).astype(np.int32))
        info = json.loads((folder / "shard.json").read_text())
        info["version"] = 2
        info.pop("arrays")
        info["checksums"]["indices"] = file_sha256(path)
        (folder / "shard.json").write_text(json.dumps(info))
        shard["checksums"] = info["checksums"]
        shard.pop("arrays")
    manifest.update(version=2, arrays={"log_probs": "float16", "indices": "int32",
                                       "rest": "float32"})
    manifest_path.write_text(json.dumps(manifest))


def test_a_cache_of_format_2_with_int32_ids_still_opens(tmp_path, data, teacher):
    new = build_topk_cache(teacher, data, tmp_path / "new", k=K, shard=(0, 1))
    build_topk_cache(teacher, data, tmp_path / "old", k=K, shard=(0, 2))
    build_topk_cache(teacher, data, tmp_path / "old", k=K, shard=(1, 2))
    _as_format_2(tmp_path / "old")
    old = open_topk_cache(teacher, data, tmp_path / "old")
    assert old.fingerprint == new.fingerprint
    assert old.bytes_per_token == K * 6 + 4
    np.testing.assert_array_equal(_packed(old), _packed(new))
    # Building again finds its shards written, as they are, and joins them.
    messages = []
    again = build_topk_cache(teacher, data, tmp_path / "old", k=K, shard=(0, 2),
                             log=messages.append)
    assert "already written" in messages[0]
    assert np.load(tmp_path / "old" / "shard-00000-of-00002" / "indices.npy").dtype == np.int32
    np.testing.assert_array_equal(_packed(again), _packed(new))


def test_a_pipeline_gives_the_cache_of_its_arrays(tmp_path, data, teacher):
    arrays = build_topk_cache(teacher, data, tmp_path / "arrays", k=K)
    # Batched or not, in two shards: the same fingerprint and targets.
    batched = tf.data.Dataset.from_tensor_slices(data).batch(7)
    assert build_topk_cache(teacher, batched, tmp_path / "pipeline", k=K, shard=(0, 2)) is None
    single = tf.data.Dataset.from_tensor_slices(data)
    cache = build_topk_cache(teacher, single, tmp_path / "pipeline", k=K, shard=(1, 2))
    assert cache.fingerprint == arrays.fingerprint
    np.testing.assert_array_equal(_packed(cache), _packed(arrays))
    (x, y, weight), = cache.dataset(batch_size=EXAMPLES, shuffle=False).take(1)
    np.testing.assert_array_equal(x["inputs"].numpy(), data[0])
    np.testing.assert_array_equal(y.numpy(), data[1])
    np.testing.assert_array_equal(weight.numpy(), data[2])
    # Either opens the other's cache.
    assert open_topk_cache(teacher, data, tmp_path / "pipeline").fingerprint == cache.fingerprint
    assert open_topk_cache(teacher, batched, tmp_path / "arrays").fingerprint == cache.fingerprint
    # Another order is other data: the outputs would not line up.
    reordered = tf.data.Dataset.from_tensor_slices(tuple(a[::-1] for a in data))
    with pytest.raises(StaleCacheError, match="has fingerprint"):
        open_topk_cache(teacher, reordered, tmp_path / "arrays")


def test_text_files_give_the_cache_of_their_windows(tmp_path):
    from tf_distill.data import load_text
    from tf_distill.language import build_causal_lm

    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 12)
    corpus = load_text(str(text), sequence_length=LENGTH)
    teacher = build_causal_lm("gpt2", vocabulary_size=256, num_layers=1, num_heads=2,
                              hidden_dim=8, intermediate_dim=16, max_sequence_length=LENGTH)
    cache = build_topk_cache(teacher, corpus, tmp_path / "text", k=K, split="validation")
    token_ids, labels, mask = corpus.windows["validation"]
    arrays = (corpus.inputs("validation"), labels, mask)
    assert open_topk_cache(teacher, arrays, tmp_path / "text").fingerprint == cache.fingerprint
    assert cache.num_examples == len(token_ids)
    assert cache.bytes_per_token == K * 4 + 4
    with pytest.raises(ValueError, match=r"argument `split`.*Received: split='dev'"):
        build_topk_cache(teacher, corpus, tmp_path / "bad", k=K, split="dev")
