"""A `transformers.Cache` under a KV budget: `DynamicLayer`s that remember each entry's position, score and
merged mass, evicted (and merged, and quantized) after each forward's attention.

Positions: RoPE is applied before caching, so a kept key needs no re-rotation; the cache reports the tokens it has
seen as its sequence length (new tokens get their true positions) and the physical length to the mask, with the
difference as the mask's key offset, so new tokens stay causal among themselves and see every kept entry.
Legend: B = batch, H = KV heads, L = cached entries, K = kept, Q = new tokens, D = head dim.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

from ponder.errors import PonderError
from ponder.kvcache.attention import PENDING, install
from ponder.kvcache.config import KVConfig
from ponder.kvcache.d2o import attention_density, layer_shares, merge_evicted
from ponder.kvcache.h2o import received_attention
from ponder.kvcache.quant import SCALE_BYTES, quantize_group
from ponder.kvcache.snapkv import observation_scores
from ponder.kvcache.window import protect, window_priority


class KVLayer(DynamicLayer):
    """One layer's entries: keys, values [B, H, L, D], and per entry its position, score and mass [B, H, L]."""

    is_croppable = False

    def __init__(self, config: KVConfig) -> None:
        super().__init__()
        self.config = config
        self.seen = 0
        self.quantized_upto = 0
        """Entries at positions below this hold quantized values."""
        self.density: float | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        batch, heads = key_states.shape[:2]
        self.positions = torch.empty(batch, heads, 0, dtype=torch.long, device=self.device)
        self.scores = torch.empty(batch, heads, 0, device=self.device)
        self.mass = torch.empty(batch, heads, 0, device=self.device)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        keys, values = super().update(key_states, value_states)
        batch, heads, new = key_states.shape[:3]
        positions = torch.arange(self.seen, self.seen + new, device=self.device).expand(batch, heads, new)
        self.positions = torch.cat([self.positions, positions], dim=-1)
        self.scores = torch.cat([self.scores, torch.zeros(batch, heads, new, device=self.device)], dim=-1)
        self.mass = torch.cat([self.mass, torch.ones(batch, heads, new, device=self.device)], dim=-1)
        self.seen += new
        return keys, values

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        stored = super().get_seq_length()
        return stored + query_length, self.seen - stored

    def reset(self) -> None:
        super().reset()
        self.seen, self.quantized_upto, self.density = 0, 0, None

    def observe(self, probs: torch.Tensor | None) -> None:
        """Scores from this forward's attention probabilities [B, Hq, Q, L] (None for the window policy)."""
        if probs is None:
            return
        config, kv_heads, prefill = self.config, self.keys.shape[1], probs.shape[2] > 1
        if config.policy == "snapkv" and prefill:
            self.scores = self.scores + observation_scores(probs, kv_heads, window=config.window, pool=config.pool)
        else:
            self.scores = self.scores + received_attention(probs, kv_heads)
        if config.policy == "d2o" and self.density is None:
            self.density = attention_density(probs, window=config.window)

    def compress(self, limit: int) -> None:
        """Keep at most `limit` entries per head: the policy's priority picks them, D2O merges the rest in."""
        stored = self.keys.shape[-2]
        if stored <= limit:
            return
        config = self.config
        if config.policy == "window":
            priority = window_priority(self.positions, sinks=config.sinks, seen=self.seen)
        else:
            recent = config.window if config.policy == "snapkv" else int(config.recent * limit)
            priority = protect(self.scores, self.positions, sinks=config.sinks, recent=recent, seen=self.seen)
        order = priority.argsort(dim=-1, descending=True)  # [B, H, L]
        keep = order[..., :limit].sort(dim=-1).values  # [B, H, K], in position order
        scores, positions = self.scores.gather(2, keep), self.positions.gather(2, keep)
        if config.policy == "d2o":
            self.keys, self.values, self.mass = merge_evicted(
                self.keys, self.values, self.mass, keep, order[..., limit:], threshold=config.merge_threshold
            )
        else:
            index = keep[..., None].expand(-1, -1, -1, self.keys.shape[-1])  # [B, H, K, D]
            self.keys, self.values = self.keys.gather(2, index), self.values.gather(2, index)
            self.mass = self.mass.gather(2, keep)
        self.scores, self.positions = scores, positions

    def quantize(self) -> None:
        """Quantize each group of `group` positions once all of it is older than the full-precision residual."""
        config = self.config
        target = (self.seen - config.residual) // config.group * config.group
        while self.quantized_upto < target:
            start = self.quantized_upto
            in_group = (self.positions >= start) & (self.positions < start + config.group)  # [B, H, L]
            self.keys, self.values = quantize_group(self.keys, self.values, in_group, config.bits)
            self.quantized_upto += config.group

    def nbytes(self) -> int:
        """Bytes of this layer's K and V as stored: codes and group scales for quantized entries (KIVI's packed
        layout), the model's precision for the rest."""
        if not self.is_initialized or self.keys.numel() == 0:
            return 0
        batch, heads, stored, dim = self.keys.shape
        full_bytes = self.keys.element_size()
        if self.config.bits == 16:
            return 2 * batch * heads * stored * dim * full_bytes
        quantized = int((self.positions < self.quantized_upto).sum())
        groups = batch * heads * (self.quantized_upto // self.config.group)
        codes = 2 * quantized * dim * self.config.bits // 8
        scales = groups * dim * SCALE_BYTES + quantized * SCALE_BYTES
        return codes + scales + 2 * (batch * heads * stored - quantized) * dim * full_bytes


class KVCache(Cache):
    """A cache under `config`'s budget; build it with `make_cache`, which also installs the attention hook."""

    def __init__(self, config: KVConfig, *, num_layers: int) -> None:
        super().__init__(layers=[KVLayer(config) for _ in range(num_layers)])
        self.config = config
        self.shares: list[float] | None = None
        """D2O's per-layer budget relative to the uniform one, fixed from the prefill's attention."""

    @property
    def needs_attention(self) -> bool:
        return self.config.policy != "window" and self.config.budget != 1.0

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        if PENDING.get() is not None:
            raise PonderError(
                "the model's attention does not report to the KV cache: build it with "
                "ponder.kvcache.make_cache(model, ...), which installs the attention hook"
            )
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        PENDING.set((self, layer_idx))
        return keys, values

    def observe(self, layer_idx: int, probs: torch.Tensor | None) -> None:
        """This layer's attention has run: record its scores; after the last layer, evict and quantize."""
        self.layers[layer_idx].observe(probs)
        if layer_idx == len(self.layers) - 1:
            self.compress()

    def limits(self) -> list[int]:
        """Each layer's most entries now: the uniform budget, or D2O's share of it, never above the tokens seen."""
        seen = self.layers[0].seen
        uniform = self.config.tokens(seen)
        if self.config.policy != "d2o" or uniform >= seen:
            return [uniform] * len(self.layers)
        if self.shares is None:
            self.shares = layer_shares([layer.density or 0.0 for layer in self.layers])
        return [max(1, min(seen, int(uniform * share))) for share in self.shares]

    def compress(self) -> None:
        for layer, limit in zip(self.layers, self.limits(), strict=True):
            layer.compress(limit)
            if self.config.bits != 16:
                layer.quantize()

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)

    def entries(self) -> list[int]:
        """Entries per head each layer holds now."""
        return [layer.keys.shape[-2] if layer.is_initialized else 0 for layer in self.layers]


def make_cache(model, config: KVConfig | None = None, **fields) -> KVCache:
    """A compressed cache for `model` (a `KVConfig`, or its fields as keywords); switches the model's attention to
    the hook that reports to it (plain SDPA whenever no compressed cache is in use)."""
    install(model)
    config = config or KVConfig(**fields)
    return KVCache(config, num_layers=model.config.get_text_config().num_hidden_layers)
