"""An adaptive KV cache: a token budget per layer (fraction or count), an eviction policy (window, h2o, snapkv, d2o)
and KIVI-style quantization (kv_bits 8 or 4), as a `transformers.Cache` that `generate()` takes unchanged."""

from ponder.kvcache.cache import KVCache, KVLayer, make_cache
from ponder.kvcache.config import BITS, POLICIES, KVConfig, check_kv_budget, check_kv_policy, parse_kv_budget

__all__ = [
    "BITS",
    "POLICIES",
    "KVCache",
    "KVConfig",
    "KVLayer",
    "check_kv_budget",
    "check_kv_policy",
    "make_cache",
    "parse_kv_budget",
]
