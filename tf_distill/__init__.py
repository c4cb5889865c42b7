"""tf_distill: knowledge distillation for Keras 3 on TensorFlow.

`Distiller` trains a student from a frozen teacher; `losses` holds the
distillation losses (soft labels, features, relations) behind one registry;
`data` and `architectures` give data sets and reference models;
`export_litert` ships the student to LiteRT, verified.

Every public name loads on first use (PEP 562): `import tf_distill` imports
no TensorFlow, so that `tf-distill --help` answers at once.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it (a submodule stands for itself).
_PUBLIC = {
    "Distiller": "tf_distill.distiller",
    "DistillationLoss": "tf_distill.losses",
    "FeatureDistillation": "tf_distill.losses",
    "LogitsDistillation": "tf_distill.losses",
    "MutualDistiller": "tf_distill.mutual",
    "SelfDistiller": "tf_distill.self_distillation",
    "Stage": "tf_distill.stages",
    "TokenDistillation": "tf_distill.losses",
    "TopKDistillation": "tf_distill.losses",
    "architectures": None,
    "born_again": "tf_distill.stages",
    "build_teacher_cache": "tf_distill.cache",
    "build_topk_cache": "tf_distill.cache",
    "cache_teacher_outputs": "tf_distill.cache",
    "data": None,
    "distill_stages": "tf_distill.stages",
    "export_litert": "tf_distill.export",
    "language": None,
    "losses": None,
    "schedules": None,
    "with_example_indices": "tf_distill.batches",
    "stages": None,
}

__all__ = list(_PUBLIC)

# Submodules loaded on first use too, without being part of `__all__`:
# `tuning` imports keras_tuner (and tensorboard).
_LAZY_SUBMODULES = ("tuning",)


def __getattr__(name):
    if name in _PUBLIC or name in _LAZY_SUBMODULES:
        module = _PUBLIC.get(name)
        if module is None:
            return importlib.import_module(f"tf_distill.{name}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tf_distill' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC) | set(_LAZY_SUBMODULES))
