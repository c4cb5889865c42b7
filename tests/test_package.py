"""The public face: what `import tf_distill` gives a Keras user."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUBPACKAGES = (
    "architectures", "batches", "cache", "callbacks", "comparison", "compression", "data",
    "distillers", "distribute", "export", "language", "losses", "optimizers",
    "saving", "schedules", "stages", "taps", "teachers", "tuning",
)


def _run(code):
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT}, check=False, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_importing_the_package_imports_no_tensorflow():
    heavy = _run(
        "import json, sys, tf_distill\n"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules)))"
    )
    assert heavy == []


@pytest.mark.slow
def test_every_public_subpackage_is_an_attribute_after_import():
    expressions = [
        "tf_distill.export.export_causal_lm",
        "tf_distill.export.export_litert",
        "tf_distill.cache.open_topk_cache",
        "tf_distill.saving.load_model",
        "tf_distill.teachers.TeacherForward",
        "tf_distill.distillers.DistillerEngine",
        "tf_distill.stages.distill_stages",
    ]
    # In a fresh process, where nothing imported the subpackages before.
    found = _run(
        "import json, tf_distill\n"
        f"print(json.dumps([callable(eval(e)) for e in {expressions!r}]))"
    )
    assert found == [True] * len(expressions)


def test_every_distiller_is_top_level_and_one_engine_runs_them_all():
    import tf_distill

    for name in SUBPACKAGES:
        assert name in tf_distill.__all__ and name in dir(tf_distill)
    engine = tf_distill.DistillerEngine
    for name in ("Distiller", "MutualDistiller", "SelfDistiller", "OnPolicyDistiller"):
        distiller = getattr(tf_distill, name)
        assert issubclass(distiller, engine), name
        # The step exists once: no distiller writes its own.
        for step in ("train_step", "test_step", "predict_step"):
            assert getattr(distiller, step) is getattr(engine, step), (name, step)
