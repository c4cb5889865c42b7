"""tf_distill: knowledge distillation for Keras 3 on TensorFlow.

`Distiller` trains a student from a frozen teacher (`MutualDistiller`,
`SelfDistiller` and `OnPolicyDistiller` are variants of the one engine in
`distillers`); `losses` holds the distillation losses (soft labels,
features, relations) behind one registry; `teachers` the teacher side;
`data` and `architectures` give data sets and reference models; `cache`
caches teacher outputs; `tuning` searches with Keras Tuner; `export_litert`
ships the student to LiteRT, verified; `comparison` judges a student against
its baseline over paired seeds.

Every public name loads on first use (PEP 562): `import tf_distill` imports
no TensorFlow, so that `tf-distill --help` answers at once.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_PUBLIC = {
    "Distiller": "tf_distill.distillers.distiller",
    "DistillerEngine": "tf_distill.distillers.engine",
    "MutualDistiller": "tf_distill.distillers.mutual",
    "OnPolicyDistiller": "tf_distill.distillers.on_policy",
    "SelfDistiller": "tf_distill.distillers.self_ema",
    "Stage": "tf_distill.distillers.stages",
    "born_again": "tf_distill.distillers.stages",
    "distill_stages": "tf_distill.distillers.stages",
    "DistillationLoss": "tf_distill.losses",
    "FeatureDistillation": "tf_distill.losses",
    "LogitsDistillation": "tf_distill.losses",
    "TokenDistillation": "tf_distill.losses",
    "TopKDistillation": "tf_distill.losses",
    "build_teacher_cache": "tf_distill.cache",
    "build_topk_cache": "tf_distill.cache",
    "cache_teacher_outputs": "tf_distill.cache",
    "export_litert": "tf_distill.export",
    "with_example_indices": "tf_distill.batches",
}

# Every public subpackage and module is an attribute too, imported on first
# use (`tf_distill.export.export_causal_lm`, `tf_distill.saving.load_model`).
_SUBMODULES = {
    "architectures": "tf_distill.architectures",
    "batches": "tf_distill.batches",
    "cache": "tf_distill.cache",
    "callbacks": "tf_distill.callbacks",
    "comparison": "tf_distill.comparison",
    "compression": "tf_distill.compression",
    "data": "tf_distill.data",
    "distillers": "tf_distill.distillers",
    "distribute": "tf_distill.distribute",
    "export": "tf_distill.export",
    "language": "tf_distill.language",
    "losses": "tf_distill.losses",
    "optimizers": "tf_distill.optimizers",
    "saving": "tf_distill.saving",
    "schedules": "tf_distill.schedules",
    "stages": "tf_distill.distillers.stages",
    "taps": "tf_distill.taps",
    "teachers": "tf_distill.teachers",
    # Imports keras_tuner (and tensorboard).
    "tuning": "tf_distill.tuning",
}

__all__ = [*_PUBLIC, *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    elif name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    else:
        raise AttributeError(f"module 'tf_distill' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
