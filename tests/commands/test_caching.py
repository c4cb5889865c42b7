"""Tests of the jobs' caching policy (tf_distill.commands.caching)."""

import numpy as np
import pytest

from tf_distill import architectures
from tf_distill import data as data_lib
from tf_distill.backend import keras
from tf_distill.commands import caching
from tf_distill.distillers.distiller import Distiller

INPUT_SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def splits():
    return data_lib.load("digits")


def _distiller():
    keras.utils.set_random_seed(3)
    teacher = architectures.build("mlp", INPUT_SHAPE, 10, size="medium", seed=0, name="teacher")
    student = architectures.build("mlp", INPUT_SHAPE, 10, size="small", seed=1, name="student")
    distiller = Distiller(teacher, student, "kd", student_loss_weight=0.3)
    distiller.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy", ["accuracy"])
    return distiller


def test_should_cache_modes(monkeypatch):
    mode, reason = caching.should_cache({"training": {"cache": "auto"}})
    assert mode == "memory" and reason.startswith("Caching the teacher's outputs (memory)")
    assert caching.should_cache({"training": {}})[0] == "memory"
    assert caching.should_cache({"training": {"cache": "disk"}})[0] == "disk"
    mode, reason = caching.should_cache({"training": {"cache": "off"}})
    assert mode == "off" and "online" in reason
    mode, reason = caching.should_cache({"training": {}, "data": {"augmentation": {"flip": True}}})
    assert mode == "off" and "augments at random" in reason
    with pytest.raises(ValueError, match="cannot be used with `data.augmentation`"):
        caching.should_cache({"training": {"cache": "memory"}, "data": {"augmentation": True}})
    with pytest.raises(ValueError, match="Invalid value for `cache`"):
        caching.should_cache({"training": {"cache": "ram"}})
    # `auto` keeps small caches in memory and puts large ones on disk.
    digits = data_lib.load("digits")
    assert caching.should_cache({"training": {"cache": "auto"}}, digits)[0] == "memory"
    monkeypatch.setattr(caching, "AUTO_MEMORY_LIMIT", 1000)
    assert caching.should_cache({"training": {"cache": "auto"}}, digits)[0] == "disk"


def test_cached_dataset_for_a_job(tmp_path, splits):
    distiller = _distiller()
    plain = caching.cached_dataset(distiller, splits, "validation", 64, mode="off")
    x, _ = next(iter(plain))
    assert not isinstance(x, dict)
    on_disk = caching.cached_dataset(
        distiller, splits, "validation", 64, mode="disk", directory=tmp_path
    )
    x, y = next(iter(on_disk))
    np.testing.assert_array_equal(y, splits.y_val[:64])  # validation is not shuffled
    assert (tmp_path / "validation" / "manifest.json").is_file()
    with pytest.raises(ValueError, match="A disk cache needs a `directory`"):
        caching.cached_dataset(distiller, splits, "train", 64, mode="disk")


def test_a_job_shows_the_cache_being_built_as_its_verbose_asks(splits, capsys):
    distiller = _distiller()
    caching.cached_dataset(distiller, splits, "validation", 64, mode="memory", verbose=2)
    count = len(splits.y_val)
    assert f"{count}/{count}" in capsys.readouterr().out  # the one line of verbose=2
    caching.cached_dataset(distiller, splits, "validation", 64, mode="memory", verbose=0)
    assert capsys.readouterr().out == ""
