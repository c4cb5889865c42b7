"""Temporary re-export until the cache split lands (replaced at merge)."""

from tf_distill.cache import AUTO_MEMORY_LIMIT  # noqa: F401
from tf_distill.cache import CACHE_MODES  # noqa: F401
from tf_distill.cache import cached_dataset  # noqa: F401
from tf_distill.cache import should_cache  # noqa: F401
