"""Lean greedy decoding with a static KV cache.

`transformers.generate` spends several ms per token on machinery a greedy batch-1 loop does not need (logits
processors, stopping criteria, cache bookkeeping, per-module wrappers). For Llama-style blocks (Llama, Mistral,
Qwen2, Qwen3) `LeanDecoder` runs the attention itself over preallocated K/V buffers with one fused QKV matmul and
calls each layer's FFN module as it is, so dense and adaptive FFNs run under the same loop. Other families use
`GenericRunner`: the model's own forward with a KV cache, minus `generate()`.

Shapes: B = batch, T = new tokens this call, P = tokens already cached, D = hidden, H = query heads,
K = key/value heads, E = head dim, V = vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from ponder.kernels import native
from ponder.methods.base import SparseFFN
from ponder.models.ffn import FFNView, activation_name, ffn_view
from ponder.models.targets import architecture_of, decoder_layers
from ponder.stats import ReportsCompute


def start_sequences(model: PreTrainedModel, batch_size: int) -> None:
    """Tell FFN modules that keep per-sequence state (e.g. `core`) that new sequences begin."""
    arch = architecture_of(model)
    for layer in decoder_layers(model):
        ffn = getattr(layer, arch.ffn)
        if isinstance(ffn, SparseFFN):
            ffn.start_sequences(batch_size)


class GenericRunner:
    """Any supported model: its own forward and KV cache, the last position's logits only."""

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self.cache: DynamicCache | None = None

    def reset(self, batch_size: int) -> None:
        self.cache = DynamicCache(config=self.model.config)
        start_sequences(self.model, batch_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, V] of the last position after appending `input_ids` [B, T]."""
        out = self.model(input_ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def next_token(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The greedy next token [B] after appending `input_ids` [B, T]."""
        return self.forward(input_ids).argmax(dim=-1)


class NativeDenseFFN:
    """A dense (not adaptive) FFN module, run for one fp32 token by the same C kernel family the adaptive methods'
    decode executors use, so dense-vs-adaptive timings compare skipping, not executors. Anything else, and any call
    while hooks are attached (a ComputeMeter or ComputeTrace measuring), goes to the module itself."""

    def __init__(self, view: FFNView, activation: str):
        self.view = view
        self.activation = activation
        self.workspace = native.Workspace()  # this wrapper's own: each decoder builds its own wrappers

    @classmethod
    def wrap(cls, model: PreTrainedModel, module: nn.Module) -> nn.Module | NativeDenseFFN:
        """`module` wrapped where the kernel applies (a dense fp32 FFN with a known activation), else itself."""
        activation = activation_name(model)
        usable = native.library() is not None and activation in native.ACTIVATIONS and model.dtype == torch.float32
        if not usable or isinstance(module, ReportsCompute):  # adaptive modules have their own executors
            return module
        view = ffn_view(module, architecture_of(model))
        weights = [w for w in (view.gate, view.up, view.down) if w is not None]
        return cls(view, activation) if all(w.is_contiguous() for w in weights) else module

    def __call__(self, hidden_states: torch.Tensor) -> torch.Tensor:
        module = self.view.module
        if hidden_states.numel() != hidden_states.shape[-1] or module._forward_hooks or module._forward_pre_hooks:
            return module(hidden_states)
        view = self.view
        out = native.glu_dense(
            hidden_states.reshape(-1), view.gate, view.up, view.down, self.activation, view.gate_bias, view.up_bias,
            workspace=self.workspace,
        )  # fmt: skip
        if view.down_bias is not None:
            out += view.down_bias
        return out.view(hidden_states.shape)

    def token_forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The lean decoder's one-token path (see SparseFFN.token_forward): the same kernel, arguments bound once."""
        view = self.view
        kernel = native.DenseKernel(view.gate, view.up, view.down, view.gate_bias, view.up_bias, self.activation)
        bias = view.down_bias
        return kernel if bias is None else lambda x: kernel(x).add_(bias)


