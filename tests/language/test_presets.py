"""KerasHub presets in and out: checked folders, DistilBERT-style students,
students written as presets that `CausalLM.from_preset` loads."""

import os

import numpy as np
import pytest
import tiny_tokenizers

from tf_distill.language import presets

keras_hub = pytest.importorskip("keras_hub")


def _inputs(length=6):
    ids = np.arange(5, 5 + 2 * length).reshape(2, length) % 200
    return {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gemma"])
def test_a_preset_round_trips_with_its_tokenizer(tmp_path, architecture):
    folder = tmp_path / "preset"
    model = tiny_tokenizers.write_preset(folder, architecture)
    loaded = presets.load_causal_lm(str(folder))
    assert type(loaded) is type(model)
    assert type(loaded.preprocessor.tokenizer) is type(model.preprocessor.tokenizer)
    assert loaded.preprocessor.tokenizer.get_vocabulary() == (
        model.preprocessor.tokenizer.get_vocabulary())
    np.testing.assert_allclose(loaded(_inputs()), model(_inputs()), atol=1e-6)


def test_a_preset_folder_missing_files_is_named(tmp_path):
    folder = tmp_path / "preset"
    tiny_tokenizers.write_preset(folder, "gpt2")
    os.remove(folder / "model.weights.h5")
    os.remove(folder / "config.json")
    with pytest.raises(ValueError, match=r"`teacher.preset` .*lacks config.json, "
                       r"model.weights.h5. Received: teacher.preset="):
        presets.load_causal_lm(str(folder), argument="teacher.preset")
    with pytest.raises(ValueError, match="is not a folder"):
        presets.check_preset(str(tmp_path / "nowhere" / "preset"))
    with pytest.raises(ValueError, match="Received: preset=3"):
        presets.check_preset(3)


def test_published_presets_are_left_to_keras_hub():
    # The code path of a published preset: KerasHub downloads it (not here).
    assert presets.is_published_handle("hf://google/gemma-2b")
    assert presets.is_published_handle("kaggle://keras/gpt2/keras/gpt2_base_en")
    assert presets.is_published_handle("gpt2_base_en")
    assert not presets.is_published_handle("my_preset")
    presets.check_preset("gpt2_base_en")  # not refused as a missing folder


@pytest.mark.parametrize("architecture", ["gpt2", "gemma"])
def test_student_from_teacher_keeps_the_chosen_blocks(architecture):
    teacher = tiny_tokenizers.causal_lm(architecture, num_layers=3)
    student = presets.student_from_teacher(teacher, [0, 2], name="student")
    assert student.backbone.num_layers == 2 and student.name == "student"
    assert student.preprocessor is teacher.preprocessor
    kept = presets.transformer_blocks(teacher.backbone)
    for source, copy in zip([kept[0], kept[2]], presets.transformer_blocks(student.backbone)):
        for a, b in zip(source.get_weights(), copy.get_weights()):
            np.testing.assert_array_equal(a, b)
    # Every block kept: the student computes what the teacher computes.
    whole = presets.student_from_teacher(teacher, [0, 1, 2])
    np.testing.assert_allclose(whole(_inputs()), teacher(_inputs()), atol=1e-5)
    # Its weights are copies: training the student leaves the teacher alone.
    before = teacher.backbone.token_embedding.get_weights()[0].copy()
    student.backbone.token_embedding.embeddings.assign_add(
        np.ones_like(before))
    np.testing.assert_array_equal(teacher.backbone.token_embedding.get_weights()[0], before)


@pytest.mark.parametrize("layers,match", [
    ([], "non-empty list"), ([2, 0], "increasing"), ([0, 3], r"\[0, 3\)"),
    ([1, 1], "each once"), ("0,1", "non-empty list"),
])
def test_student_from_teacher_refuses_bad_layers(layers, match):
    teacher = tiny_tokenizers.causal_lm("gpt2", num_layers=3)
    with pytest.raises(ValueError, match=match):
        presets.student_from_teacher(teacher, layers)


def test_a_student_without_preprocessor_is_saved_with_the_teachers_tokenizer(tmp_path):
    from tf_distill.language import build_causal_lm

    tokenizer = tiny_tokenizers.gpt2_tokenizer()
    student = build_causal_lm("gpt2", tokenizer.vocabulary_size(), num_layers=1,
                              hidden_dim=16, num_heads=2, max_sequence_length=32)
    preprocessor = presets.preprocessor_for(student, tokenizer, 32)
    folder = presets.save_causal_lm_preset(student, tmp_path / "student", preprocessor)
    loaded = keras_hub.models.CausalLM.from_preset(folder)
    assert isinstance(loaded.preprocessor.tokenizer, keras_hub.models.GPT2Tokenizer)
    np.testing.assert_allclose(loaded(_inputs()), student(_inputs()), atol=1e-6)
    # A Llama tokenizer does not fit a GPT-2 preprocessor: no preprocessor.
    assert presets.preprocessor_for(student, tiny_tokenizers.llama_tokenizer(), 32) is None


def test_saving_a_preset_replaces_a_folder_only_when_complete(tmp_path, monkeypatch):
    folder = tmp_path / "student"
    model = tiny_tokenizers.write_preset(folder, "gpt2")
    before = sorted(os.listdir(folder))

    def fail(self, preset_dir, **kwargs):
        open(os.path.join(preset_dir, "config.json"), "w").close()
        raise OSError("disk full")

    monkeypatch.setattr(type(model), "save_to_preset", fail)
    with pytest.raises(OSError, match="disk full"):
        presets.save_causal_lm_preset(model, folder)
    assert sorted(os.listdir(folder)) == before
    presets.load_causal_lm(str(folder))
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []
    with pytest.raises(ValueError, match="keras_hub.models.CausalLM"):
        presets.save_causal_lm_preset(object(), folder)
