"""tf_distill: knowledge distillation for Keras 3 on TensorFlow.

`Distiller` trains a student from a frozen teacher; `losses` holds the
distillation losses (soft labels, features, relations) behind one registry;
`data` and `architectures` give data sets and reference models;
`export_litert` ships the student to LiteRT, verified.
"""

__version__ = "0.1.0"

from tf_distill import architectures
from tf_distill import data
from tf_distill import losses
from tf_distill.cache import build_teacher_cache
from tf_distill.cache import cache_teacher_outputs
from tf_distill.distiller import Distiller
from tf_distill.export import export_litert
from tf_distill.losses import DistillationLoss
from tf_distill.losses import FeatureDistillation
from tf_distill.losses import LogitsDistillation

__all__ = [
    "Distiller",
    "DistillationLoss",
    "FeatureDistillation",
    "LogitsDistillation",
    "architectures",
    "build_teacher_cache",
    "cache_teacher_outputs",
    "data",
    "export_litert",
    "losses",
]


def __getattr__(name):
    # `tuning` imports keras_tuner (and tensorboard): loaded on first use only.
    if name == "tuning":
        import importlib

        return importlib.import_module("tf_distill.tuning")
    raise AttributeError(f"module 'tf_distill' has no attribute {name!r}")