class _Layer:
    """One Llama-style decoder layer's tensors, with Q, K and V fused into one [(H+2K)·E, D] weight."""

    def __init__(self, model: PreTrainedModel, layer: nn.Module, attention: str, ffn: str):
        attn = getattr(layer, attention)
        self.qkv_weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach()
        biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
        self.qkv_bias = torch.cat(biases).detach() if biases[0] is not None else None
        self.o_proj = attn.o_proj
        self.q_norm = getattr(attn, "q_norm", None)  # Qwen3 normalises q and k per head
        self.k_norm = getattr(attn, "k_norm", None)
        self.scaling = attn.scaling
        self.input_norm = layer.input_layernorm
        self.post_norm = layer.post_attention_layernorm
        self.ffn = NativeDenseFFN.wrap(model, getattr(layer, ffn))
        whole_layer = isinstance(self.ffn, SparseFFN) and self.ffn.whole_layer
        self.skip = self.ffn if whole_layer else None  # a depth method decides per token
        kv_rows = attn.q_proj.weight.shape[0]
        self.kv_weight = self.qkv_weight[kv_rows:]  # [2·K·E, D]: all a skipped token computes
        self.kv_bias = None if self.qkv_bias is None else self.qkv_bias[kv_rows:]
        self.q_weight = self.qkv_weight[:kv_rows]  # [H·E, D]: the queries, for the tokens that run the layer
        self.q_bias = None if self.qkv_bias is None else self.qkv_bias[:kv_rows]
        self.kernel: native.AttentionKernel | None = None  # set by RopeRunner where the C step applies
        self.ffn_token: Callable[[torch.Tensor], torch.Tensor] | None = None  # likewise, where the FFN has one
        self.ffn_module = self.ffn.view.module if isinstance(self.ffn, NativeDenseFFN) else self.ffn  # hooks live here
        self.skip_kernel: native.LayerSkipKernel | None = None


def _rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return nn.functional.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)


