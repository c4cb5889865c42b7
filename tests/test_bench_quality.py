"""The wording helpers of bench/bench_quality.py, on fixed numbers (mean ± std,
the paired differences and the verdict are tested in test_comparison.py)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))

import quality_stats as stats  # noqa: E402

from tf_distill import comparison  # noqa: E402


def test_gap_closed_reproduces_hinton():
    assert stats.gap_closed(146, 67, 74) == pytest.approx(72 / 79)
    assert stats.gap_closed(100, 100, 90) is None  # no gap: no share
    assert stats.gap_closed(100, 50, 120) == pytest.approx(-0.4)  # worse than alone


def test_goal_text_says_met_or_by_how_much_missed():
    assert stats.goal_text(0.91, 0.8) == "**met** (91 % ≥ 80 %)"
    assert stats.goal_text(0.68, 0.8) == "**missed** by 12 points (68 % < 80 %)"
    assert "not measurable" in stats.goal_text(None, 0.8)


def test_verdict_sentence_carries_the_numbers():
    sentence = stats.verdict_sentence(comparison.paired([12, 13, 11], [8, 9, 7]))
    assert sentence.startswith("distilled vs alone: fewer errors on 3 of 3 seeds, more on 0")
    assert "+4.0 ± 0.0 errors" in sentence
    assert sentence.endswith("**better beyond the noise**")
    sentence = stats.verdict_sentence(comparison.paired([12, 13, 11], [13, 12, 11]))
    assert sentence.endswith("**no reliable difference**")


def test_at_least_as_good_as_the_best_baseline_per_seed_and_on_the_mean():
    tuned, alone, default_kd = [30, 41, 35], [40, 40, 50], [31, 45, 36]
    per_seed, on_mean = stats.at_least_as_good(tuned, alone, default_kd)
    # Seed 1: 41 > 40 (alone); ties count as at least as good.
    assert per_seed == [True, False, True]
    assert on_mean  # 35.3 <= min(43.3, 37.3)
    assert stats.at_least_as_good([31, 41], [31, 40], [31, 40]) == ([True, False], False)
    with pytest.raises(ValueError, match="one value per seed"):
        stats.at_least_as_good([1, 2], [1])
    with pytest.raises(ValueError, match="at least one list"):
        stats.at_least_as_good([1, 2])


# --- The method table's runs: fingerprinted, cached, seeded per run ------------


def _description(**changes):
    import quality_methods

    shared = {"data": "arrays:sha256:d", "teacher": "t", "code": "c",
              "tensorflow": "2", "keras": "3"}
    arguments = {"key": "crd", "factor": 1.0, "seed": 0, "settings": {"epochs": 15},
                 "shared": shared, **changes}
    return quality_methods.run_description(
        arguments["key"], arguments["factor"], arguments["seed"], arguments["settings"],
        arguments["shared"],
    )


def test_a_cached_run_is_read_back_and_a_changed_fingerprint_trains_again(tmp_path):
    import quality_methods

    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return {"test": value, "validation": 1, "seconds": 2.0}

        return run

    first = quality_methods.cached_run(str(tmp_path), _description(), compute(7))
    again = quality_methods.cached_run(str(tmp_path), _description(), compute(8))
    assert (first["test"], first["cached"], again["test"], again["cached"]) == (7, False, 7, True)
    assert calls == [7]
    for changed in ({"factor": 0.1}, {"seed": 1}, {"settings": {"epochs": 16}},
                    {"shared": {"data": "other"}}):
        run = quality_methods.cached_run(str(tmp_path), _description(**changed), compute(9))
        assert not run["cached"]
    with pytest.raises(quality_methods.NotCached):
        quality_methods.cached_run(str(tmp_path), _description(seed=5), None)


def test_a_runs_description_holds_its_method_and_revision():
    import quality_methods

    crd = _description()
    assert crd["method"]["key"] == "crd" and crd["revision"] == quality_methods.revision("crd")
    assert quality_methods.revision("crd") == 2 and quality_methods.revision("kd") == 1
    alone = _description(key=None)
    assert alone["method"] is None and alone["revision"] is None


def test_each_run_has_its_own_seed_whatever_ran_before():
    import quality_methods

    seeds = {quality_methods.run_seed(_description(key=key, factor=factor, seed=seed))
             for key in ("crd", "dkd", None) for factor in (0.1, 1.0) for seed in (0, 1)}
    assert len(seeds) == 12
    assert quality_methods.run_seed(_description()) == quality_methods.run_seed(_description())


def test_the_changes_since_measured_name_the_rows_of_issue_23():
    import quality_methods

    assert sorted(quality_methods.CHANGES) == ["crd", "ctkd", "kd_standardized"]
    assert quality_methods.changes_since("crd", 1) and not quality_methods.changes_since("crd", 2)
    assert not quality_methods.changes_since("kd", 1)


def test_the_summary_marks_a_row_measured_before_its_method_changed():
    import quality_report

    runs = {"1.0": {"test": {0: 10, 1: 12}, "validation": {0: 5, 1: 6}}}
    part = {"alone": {"test": [11, 13]}, "seeds": [0, 1], "methods": {
        "crd": {"runs": runs, "chosen_factor": 1.0},  # measured at revision 1
        "kd_standardized": {"runs": runs, "chosen_factor": 1.0, "revision": 2},
        "kd": {"runs": runs, "chosen_factor": 1.0},
    }}
    summary = quality_report.method_summary(part)
    assert "other classes" in summary["crd"]["changed_since_measured"][0]
    assert summary["kd_standardized"]["changed_since_measured"] == []
    assert summary["kd"]["changed_since_measured"] == []


# --- Hinton parts 1-3: paired orders, T on validation, cached student runs ------


def _tiny_mnist():
    import numpy as np

    from tf_distill.data import DataSplits

    rng = np.random.default_rng(0)

    def images(count):
        return rng.random((count, 28, 28, 1), dtype=np.float32)

    def labels(count):
        return rng.integers(0, 10, count).astype("int32")

    return DataSplits(
        name="tiny", x_train=images(64), y_train=labels(64), x_val=images(16),
        y_val=labels(16), x_test=images(16), y_test=labels(16), input_shape=(28, 28, 1),
        num_classes=10,
    )


def test_the_student_alone_sees_the_batches_of_its_distilled_twin():
    import numpy as np
    import quality_mnist

    import tf_distill
    from tf_distill.backend import keras

    data = _tiny_mnist()
    teacher = quality_mnist.build_student(data, 5)
    cache = tf_distill.build_teacher_cache(teacher, (data.x_train, data.y_train))
    keras.utils.set_random_seed(3)
    twin = [y.numpy() for _, y in cache.dataset(batch_size=16, shuffle=True, seed=3).repeat(2)]
    keras.utils.set_random_seed(3)
    alone = [y.numpy() for _, y in quality_mnist.ordered_batches(
        data.x_train, data.y_train, 16, seed=3).repeat(2)]
    assert len(alone) == len(twin) == 8
    for ours, theirs in zip(alone, twin):
        np.testing.assert_array_equal(ours, theirs)


def test_the_temperature_is_chosen_on_validation_errors_only():
    import quality_mnist

    by_temperature = {
        3.0: {"validation": [10, 12], "test": [50, 50]},
        20.0: {"validation": [11, 9], "test": [90, 90]},
    }
    assert quality_mnist.choose_temperature(by_temperature) == 20.0  # 20 < 22
    by_temperature[3.0]["validation"] = [10, 10]
    assert quality_mnist.choose_temperature(by_temperature) == 3.0  # a tie: the first


def _tiny_runs(data, tmp_path):
    """`(Runs, settings)` over `data`, a tiny teacher saved under `tmp_path`."""
    import quality_mnist

    settings = {"student_batch_size": 32, "learning_rate": 1e-3, "alpha": 0.1}
    teacher = quality_mnist.build_student(data, 7)
    path = str(tmp_path / "teacher.keras")
    teacher.save(path)
    return quality_mnist.Runs(str(tmp_path), data, settings, teacher, path), settings


def test_a_student_run_is_read_back_and_alone_does_not_depend_on_the_teacher(tmp_path):
    import quality_mnist

    data = _tiny_mnist()
    runs, settings = _tiny_runs(data, tmp_path)
    first = runs.run("tiny", "alone", 0, 1)
    distilled = runs.run("tiny", "distilled", 0, 1, temperature=4.0)
    assert (first["cached"], distilled["cached"]) == (False, False)
    # Another process, no teacher at all: the student alone is read back.
    again = quality_mnist.Runs(str(tmp_path), data, settings).run("tiny", "alone", 0, 1)
    assert again["cached"] and again["test"] == first["test"]
    # Another temperature or seed is another run.
    assert not runs.run("tiny", "distilled", 0, 1, temperature=8.0)["cached"]
    assert runs.run("tiny", "distilled", 0, 1, temperature=4.0)["cached"]
    assert len(list((tmp_path / "hinton_runs").iterdir())) == 3


def test_jittered_students_see_the_same_shifted_batches_and_cache_apart(tmp_path):
    import numpy as np
    import quality_mnist

    data = _tiny_mnist()
    first = [x.numpy() for x, _ in quality_mnist.jittered_batches(
        data.x_train, data.y_train, 16, seed=3).repeat(2)]
    again = [x.numpy() for x, _ in quality_mnist.jittered_batches(
        data.x_train, data.y_train, 16, seed=3).repeat(2)]
    assert len(first) == 8
    for ours, theirs in zip(first, again):
        np.testing.assert_array_equal(ours, theirs)
    # A fresh shift each epoch, and the images really shifted.
    assert not np.array_equal(np.sort(first[0], axis=None), np.sort(first[4], axis=None))
    assert not np.array_equal(first[0], data.x_train[:16])

    runs, _ = _tiny_runs(data, tmp_path)
    alone = runs.run("tiny", "alone_jittered", 0, 1)
    distilled = runs.run("tiny", "distilled_jittered", 0, 1, temperature=4.0)
    assert (alone["cached"], distilled["cached"]) == (False, False)
    assert runs.run("tiny", "alone_jittered", 0, 1)["cached"]
    # Not the unjittered runs' cache entries.
    assert not runs.run("tiny", "alone", 0, 1)["cached"]
    assert not runs.run("tiny", "distilled", 0, 1, temperature=4.0)["cached"]


def _hinton_part():
    def entry(validation, test, seconds):
        return {"validation": validation, "test": test, "seconds": [seconds] * 3,
                "cached": [True] * 3}

    return {
        "teacher": {"path": "t.keras", "seconds": None, "trained_seconds": 600.0},
        "teacher_errors": 70, "teacher_validation_errors": 40, "train_size": 55000,
        "validation_size": 5000, "test_size": 10000,
        "errors": {"alone": [150, 146, 148], "distilled": [80, 78, 76],
                   "alone_jittered": [120, 118, 116], "distilled_unjittered": [110, 112, 114]},
        "alone_validation": [90, 91, 92],
        "alone_seconds": [240.0, 250.0, 260.0],
        "alone_cached": [True, True, False],
        "others": {
            "alone_jittered": entry([70, 71, 72], [120, 118, 116], 240.0),
            "distilled_unjittered": entry([65, 66, 67], [110, 112, 114], 240.0),
        },
        "temperatures": {
            "3.0": entry([50, 51, 52], [80, 78, 76], 270.0),
            "20.0": entry([60, 61, 62], [85, 84, 83], 300.0),
        },
        "chosen_temperature": 3.0,
    }


def test_the_hinton_section_names_the_chosen_temperature_every_one_tried_and_the_control():
    import quality_report

    settings = {
        "teacher_input_dropout": 0.2, "teacher_dropout": 0.5, "teacher_max_norm": 3.5,
        "jitter": 2, "teacher_epochs": 60, "teacher_momentum": 0.9,
        "teacher_learning_rate": 0.1, "batch_size": 256, "student_epochs": 30,
        "learning_rate": 1e-3, "student_batch_size": 256, "alpha": 0.1,
        "temperatures": [3.0, 20.0],
    }
    text = quality_report.hinton_section({
        "hinton": _hinton_part(), "settings": {"hinton": settings}, "conditions_text": "c",
        "cache_dir": "/tmp/x", "command": "python bench/bench_quality.py",
    })
    assert ("student distilled on jittered images, teacher on the same, T = 3 (chosen on "
            "validation) | — | 80 / 78 / 76") in text
    assert "student distilled on the images as they are, T = 3 | 74 (T = 20) | 110 / 112 / 114" \
        in text
    assert "student alone on jittered images (control) | — | 120 / 118 / 116" in text
    assert ("| distilled on jittered images, T = 20 | 61.0 ± 1.0 (60 / 61 / 62) | "
            "84.0 ± 1.0 (85 / 84 / 83) |") in text
    assert "Teacher goal ≤ 75 test\nerrors: **met**" in text
    assert "60 epochs of Nesterov momentum SGD (0.9) at 0.1 cosine-decayed" in text
    assert "**met** (90 %" in text  # (148 - 78) / (148 - 70) = 90 %
    # The control closes (148 - 118) / 78 = 38 %; distillation (118 - 78) / 48 = 83 % of
    # the rest; the literal protocol (148 - 112) / 78 = 46 %.
    assert "the jitter alone (the control, no\nteacher) closes 38 %" in text
    assert "images closes 83 % of what is left" in text
    assert "(cached), closes 46 %" in text
    assert "distilled on jittered images vs alone on jittered images: fewer errors on 3 of 3" \
        in text
    assert "the teacher trained in 10.0 min (read from the cache this run)" in text
    assert "the 15 students took 65.0 min in all (4.0–5.0 min each)" in text
    assert "read 14 of them from the cache" in text
    assert "The control meets the goal" not in text
    settings.update({"teacher_optimizer": "adam", "teacher_learning_rate": 0.001})
    text = quality_report.hinton_section({
        "hinton": _hinton_part(), "settings": {"hinton": settings}, "conditions_text": "c",
        "cache_dir": "/tmp/x", "command": "python bench/bench_quality.py",
    })
    assert "epochs of Adam 0.001 cosine-decayed" in text


def test_the_hinton_section_says_when_the_control_alone_meets_the_goal():
    import quality_report

    part = _hinton_part()
    # Jitter without a teacher: (148 - 82) / (148 - 70) = 85 % of the gap.
    part["errors"]["alone_jittered"] = [82, 82, 82]
    # And distillation on top does worse than the control: (82 - 85) / (82 - 70).
    part["errors"]["distilled"] = [85, 85, 85]
    settings = {
        "teacher_input_dropout": 0.2, "teacher_dropout": 0.5, "teacher_max_norm": 3.5,
        "jitter": 2, "teacher_epochs": 100, "teacher_optimizer": "adam",
        "teacher_learning_rate": 0.001, "batch_size": 256, "student_epochs": 30,
        "learning_rate": 1e-3, "student_batch_size": 256, "alpha": 0.1,
        "temperatures": [3.0, 20.0],
    }
    text = quality_report.hinton_section({
        "hinton": part, "settings": {"hinton": settings}, "conditions_text": "c",
        "cache_dir": "/tmp/x", "command": "python bench/bench_quality.py",
    })
    assert "**The control meets the goal without any teacher** (85 % ≥\n80 %)" in text
    assert "closes none of what is left (-25 %: 3.0 more errors than the control" in text
