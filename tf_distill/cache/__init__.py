"""Teacher-output caching: run the teacher once, distill for many epochs.

A frozen teacher in inference mode gives the same outputs for the same
example every epoch, so computing them once and reading them back saves one
teacher forward pass per step. `cache_teacher_outputs` returns a `tf.data`
pipeline yielding

    ({"inputs": x, "teacher_outputs": {"logits": ..., "<layer>": ...}}, y)

which `Distiller.fit` consumes without running the teacher (see
`tf_distill.batches`). Every batch gathers inputs, labels and teacher
outputs with the same example indices, so they stay aligned however the
examples are shuffled.

A cache lives in memory or on disk. On disk it is a folder of `.npy` files,
each written atomically and read memory-mapped (never pickled), plus a
`manifest.json` mapping each output's key to its file (file names carry a
hash of the key, so no two keys share one) and holding a fingerprint of the
teacher (architecture and weights), the data and the tapped layers. A cache
whose fingerprint does not match the teacher and data at hand is stale: it
is rebuilt, never used. Disk caches are streamed batch by batch, so a data
set whose teacher outputs do not fit in memory can still be cached.

A pipeline with random augmentation cannot be cached faithfully: the teacher
must see the same view of an example as the student (Beyer et al. 2022,
"Knowledge distillation: A good teacher is patient and consistent"). Such
pipelines are refused; distill them online. So are pipelines that call
Python (`tf.py_function`, `tf.numpy_function`), unless the caller declares
them deterministic (`deterministic=True`).

The package: `sources` (arrays, DataSplits and pipelines, and
`check_cacheable`), `store` (the files on disk and their manifest),
`fingerprint` (what is cached and its fingerprint), `teacher_cache`
(`TeacherCache`, `build_teacher_cache`, `cache_teacher_outputs`) and `topk`
(a sparse cache of the teacher's top-k log-probabilities for large
vocabularies, built in shards: `build_topk_cache`, `open_topk_cache`).
"""

from tf_distill.cache.fingerprint import TeacherSpec
from tf_distill.cache.fingerprint import cache_fingerprint
from tf_distill.cache.sources import check_cacheable
from tf_distill.cache.store import FORMAT
from tf_distill.cache.store import FORMAT_VERSION
from tf_distill.cache.store import MANIFEST
from tf_distill.cache.store import StaleCacheError
from tf_distill.cache.store import file_stem
from tf_distill.cache.teacher_cache import TeacherCache
from tf_distill.cache.teacher_cache import build_teacher_cache
from tf_distill.cache.teacher_cache import cache_teacher_outputs
from tf_distill.cache.topk import TopKCache
from tf_distill.cache.topk import build_topk_cache
from tf_distill.cache.topk import open_topk_cache
from tf_distill.teachers import tap_names

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "StaleCacheError",
    "TeacherCache",
    "TeacherSpec",
    "TopKCache",
    "build_teacher_cache",
    "build_topk_cache",
    "cache_fingerprint",
    "cache_teacher_outputs",
    "check_cacheable",
    "file_stem",
    "open_topk_cache",
    "tap_names",
]
