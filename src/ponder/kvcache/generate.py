"""Greedy generation through `transformers.generate` with a compressed cache, behind the lean decoder's
`generate(ids, n, eos_token_id=, on_token=)` so the CLI streams either the same way."""

from __future__ import annotations

import torch
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from ponder.kvcache.config import KVConfig
from ponder.kvcache.longctx import new_cache


class _Tokens(BaseStreamer):
    """Calls `on_token` with each generated token [1] (generate's first `put` is the prompt, skipped)."""

    def __init__(self, on_token) -> None:
        self.on_token, self.prompt_seen = on_token, False

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen:
            self.on_token(value.reshape(-1))
        self.prompt_seen = True

    def end(self) -> None:
        pass


class CachedGenerator:
    """`model.generate` with a fresh `config` cache per call."""

    def __init__(self, model, config: KVConfig) -> None:
        self.model, self.config = model, config

    @torch.inference_mode()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, *, eos_token_id=None, on_token=None) -> torch.Tensor:
        settings = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_token_id, pad_token_id=eos_token_id
        )
        cache = new_cache(self.model, self.config)
        streamer = _Tokens(on_token) if on_token is not None else None
        return self.model.generate(
            ids, attention_mask=torch.ones_like(ids), generation_config=settings, cache=cache,
            streamer=streamer,
        )  # fmt: skip
