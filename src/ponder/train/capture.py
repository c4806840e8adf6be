"""Capture activations on calibration text (dense model): in memory for small jobs, or streamed to disk.

Two capture points: every FFN's input (what width methods calibrate on), or the residual stream at every decoder
layer's input plus the last layer's output (what depth methods calibrate on: layer i's update is entry i+1 minus
entry i).

`ActivationStore` writes one safetensors shard per calibration window (all layers, fp16) beside a conversion, so
memory holds one window of every layer while capturing and one layer of every window while calibrating, and a
killed conversion resumes without capturing again. Shards are written to a temporary name and renamed, so a shard
on disk is always whole.

Shapes: W = windows, T = tokens per window, N = W·T tokens, D = hidden size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ponder.errors import DataError, PonderError
from ponder.models.targets import architecture_of, decoder_layers
from ponder.train.distributed import SINGLE, World

FP16_MAX = 65504.0
CAPTURE_POINTS = ("ffn", "residual")


def calibration_windows(
    tokenizer: PreTrainedTokenizerBase, text: str, *, tokens: int, window_len: int = 512
) -> torch.Tensor:
    """The first `tokens` tokens of `text` (rounded down to whole windows) as [W, T] ids."""
    if tokens < window_len:
        raise DataError(f"{tokens} calibration tokens is less than one {window_len}-token window: ask for more")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    usable = min(tokens, len(ids)) // window_len * window_len
    if usable == 0:
        raise DataError(f"calibration text has {len(ids)} tokens, fewer than one {window_len}-token window")
    return torch.tensor(ids[:usable]).view(-1, window_len)


def _hooks(model: PreTrainedModel, point: str, current: list) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks that put each capture of one forward into `current` (fp32 copies, [T, D])."""
    arch = architecture_of(model)
    layers = decoder_layers(model)

    def keep(index: int, from_output: bool = False):
        def hook(module, args, kwargs, output=None):
            x = output if from_output else (args[0] if args else kwargs["hidden_states"])
            x = x[0] if isinstance(x, tuple) else x
            current[index] = x.reshape(-1, x.shape[-1]).float().clone()

        return hook

    modules = [getattr(layer, arch.ffn) for layer in layers] if point == "ffn" else list(layers)
    handles = [module.register_forward_pre_hook(keep(i), with_kwargs=True) for i, module in enumerate(modules)]
    if point == "residual":
        handles.append(layers[-1].register_forward_hook(keep(len(layers), from_output=True), with_kwargs=True))
    return handles


def _capture_count(model: PreTrainedModel, point: str) -> int:
    """Tensors one window yields at `point`: one per layer, plus the last layer's output for the residual stream."""
    return len(decoder_layers(model)) + (point == "residual")


@torch.inference_mode()
def iter_captures(
    model: PreTrainedModel, windows: torch.Tensor, *, progress: bool = True, point: str = "ffn"
) -> Iterator[list]:
    """For each window [T] of `windows` [W, T]: the captures [T, D] at `point` (fp32), in layer order."""
    if point not in CAPTURE_POINTS:
        raise PonderError(f"capture point '{point}' is unknown: choose one of {', '.join(CAPTURE_POINTS)}")
    current: list[torch.Tensor | None] = [None] * _capture_count(model, point)
    handles = _hooks(model, point, current)
    try:
        for window in tqdm(windows, desc="capture", unit="window", disable=not progress):
            model(window[None])
            yield list(current)
    finally:
        for handle in handles:
            handle.remove()


def capture_ffn_inputs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    tokens: int = 8192,
    window_len: int = 512,
    progress: bool = True,
) -> list[torch.Tensor]:
    """FFN inputs [N, D] of every layer, in memory (layers × N × D floats: 566 MB for SmolLM2-135M at 8,192)."""
    windows = calibration_windows(tokenizer, text, tokens=tokens, window_len=window_len)
    per_window = list(iter_captures(model, windows, progress=progress))
    return [torch.cat(parts) for parts in zip(*per_window, strict=True)]


class ActivationStore:
    """Captures at `point` (FFN inputs, or the residual stream) of every layer on calibration windows, one shard
    per window in `directory`."""

    def __init__(self, directory: str | Path, point: str = "ffn"):
        self.directory = Path(directory)
        self.point = point

    def _shard(self, window: int) -> Path:
        return self.directory / f"window-{window:05d}.safetensors"

    def shards(self) -> list[Path]:
        return sorted(self.directory.glob("window-*.safetensors"))

    def fill(
        self, model: PreTrainedModel, windows: torch.Tensor, *, progress: bool = True, ranks: World = SINGLE
    ) -> ActivationStore:
        """Capture the windows whose shard is not on disk yet (all of them on a first run); under torchrun each
        rank captures its own share of them."""
        self.directory.mkdir(parents=True, exist_ok=True)
        missing = [w for w in range(len(windows)) if not self._shard(w).exists() and ranks.owns(w)]
        if not missing:
            return self
        for window, inputs in zip(
            missing, iter_captures(model, windows[missing], progress=progress, point=self.point), strict=True
        ):
            tensors = {f"layer.{i}": _compact(x) for i, x in enumerate(inputs)}
            fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=self.directory)
            os.close(fd)
            try:
                save_file(tensors, tmp)
                os.replace(tmp, self._shard(window))
            finally:
                Path(tmp).unlink(missing_ok=True)
        return self

    def layer(self, index: int) -> torch.Tensor:
        """Captures [N, D] of one layer (entry `index`) over every window, as fp32."""
        shards = self.shards()
        if not shards:
            raise PonderError(f"no captured activations in {self.directory}: capture them first")
        parts = []
        for shard in shards:
            try:
                with safe_open(str(shard), framework="pt") as f:
                    parts.append(f.get_tensor(f"layer.{index}").float())
            except (SafetensorError, OSError) as e:
                raise PonderError(
                    f"captured shard {shard} is corrupt ({e}): delete it and rerun with --resume"
                ) from None
        return torch.cat(parts)


def _compact(x: torch.Tensor) -> torch.Tensor:
    """fp16 halves the disk and memory of a capture; a layer whose values overflow fp16 is kept in fp32."""
    return x.half() if float(x.abs().max()) < FP16_MAX else x