class RopeRunner:
    """Llama-style blocks run natively over a static KV cache."""

    def __init__(self, model: PreTrainedModel, max_len: int, *, screen_head: bool = True):
        arch = architecture_of(model)
        config = model.config
        self.model = model
        self.max_len = max_len
        self.layers = [_Layer(model, layer, arch.attention, arch.ffn) for layer in decoder_layers(model)]
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        weight = model.model.embed_tokens.weight
        positions = torch.arange(max_len, device=weight.device)[None]  # [1, max_len]
        cos, sin = model.model.rotary_emb(weight[:1][None], positions)  # [1, max_len, E]
        half = self.head_dim // 2
        # rotate_half(x)·sin == roll(x, E/2)·sin_signed, with the first half of sin negated: one op fewer per step.
        self.cos = cos[0]  # [max_len, E]
        self.sin_signed = torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)  # [max_len, E]
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.position = 0
        self.native_step = native.library() is not None and model.dtype == torch.float32
        """One token of one sequence runs each layer's attention block as one C call (`attention_decode`)."""
        self.greedy_head: native.GreedyHead | None = None
        """The one-token greedy step's head: the exact argmax at a quarter of the head's reads (None: the full fp32
        head, as `forward` runs it)."""
        if self.native_step:
            for layer in self.layers:
                layer.kernel = native.AttentionKernel(
                    input_norm=layer.input_norm, post_norm=layer.post_norm, qkv_weight=layer.qkv_weight,
                    qkv_bias=layer.qkv_bias, q_norm=layer.q_norm, k_norm=layer.k_norm, o_proj=layer.o_proj,
                    heads=self.heads, kv_heads=self.kv_heads, head_dim=self.head_dim, scaling=layer.scaling,
                )  # fmt: skip
                fast = isinstance(layer.ffn, SparseFFN | NativeDenseFFN)  # else a plain module, called as it is
                layer.ffn_token = layer.ffn.token_forward() if fast else None
                if layer.skip is not None:
                    layer.skip_kernel = native.LayerSkipKernel(
                        gate=layer.skip.layer_gate, input_norm=layer.input_norm, kv_weight=layer.kv_weight,
                        kv_bias=layer.kv_bias, k_norm=layer.k_norm, kv_heads=self.kv_heads, head_dim=self.head_dim,
                        scale=layer.skip.stand_in_scale, shift=layer.skip.stand_in_shift,
                    )  # fmt: skip
            D = config.hidden_size
            self._x, self._ffn_in = torch.empty(D), torch.empty(D)
            self._work = torch.empty(self.layers[0].kernel.work_size(max_len))
            head = model.lm_head
            self.greedy_head = native.GreedyHead(head.weight, head.bias) if screen_head else None

    def reset(self, batch_size: int) -> None:
        start_sequences(self.model, batch_size)
        weight = self.model.model.embed_tokens.weight
        shape = (batch_size, self.kv_heads, self.max_len, self.head_dim)  # [B, K, max_len, E]
        self.keys = [weight.new_empty(shape) for _ in self.layers]
        self.values = [weight.new_empty(shape) for _ in self.layers]
        self.position = 0

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
        rolled = x.roll(self.head_dim // 2, dims=-1).mul_(sin_signed)
        return (x * cos).add_(rolled)

    def _skipping_layer(
        self, index: int, layer: _Layer, x: torch.Tensor, skipping: torch.Tensor, start: int, end: int
    ) -> torch.Tensor:
        """One layer for a chunk x [1, T, D] of one sequence in which the tokens `skipping` [T] skip it: K/V for
        every token (from its residual, as the full layer writes them), queries, attention and o_proj only for
        the tokens that run, the FFN module called on every row (it computes the running ones and counts all)."""
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        cos, sin_signed = self.cos[start:end], self.sin_signed[start:end]  # [T, E]
        h = _rms_norm(layer.input_norm, x)  # [1, T, D]
        kv = nn.functional.linear(h, layer.kv_weight, layer.kv_bias).view(1, end - start, 2 * kv_heads, head_dim)
        k, v = kv.split(kv_heads, dim=2)  # [1, T, K, E]
        if layer.k_norm is not None:
            k = _rms_norm(layer.k_norm, k)
        self.keys[index][:, :, start:end] = self._rotate(k.transpose(1, 2), cos, sin_signed)
        self.values[index][:, :, start:end] = v.transpose(1, 2)
        rows = (~skipping).nonzero()[:, 0]  # [R]: the tokens that run
        q = nn.functional.linear(h[:, rows], layer.q_weight, layer.q_bias).view(1, len(rows), heads, head_dim)
        if layer.q_norm is not None:
            q = _rms_norm(layer.q_norm, q)
        q = self._rotate(q.transpose(1, 2), cos[rows], sin_signed[rows])  # [1, H, R, E]
        mask = torch.arange(end)[None] <= (start + rows)[:, None]  # [R, P+T]: causal at each row's position
        attn = nn.functional.scaled_dot_product_attention(
            q, self.keys[index][:, :, :end], self.values[index][:, :, :end], attn_mask=mask, scale=layer.scaling,
            enable_gqa=heads != kv_heads,
        )  # fmt: skip
        ran = x.clone()
        ran[:, rows] += layer.o_proj(attn.transpose(1, 2).reshape(1, len(rows), heads * head_dim))
        ran = ran + layer.ffn(_rms_norm(layer.post_norm, ran))  # the module reads `skipping` from `decide`
        return torch.where(skipping.view(1, -1, 1), layer.skip.passed_through(x), ran)

    def _native_step(self, input_ids: torch.Tensor) -> torch.Tensor:
        """One token of one sequence: each layer's attention block in one C call, its FFN module as it is; returns
        the final normed hidden state [D]."""
        position = self.position
        x, ffn_in = self._x, self._ffn_in
        x.copy_(self.model.model.embed_tokens.weight[input_ids[0, 0]])  # [D]
        cos, sin_signed = self.cos[position], self.sin_signed[position]  # [E]
        for index, layer in enumerate(self.layers):
            keys, values, skip = self.keys[index][0], self.values[index][0], layer.skip
            gated = skip is not None and not skip.runs_dense()
            if gated and layer.skip_kernel(x, skip.threshold_values[0], cos, sin_signed, keys, values, position):
                skip.count_skipped_token(x)  # the token skipped the layer: K/V written, stand-in added
                continue
            layer.kernel(x, cos, sin_signed, keys, values, position, ffn_in, self._work)
            hooked = layer.ffn_module._forward_hooks or layer.ffn_module._forward_pre_hooks  # meters watch the module
            if layer.ffn_token is not None and not hooked:
                x += layer.ffn_token(ffn_in)
            else:
                x += layer.ffn(ffn_in.view(1, 1, -1)).view(-1)
        self.position = position + 1
        return _rms_norm(self.model.model.norm, x)  # [D]

    def _end_after(self, steps: int) -> int:
        """The position after `steps` more tokens, which the caches must hold."""
        end = self.position + steps
        if end > self.max_len:
            raise ValueError(f"sequence of {end} tokens exceeds the decoder's max_len={self.max_len}")
        return end

    def _one_native_token(self, input_ids: torch.Tensor) -> bool:
        batch, steps = input_ids.shape
        return self.native_step and batch == 1 and steps == 1

    def forward(self, input_ids: torch.Tensor, *, every_position: bool = False) -> torch.Tensor:
        """Logits [B, V] of the last position after appending `input_ids` [B, T]; [B, T, V] of every appended
        position with `every_position` (a speculative verifier's one pass over its drafts)."""
        batch, steps = input_ids.shape
        start, end = self.position, self._end_after(steps)
        if self._one_native_token(input_ids):
            head = self.model.lm_head
            logits = native.gemv(head.weight, self._native_step(input_ids), head.bias)[None]  # [1, V]; 2.8x torch
            return logits[:, None] if every_position else logits
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        cos, sin_signed = self.cos[start:end], self.sin_signed[start:end]  # [T, E]
        mask = None
        if start > 0 and steps > 1:  # a chunk after a prefix: causal within the chunk, full over the prefix
            mask = torch.ones(steps, end, dtype=torch.bool).tril_(diagonal=start)  # [T, P+T]
        causal = start == 0 and steps > 1
        x = self.model.model.embed_tokens(input_ids)  # [B, T, D]
        for index, layer in enumerate(self.layers):
            skipping = None if layer.skip is None else layer.skip.decide(x)  # [B·T] bool, or None: all run
            if skipping is not None and batch == 1 and steps > 1:
                x = self._skipping_layer(index, layer, x, skipping, start, end)
                continue
            x_in = x
            h = _rms_norm(layer.input_norm, x)
            qkv = nn.functional.linear(h, layer.qkv_weight, layer.qkv_bias)  # [B, T, (H+2K)·E]
            qkv = qkv.view(batch, steps, heads + 2 * kv_heads, head_dim)
            q, k, v = qkv.split([heads, kv_heads, kv_heads], dim=2)  # [B, T, H|K|K, E]
            if layer.q_norm is not None:
                q, k = _rms_norm(layer.q_norm, q), _rms_norm(layer.k_norm, k)
            q = self._rotate(q.transpose(1, 2), cos, sin_signed)  # [B, H, T, E]
            self.keys[index][:, :, start:end] = self._rotate(k.transpose(1, 2), cos, sin_signed)
            self.values[index][:, :, start:end] = v.transpose(1, 2)
            attn = nn.functional.scaled_dot_product_attention(
                q,
                self.keys[index][:, :, :end],  # [B, K, P+T, E]
                self.values[index][:, :, :end],
                attn_mask=mask,
                is_causal=causal,
                scale=layer.scaling,
                enable_gqa=heads != kv_heads,
            )  # [B, H, T, E]
            x = x + layer.o_proj(attn.transpose(1, 2).reshape(batch, steps, heads * head_dim))
            x = x + layer.ffn(_rms_norm(layer.post_norm, x))
            if skipping is not None:  # skipped tokens: residual plus stand-in (K/V written above)
                x = torch.where(skipping.view(batch, steps, 1), layer.skip.passed_through(x_in), x)
        self.position = end
        h = _rms_norm(self.model.model.norm, x if every_position else x[:, -1])  # [B, T, D] or [B, D]
        return self.model.lm_head(h)  # [B, T, V] or [B, V]

    def next_token(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The greedy next token [B] after appending `input_ids` [B, T]: `forward(...).argmax(-1)`, the one-token
        step through the screened head."""
        if self._one_native_token(input_ids) and self.greedy_head is not None:
            self._end_after(1)
            return torch.tensor([self.greedy_head(self._native_step(input_ids))])
        return self.forward(input_ids).argmax(dim=-1)


def _rope_supported(model: PreTrainedModel) -> bool:
    config = model.config
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    sliding = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    return (
        architecture_of(model).rope_decoder
        and rope_type not in ("dynamic", "longrope")
        and sliding is None
        and model.dtype in (torch.float32, torch.bfloat16, torch.float16)
    )


class LeanDecoder:
    """Greedy decoding that gives the same tokens as `model.generate(do_sample=False)`, faster.

    Weights are read from the model when the decoder is built (Q/K/V are fused into a copy, the head gets an int8
    copy to screen tokens with): build a new decoder after changing attention or head weights. FFN modules are
    called live, so budgets set on adaptive FFNs apply. `screen_head=False` saves the int8 copy's memory (vocabulary
    × hidden bytes) and reads the full fp32 head every step; the tokens are the same.
    """

    def __init__(
        self, model: PreTrainedModel, *, max_len: int = 2048, native: bool | None = None, screen_head: bool = True
    ):
        native = _rope_supported(model) if native is None else native
        self.model = model
        self.runner = RopeRunner(model, max_len, screen_head=screen_head) if native else GenericRunner(model)
        self.native = native

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        eos_token_id: int | list[int] | None = None,
        on_token: Callable[[torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Prompt [B, T] → prompt and up to `max_new_tokens` greedy tokens [B, T+N].

        With `eos_token_id`, a sequence that emitted EOS is padded with EOS until all have (as HF does); without
        it, exactly `max_new_tokens` are produced (what benchmarks time). `on_token` gets each new token [B] as
        soon as it is chosen (for streaming), before the forward pass that consumes it.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id or [])
        self.runner.reset(input_ids.shape[0])
        tokens = [input_ids]
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        next_token = self.runner.next_token(input_ids)  # [B]
        for step in range(max_new_tokens):
            if len(eos):
                next_token = torch.where(finished, eos[0], next_token)
                finished |= torch.isin(next_token, eos)
            tokens.append(next_token[:, None])
            if on_token is not None:
                on_token(next_token)
            if step == max_new_tokens - 1 or (len(eos) and bool(finished.all())):
                break
            next_token = self.runner.next_token(next_token[:, None])
        return torch.cat(tokens, dim=1)
