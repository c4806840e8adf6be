"""Static slices (MatFormer / Mix'n'Match): a nested model at one fixed width, written as a plain dense
Hugging Face checkpoint with smaller FFNs that stock `transformers` loads without ponder."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from ponder.adaptive import adaptive_modules
from ponder.errors import PonderError
from ponder.methods.base import check_budget
from ponder.methods.nested import NestedFFN
from ponder.models.ffn import ffn_view
from ponder.models.targets import architecture_of, decoder_layers


def nested_modules(model: PreTrainedModel) -> list[NestedFFN]:
    modules = adaptive_modules(model)
    if not modules or not all(isinstance(m, NestedFFN) for m in modules):
        raise PonderError("slicing needs a model converted with `ponder convert --method nested`")
    return modules


def static_learners(model: PreTrainedModel, width: float) -> int:
    """Learners per FFN kept at `width` (a fraction of the FFN's neurons, rounded to whole learners, at least 1)."""
    learners = nested_modules(model)[0].learners
    return max(1, round(check_budget(width) * learners))


def set_static_width(model: PreTrainedModel, width: float | None) -> None:
    """Run every token through the first `width` of each FFN (None: back to the router and the budget)."""
    k = None if width is None else static_learners(model, width)
    for module in nested_modules(model):
        module.static_learners = k


@torch.no_grad()
def slice_model(model: PreTrainedModel, width: float) -> PreTrainedModel:
    """A dense model equal to `model` with every token running the first `width` of each FFN."""
    modules = nested_modules(model)
    neurons = static_learners(model, width) * modules[0].block
    arch = architecture_of(model)
    config = copy.deepcopy(model.config)
    setattr(config, arch.width_key, neurons)
    sliced = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    ffn_prefixes = tuple(f"{arch.layers}.{i}.{arch.ffn}." for i in range(len(modules)))
    shared = {k: v for k, v in model.state_dict().items() if not k.startswith(ffn_prefixes)}
    missing, _ = sliced.load_state_dict(shared, strict=False)
    if any(not key.startswith(ffn_prefixes) for key in missing):
        raise PonderError(f"cannot slice: weights {missing[:3]} have no source in the model")
    for layer, module in zip(decoder_layers(sliced), modules, strict=True):
        view = ffn_view(getattr(layer, arch.ffn), arch)  # shares storage with `sliced`
        view.up.copy_(module.up_p[:neurons])
        view.down.copy_(module.down_t[:neurons].t())
        pairs = [(view.gate, module.gate_p), (view.up_bias, module.up_bias_p), (view.gate_bias, module.gate_bias_p)]
        for target, source in pairs:
            if target is not None:
                target.copy_(source[:neurons])
        if view.down_bias is not None:
            view.down_bias.copy_(module.down_bias)
    sliced.eval()
    return sliced


def export_slice(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, width: float, directory: str | Path
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
