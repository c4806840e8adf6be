"""Capture each FFN's inputs on calibration text (dense model), and fit the small per-layer networks methods train."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ponder.errors import DataError
from ponder.models.targets import architecture_of, decoder_layers


@torch.inference_mode()
def capture_ffn_inputs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    tokens: int = 8192,
    window_len: int = 512,
    progress: bool = True,
) -> list[torch.Tensor]:
    """FFN inputs [N, D] of every layer for the first `tokens` tokens of `text`, in windows of `window_len`.

    Memory: layers x N x D floats (30 x 8192 x 576 x 4 B = 566 MB for SmolLM2-135M).
    """
    ids = tokenizer(text, add_special_tokens=False).input_ids
    usable = min(tokens, len(ids)) // window_len * window_len
    if usable == 0:
        raise DataError(f"calibration text has {len(ids)} tokens, fewer than one {window_len}-token window")
    batches = torch.tensor(ids[:usable]).view(-1, window_len)  # [W, L]
    arch = architecture_of(model)
    captured: list[list[torch.Tensor]] = [[] for _ in decoder_layers(model)]

    def hook(index: int):
        def keep(module, args):
            captured[index].append(args[0].reshape(-1, args[0].shape[-1]).float().clone())

        return keep

    handles = [
        getattr(layer, arch.ffn).register_forward_pre_hook(hook(i)) for i, layer in enumerate(decoder_layers(model))
    ]
    try:
        for batch in tqdm(batches, desc="capture", unit="window", disable=not progress):
            model(batch[None])
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(parts) for parts in captured]


def fit_regressor(
    net: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, steps: int, lr: float, seed: int
) -> None:
    """Train a small per-layer network (predictor, router) to regress `targets` [N, K] from `inputs` [N, D] with
    Adam on random batches of 512; seeded, so a rerun gives the same weights. The net is frozen afterwards."""
    generator = torch.Generator().manual_seed(seed)
    net.requires_grad_(True)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            batch = torch.randint(0, inputs.shape[0], (512,), generator=generator)
            loss = torch.nn.functional.mse_loss(net(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.requires_grad_(False)
