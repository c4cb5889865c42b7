"""What a teacher cache holds and the fingerprint that says it is current.

`TeacherSpec` names the teacher, the outputs to cache and how they are
computed: by `Distiller.teacher_forward`, or by the same
`tf_distill.teachers.TeacherForward` for a bare teacher model. Its digest,
combined with the data's, is the cache's fingerprint.
"""

import hashlib
import json

import numpy as np

from tf_distill import teachers as teachers_lib
from tf_distill.backend import keras
from tf_distill.backend import tf
from tf_distill.cache.sources import hash_array
from tf_distill.cache.sources import resolve_source
from tf_distill.cache.store import FORMAT_VERSION
from tf_distill.distillers.distiller import Distiller


class TeacherSpec:
    """What to compute: the teacher, its tapped outputs and output kind.

    `forward` is `Distiller.teacher_forward` for a `Distiller`, and the same
    `tf_distill.teachers.TeacherForward` it uses for a bare teacher model.
    """

    def __init__(self, teacher, distillation_losses, teacher_outputs):
        if isinstance(teacher, Distiller):
            if distillation_losses is not None:
                raise ValueError(
                    "Pass `distillation_losses` with a teacher model, not with a "
                    "Distiller (whose losses name the layers to tap)."
                )
            self.model = teacher.teacher
            self.tap_names = teachers_lib.tap_names(
                teacher.distillation_losses,
                list(teacher.teachers) if teacher.has_several_teachers else None,
            )
            self.teacher_outputs = teacher.teacher_outputs
            self.preprocessing = teacher.teacher_preprocessing
            self.forward = tf.function(teacher.teacher_forward, reduce_retracing=True)
            return
        if not isinstance(teacher, keras.Model):
            raise ValueError(
                "`teacher` must be a keras.Model or a tf_distill.Distiller. "
                f"Received: teacher of type {type(teacher).__name__}"
            )
        teachers_lib.check_teacher_outputs(teacher_outputs)
        teachers_lib.check_teacher_softmax(teacher, teacher_outputs)
        self.model = teacher
        self.preprocessing = None
        names = None
        if isinstance(teacher, teachers_lib.TeacherEnsemble):
            names = teacher.teacher_names
        self.tap_names = teachers_lib.tap_names(distillation_losses, names)
        self.teacher_outputs = teacher_outputs
        forward = teachers_lib.TeacherForward(teacher, self.tap_names, teacher_outputs)
        self.forward = tf.function(forward, reduce_retracing=True)

    def digest(self):
        digest = hashlib.sha256()
        digest.update(type(self.model).__name__.encode())
        try:
            config = json.dumps(self.model.get_config(), sort_keys=True, default=repr)
        except (NotImplementedError, TypeError, ValueError):
            config = ""
        digest.update(config.encode())
        for weight in self.model.weights:
            hash_array(digest, np.asarray(weight.numpy()))
        digest.update(json.dumps([self.tap_names, self.teacher_outputs]).encode())
        if self.preprocessing is not None:
            # The teacher's outputs depend on its preprocessing too.
            config = keras.saving.serialize_keras_object(self.preprocessing)
            digest.update(json.dumps(config, sort_keys=True, default=repr).encode())
            for weight in getattr(self.preprocessing, "weights", []):
                hash_array(digest, np.asarray(weight.numpy()))
        return digest.hexdigest()


def cache_fingerprint(
    teacher,
    data,
    split="train",
    distillation_losses=None,
    teacher_outputs="logits",
    deterministic=False,
):
    """The fingerprint a cache of `teacher` on `data` would carry.

    It hashes the teacher's class, config and weights, the tapped layers,
    the output kind and every byte of the data (inputs, labels, weights), so
    any change to them gives a new fingerprint.

    Returns:
        A hex string.
    """
    spec = TeacherSpec(teacher, distillation_losses, teacher_outputs)
    source = resolve_source(
        data, split, None, lambda *a, **k: None, spec.model, deterministic=deterministic
    )
    return combine(spec.digest(), source.digest())


def combine(teacher_digest, data_digest):
    """The cache's fingerprint from the teacher's and the data's digests."""
    return hashlib.sha256(f"{FORMAT_VERSION}:{teacher_digest}:{data_digest}".encode()).hexdigest()
