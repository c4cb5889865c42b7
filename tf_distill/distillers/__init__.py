"""Every distiller: one engine, and the variants that fill in its hooks.

- `engine`: `DistillerEngine`, the one training, test and predict step
  (batch unpacking, the teacher pass, loss scaling and gradients under
  Keras 3 and tf_keras, loss trackers and metrics, the compile config);
- `distiller`: `Distiller`, a student and one or several frozen teachers;
- `mutual`: `MutualDistiller`, students teaching each other (loss terms only);
- `self_ema`: `SelfDistiller`, an EMA of the student as teacher (an
  after-step hook);
- `on_policy`: `OnPolicyDistiller`, GKD for causal LMs (a prepare-batch hook);
- `stages`: chains of distillers (teacher assistants, born-again networks);
- `summary`: what `Distiller.summary()` prints.
"""

from tf_distill.distillers.distiller import Distiller
from tf_distill.distillers.engine import DistillerEngine
from tf_distill.distillers.engine import LossTerms
from tf_distill.distillers.mutual import MutualDistiller
from tf_distill.distillers.on_policy import OnPolicyDistiller
from tf_distill.distillers.self_ema import SelfDistiller
from tf_distill.distillers.stages import Stage
from tf_distill.distillers.stages import born_again
from tf_distill.distillers.stages import distill_stages

__all__ = [
    "Distiller",
    "DistillerEngine",
    "LossTerms",
    "MutualDistiller",
    "OnPolicyDistiller",
    "SelfDistiller",
    "Stage",
    "born_again",
    "distill_stages",
]
