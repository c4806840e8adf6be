"""Adaptive methods inside the quantized runtime: a converted directory's thresholds on its base model's blocks.

`AdaptiveQuantDecoder` loads what `ponder convert` wrote (the base model reference and each layer's calibrated
threshold table) onto the base model in a block format, and runs the method in `pq_forward` itself (runtime.c's
FFN kinds, `sparse_ffn.h`): Python only sets each layer's threshold, or its neuron count, when the budget changes.

Layouts (why: a skipped neuron must skip whole blocks):
- cats: gate and up as the file stores them, one row of blocks per neuron (the embedded GGUF's own blocks, exact);
  down neuron-major ([F, D], each neuron's column requantized along D: q8_0 for 4-bit files, else the file's own
  format), so an inactive neuron skips its row of blocks and an active one adds a_i * row_i into fp32
  accumulators. `requantize_error` measures what that costs against the file's down.

Two modes: "threshold" (the calibrated |act(gate)| threshold, compute varies per token) and "count" (exactly the
budget's number of neurons per token per layer, the largest |act(gate)|, so speed per token is stable).
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ponder.errors import PonderError
from ponder.methods.base import FULL_BUDGET, check_calibrated, interpolate_thresholds
from ponder.quant.formats import FORMATS, quantize
from ponder.quant.runtime import QuantDecoder, load_model, mat
from ponder.quant.weights import QuantModel, QuantTensor
from ponder.state import CONFIG_FILE

STATE_FILE = "ponder_state.safetensors"
"""The method tensors of a converted directory (ponder.adaptive's name, not imported: it loads modelling code)."""
SUPPORTED = ("cats",)
"""Methods the quantized runtime runs natively."""
MODES = ("threshold", "count")
FFN_DENSE, FFN_CATS = 0, 1
"""runtime.c's FFN kinds (PQ_FFN_*)."""


def cats_neuron_fraction(budget: float) -> float:
    """Active neurons for a CATS budget: the gate costs 1/3 always, up and down 2/3 of the active share (as
    `CatsFFN.neuron_fraction`)."""
    return min(max((budget * 3 - 1) / 2, 0.0), 1.0)


NEURON_MAJOR_FORMAT = {"q4_0": "q8_0", "q4_1": "q8_0"}
"""The neuron-major down's format where it is not the file's own: requantizing 4-bit blocks along the other axis
adds a second 4-bit rounding (+5.5 % perplexity on SmolLM2-135M Q4_1), 8-bit blocks keep the file's values within
half a step of 1/127 of each block's range."""


def neuron_major(down: QuantTensor) -> QuantTensor:
    """down [D, F] as [F, D]: each neuron's column requantized along D, in q8_0 for 4-bit files and in the file's
    own format otherwise (fp32: transposed)."""
    rows, cols = down.shape
    fmt = FORMATS[NEURON_MAJOR_FORMAT.get(down.format.name, down.format.name)]
    values = down.dequantize().t().contiguous()  # [F, D]
    return QuantTensor(fmt, (cols, rows), quantize(values, fmt, "down_proj (neuron-major)"))


def requantize_error(down: QuantTensor, down_t: QuantTensor) -> tuple[float, float]:
    """(max, mean) |requantized - file| over the down weights: what the neuron-major layout costs."""
    diff = (down_t.dequantize().t() - down.dequantize()).abs()
    return float(diff.max()), float(diff.mean())


def read_converted(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A converted directory's config (method, options, base model, budget) and method tensors by name."""
    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
        method, _ = config["method"], config["base_model"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise PonderError(f"{directory / CONFIG_FILE} is unreadable ({e}): reconvert with `ponder convert`") from None
    if method not in SUPPORTED:
        raise PonderError(
            f"{method} has no quantized runtime: --weights runs {', '.join(SUPPORTED)} (or drop --weights for fp32)"
        )
    try:
        state = load_file(str(directory / STATE_FILE))
    except (OSError, SafetensorError) as e:
        raise PonderError(f"{directory / STATE_FILE} is missing or corrupt ({e}): reconvert the model") from None
    return config, state


class AdaptiveQuantDecoder(QuantDecoder):
    """`QuantDecoder` of a converted model: its method runs in the native step at `budget` (settable between
    calls), in "threshold" or "count" `mode`; `ffn_compute` is the fraction of dense FFN MACs spent since the last
    `reset_compute`, counted as the fp32 path counts it."""

    def __init__(
        self,
        directory: str | Path,
        *,
        weights: str | None = "q4_1",
        budget: float | None = None,
        mode: str = "threshold",
        base: QuantModel | None = None,
        **options,
    ):
        if mode not in MODES:
            raise PonderError(f"unknown mode '{mode}': use one of {', '.join(MODES)}")
        config, state = read_converted(directory)
        model = base if base is not None else load_model(config["base_model"], weights)
        super().__init__(model, weights=None, **options)
        self.method, self.mode = config["method"], mode
        cfg = model.config
        layers, self.hidden, self.ffn = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size
        try:
            self.grids = [state[f"layers.{i}.budget_grid"].float() for i in range(layers)]
            self.tables = [state[f"layers.{i}.thresholds"].float() for i in range(layers)]
        except KeyError as e:
            raise PonderError(f"{directory}/{STATE_FILE} lacks {e} for a {layers}-layer model: reconvert") from None
        self.down_t = []
        for i, layer in enumerate(self._layers):
            p = f"model.layers.{i}.mlp."
            if any(f"{p}{name}_proj.bias" in model.tensors for name in ("gate", "up", "down")):
                raise PonderError(f"{self.method} in the quantized runtime takes FFNs without biases")
            down_t = neuron_major(model.tensors[p + "down_proj.weight"])
            self.down_t.append(down_t)
            layer.down_t = mat(down_t)
        self._spent = torch.zeros(layers, dtype=torch.int64)  # active neurons a layer, summed over tokens
        for i, layer in enumerate(self._layers):
            layer.spent = self._spent.data_ptr() + 8 * i
        self.macs = self.tokens = 0
        self.set_budget(config.get("budget", FULL_BUDGET) if budget is None else budget)

    @property
    def min_budget(self) -> float:
        return max(float(grid[0]) for grid in self.grids)

    def set_budget(self, budget: float) -> None:
        """Each layer's threshold (or neuron count) for `budget`; budget 1 runs the dense FFN."""
        budget = self.budget = check_calibrated(budget, self.min_budget, self.method)
        count = round(cats_neuron_fraction(budget) * self.ffn) if self.mode == "count" else 0
        for layer, grid, table in zip(self._layers, self.grids, self.tables, strict=True):
            layer.ffn_kind = FFN_DENSE if budget >= FULL_BUDGET else FFN_CATS
            layer.threshold = float(interpolate_thresholds(grid, table, budget))
            layer.top_k = count

    def dense_macs(self) -> int:
        """MACs of one token's FFNs, every layer dense."""
        return 3 * self.hidden * self.ffn * len(self._layers)

    def reset_compute(self) -> None:
        self.macs = self.tokens = 0

    @property
    def ffn_compute(self) -> float:
        """The fraction of dense FFN MACs spent per token since `reset_compute` (1.0 before any token)."""
        return self.macs / (self.tokens * self.dense_macs()) if self.tokens else 1.0

    def _run(self, ids: torch.Tensor, all_logits: bool) -> torch.Tensor:
        logits = super()._run(ids, all_logits)
        T, D, F = ids.numel(), self.hidden, self.ffn
        self.tokens += T
        if self._layers[0].ffn_kind == FFN_DENSE:
            self.macs += T * self.dense_macs()
        else:  # cats: the gate for every token and layer, up and down for the active neurons
            self.macs += T * len(self._layers) * F * D + 2 * D * int(self._spent.sum())
            self._spent.zero_()
        return logits


def ffn_call(decoder: QuantDecoder, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [T, D] + layer `layer`'s FFN of rmsnorm(x), through the forward's own code (tests): (out [T, D], active
    neuron ids [T, F] (the first counts[t] of row t valid), counts [T])."""
    x = x.to(torch.float32).contiguous().clone()
    T, F = x.shape[0], decoder.model.config.intermediate_size
    active, counts = torch.zeros(T, F, dtype=torch.int32), torch.zeros(T, dtype=torch.int32)
    status = decoder.lib.pq_ffn(
        ctypes.byref(decoder._description), ctypes.byref(decoder._layers[layer]), x.data_ptr(), T,
        active.data_ptr(), counts.data_ptr(),
    )  # fmt: skip
    if status:
        raise PonderError(f"{T} rows exceed the decoder's chunk of {decoder.chunk}")
    return x, active, counts
