"""tf_distill: knowledge distillation for Keras 3 on TensorFlow."""

__version__ = "0.1.0"

from tf_distill import losses
from tf_distill.losses import DistillationLoss
from tf_distill.losses import FeatureDistillation
from tf_distill.losses import LogitsDistillation
from tf_distill.distiller import Distiller
