"""Static slices (MatFormer / Mix'n'Match): a nested model at fixed per-layer widths, written as a plain dense
Hugging Face checkpoint with smaller FFNs. A uniform width loads in stock `transformers` without ponder; per-layer
widths are recorded in config.json (`ponder_ffn_widths`) and load with `ponder.load` / every `ponder` command."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ponder.adaptive import ALLOCATION_TOKENS, adaptive_modules, full_budget
from ponder.data import CALIB_DEFAULT, load_text
from ponder.errors import PonderError
from ponder.methods.allocate import greedy_schedule, layer_sensitivity
from ponder.methods.base import FULL_BUDGET, check_budget
from ponder.methods.nested import NestedFFN
from ponder.models.ffn import ffn_view
from ponder.models.load import FFN_WIDTHS_KEY, model_with_ffn_widths
from ponder.models.targets import architecture_of, decoder_layers
from ponder.train.capture import calibration_windows

Widths = float | Sequence[float]
"""One width for every layer, or one per layer: fractions of each FFN's neurons."""


def nested_modules(model: PreTrainedModel) -> list[NestedFFN]:
    modules = adaptive_modules(model)
    if not modules or not all(isinstance(m, NestedFFN) for m in modules):
        raise PonderError("slicing needs a model converted with `ponder convert --method nested`")
    return modules


def layer_learners(model: PreTrainedModel, width: Widths) -> list[int]:
    """Learners each FFN keeps at `width` (rounded to whole learners, at least 1)."""
    modules = nested_modules(model)
    widths = [width] * len(modules) if isinstance(width, int | float) else list(width)
    if len(widths) != len(modules):
        raise PonderError(f"{len(widths)} widths given for {len(modules)} layers: give one width or one per layer")
    return [_learners_at(m, check_budget(w)) for w, m in zip(widths, modules, strict=True)]


def _learners_at(module: NestedFFN, width: float) -> int:
    return max(1, round(width * module.learners))


def set_static_width(model: PreTrainedModel, width: Widths | None) -> None:
    """Run every token through the first `width` of each FFN (None: back to the router and the budget)."""
    modules = nested_modules(model)
    learners = [None] * len(modules) if width is None else layer_learners(model, width)
    for module, k in zip(modules, learners, strict=True):
        module.static_learners = k


def _apply_width(module: NestedFFN, width: float) -> None:
    module.static_learners = None if width >= FULL_BUDGET else _learners_at(module, width)


@torch.no_grad()
def greedy_widths(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    means: Sequence[float],
    *,
    calibration: str = CALIB_DEFAULT,
    levels: int = 8,
    progress: bool = True,
) -> list[list[float]]:
    """For each mean width, per-layer widths with that mean (Mix'n'Match), narrowing first the layers whose static
    slice raises the calibration loss least: the greedy schedule of `ponder.methods.allocate` over static widths,
    so a lower mean never widens a layer. Costs one forward of 1,024 calibration tokens per layer and width level
    below 1 (210 for SmolLM2-135M: about 17 minutes on this 2-core machine), shared by all the means."""
    modules = nested_modules(model)
    learners = modules[0].learners
    stride = max(1, learners // levels)
    grid = [k / learners for k in range(learners, 0, -stride)]
    windows = calibration_windows(tokenizer, load_text(calibration), tokens=ALLOCATION_TOKENS)
    with full_budget(model):
        increase = layer_sensitivity(model, modules, windows, grid, progress, apply=_apply_width)  # ends routed
    schedule = greedy_schedule(increase, grid, [check_budget(mean) for mean in means])
    return [[round(float(w) * learners) / learners for w in row] for row in schedule]


@torch.no_grad()
def slice_model(model: PreTrainedModel, width: Widths) -> PreTrainedModel:
    """A dense model equal to `model` with every token running the first `width` of each FFN."""
    modules = nested_modules(model)
    neurons = [k * module.block for k, module in zip(layer_learners(model, width), modules, strict=True)]
    arch = architecture_of(model)
    config = copy.deepcopy(model.config)
    setattr(config, arch.width_key, max(neurons))
    if len(set(neurons)) > 1:
        setattr(config, FFN_WIDTHS_KEY, neurons)
    elif hasattr(config, FFN_WIDTHS_KEY):
        delattr(config, FFN_WIDTHS_KEY)
    sliced = model_with_ffn_widths(config, neurons, model.dtype)
    ffn_prefixes = tuple(f"{arch.layers}.{i}.{arch.ffn}." for i in range(len(modules)))
    shared = {k: v for k, v in model.state_dict().items() if not k.startswith(ffn_prefixes)}
    missing, _ = sliced.load_state_dict(shared, strict=False)
    if any(not key.startswith(ffn_prefixes) for key in missing):
        raise PonderError(f"cannot slice: weights {missing[:3]} have no source in the model")
    for layer, module, n in zip(decoder_layers(sliced), modules, neurons, strict=True):
        view = ffn_view(getattr(layer, arch.ffn), arch)  # shares storage with `sliced`
        view.up.copy_(module.up_p[:n])
        view.down.copy_(module.down_t[:n].t())
        pairs = [(view.gate, module.gate_p), (view.up_bias, module.up_bias_p), (view.gate_bias, module.gate_bias_p)]
        for target, source in pairs:
            if target is not None:
                target.copy_(source[:n])
        if view.down_bias is not None:
            view.down_bias.copy_(module.down_bias)
    sliced.eval()
    return sliced


def export_slice(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, width: Widths, directory: str | Path
) -> PreTrainedModel:
    """Write the slice at `width` as an HF model directory (whole or not at all); returns the sliced model."""
    sliced = slice_model(model, width)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        sliced.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sliced
