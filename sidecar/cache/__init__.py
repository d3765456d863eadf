"""The stale-if-error fallback store (SPEC §4.4): keys, storage rules, and the LRU store itself.

`FallbackStore` is what the runtime builds, one per upstream (or per route that overrides
`fallback`); `Recorder` and `CachedResponse` are what it hands out. Nothing here does I/O or
reads time except through the injected `Clock`.
"""

from __future__ import annotations

from sidecar.cache.entry import CachedResponse, Recorder
from sidecar.cache.key import SECRET_HEADERS, RequestKey
from sidecar.cache.rules import Refusal, refusal
from sidecar.cache.store import FallbackStore

__all__ = [
    "SECRET_HEADERS",
    "CachedResponse",
    "FallbackStore",
    "Recorder",
    "Refusal",
    "RequestKey",
    "refusal",
]
