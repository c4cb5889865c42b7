import json
import os

import pytest

from tf_distill import io


def test_atomic_write_replaces_content(tmp_path):
    path = tmp_path / "a.txt"
    io.atomic_write(path, "one")
    io.atomic_write(path, "two")
    assert path.read_text() == "two"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    io.atomic_write_json(path, {"accuracy": 0.9})
    with pytest.raises(RuntimeError, match="crash"):
        with io.atomic_path(path) as tmp:
            with open(tmp, "w") as handle:
                handle.write("{half")
            raise RuntimeError("crash")
    assert json.loads(path.read_text()) == {"accuracy": 0.9}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_nothing_written_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="Nothing was written"):
        with io.atomic_path(tmp_path / "x.bin"):
            pass
    assert not (tmp_path / "x.bin").exists()


def test_temporary_keeps_the_suffix(tmp_path):
    with io.atomic_path(tmp_path / "student.keras") as tmp:
        assert tmp.endswith(".keras")
        assert os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "w").close()
