import json
import os

import pytest

from tf_distill import files


def test_atomic_write_replaces_content(tmp_path):
    path = tmp_path / "a.txt"
    files.atomic_write(path, "one")
    files.atomic_write(path, "two")
    assert path.read_text() == "two"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    files.atomic_write_json(path, {"accuracy": 0.9})
    with pytest.raises(RuntimeError, match="crash"):
        with files.atomic_path(path) as tmp:
            with open(tmp, "w") as handle:
                handle.write("{half")
            raise RuntimeError("crash")
    assert json.loads(path.read_text()) == {"accuracy": 0.9}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_nothing_written_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="Nothing was written"):
        with files.atomic_path(tmp_path / "x.bin"):
            pass
    assert not (tmp_path / "x.bin").exists()


def test_temporary_keeps_the_suffix(tmp_path):
    with files.atomic_path(tmp_path / "student.keras") as tmp:
        assert tmp.endswith(".keras")
        assert os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "w").close()


def test_file_is_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "student.keras"
    with files.atomic_path(target) as tmp:
        with open(tmp, "w") as handle:
            handle.write("weights")
    kinds = [kind for kind, _ in events]
    rename = kinds.index("replace")
    flushed_before = [path for kind, path in events[:rename] if kind == "fsync"]
    flushed_after = [path for kind, path in events[rename + 1 :] if kind == "fsync"]
    assert any(os.path.basename(path).startswith(".student.keras.") for path in flushed_before)
    assert str(tmp_path) in flushed_after
