"""`tf-distill run` with an `export:` section exports the trained student."""

import pytest

from tf_distill.commands import config as config_lib
from tf_distill.commands import run as job

pytestmark = pytest.mark.slow  # runs end to end


def test_a_single_seed_run_exports_its_distilled_student_not_an_untrained_one(tmp_path):
    config = config_lib.validate({
        "data": {"source": "digits", "batch_size": 64, "train_size": 300,
                 "validation_size": 100, "test_size": 200},
        "teacher": {"architecture": "mlp", "size": "small", "epochs": 2},
        "student": {"architecture": "mlp", "size": "small"},
        "training": {"epochs": 4, "learning_rate": 0.01, "baseline": False,
                     "cache": "off", "jit_compile": False},
        "export": {"quantization": "float32", "latency_runs": 1, "representative_size": 20,
                   "max_accuracy_drop": 100},
        "output": str(tmp_path),
    })
    results = job.run(config, verbose=0, log=lambda *a: None)
    (distilled,) = [row for row in results["models"] if row["model"] == "distilled student"]
    # Trained, the student is far above chance (10 classes); the export
    # measures the Keras model it converted on the same test split.
    assert distilled["test_accuracy"] > 0.25
    assert results["export"]["keras_accuracy"] == pytest.approx(distilled["test_accuracy"])
