"""Spend FFN compute where the model is unsure: each token's budget from the entropy of the prediction before it.

Entropy Adaptive Decoding's rule, on the budget knob of an adaptive model. The forward pass at position t predicts
token t+1; its budget comes from the entropy (nats) of the prediction made at position t-1, which is known before
the pass starts. Entropies fall into `bins` quantile bins of those the model shows on calibration text at the mean
budget, so each bin holds an equal share of such text; each bin has its own budget, chosen on that text so that the
bins' budgets average to the mean and their summed loss is least (a small exact search over a grid of budgets; all
bins at the mean is one of its candidates). A bin's loss at a budget comes from whole-sequence forwards at that
budget: an approximation, since a real run mixes budgets along its context; `stepwise_perplexity` measures the real
thing, and what it spends, token by token.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ponder.adaptive import adaptive_modules, set_budget
from ponder.errors import PonderError
from ponder.eval.perplexity import PerplexityResult, windows_of
from ponder.io import write_json_atomic
from ponder.methods.base import check_calibrated
from ponder.models.load import cache_root
from ponder.stats import ComputeMeter

STEP = 0.05
"""Spacing of the candidate budgets around the mean."""


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last dimension."""
    return losses_and_entropy(logits, None)[1]


def losses_and_entropy(logits: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Token losses (nats) of `targets` under logits [..., V] (None without targets) and the entropies, from one
    log-softmax."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    losses = None if targets is None else -logp.gather(-1, targets[..., None])[..., 0]
    return losses, -(logp.exp() * logp).sum(-1)


@dataclass
class EntropyBudget:
    """Bins of previous-step entropy (`edges`, ascending, bins-1 of them) and each bin's budget (`levels`)."""

    mean: float
    edges: list[float]
    levels: list[float]
    calibration: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.levels) != len(self.edges) + 1:
            count = len(self.levels)
            raise PonderError(f"{count} budgets need {count - 1} bin edges, got {len(self.edges)}")
        self._edges = torch.tensor(self.edges)

    def level(self, entropy_nats: float) -> float:
        """The budget of a pass whose previous prediction had this entropy."""
        return self.levels[int(torch.bucketize(torch.tensor(entropy_nats), self._edges))]

    def as_dict(self) -> dict:
        return asdict(self)


class EntropyKnob:
    """Sets `policy`'s budget on `model` before each pass from the entropy of the last logits; counts what it set."""

    def __init__(self, model: PreTrainedModel, policy: EntropyBudget):
        if not adaptive_modules(model):
            raise PonderError("--budget auto needs an adaptive model: convert it first with `ponder convert`")
        self.model, self.policy = model, policy
        self.setting: float | None = None
        self.uses: Counter[float] = Counter()

    def start(self) -> None:
        """A new sequence: its first pass runs at the mean (no prediction precedes it)."""
        self._set(self.policy.mean)

    def after(self, entropy_nats: float) -> None:
        """The entropy of the pass just run: set the next pass's budget."""
        self._set(self.policy.level(entropy_nats))

    def _set(self, level: float) -> None:
        if level != self.setting:
            set_budget(self.model, level)
            self.setting = level
        self.uses[level] += 1


def _grid(mean: float, low: float, spread: float) -> list[float]:
    """Candidate budgets mean + k·STEP, |k·STEP| <= spread, within [low, 1]."""
    steps = round(spread / STEP)
    return [round(mean + k * STEP, 6) for k in range(-steps, steps + 1) if low - 1e-9 <= mean + k * STEP <= 1 + 1e-9]


def allocate(losses: torch.Tensor, grid: list[float], mean: float) -> list[int]:
    """Grid indices, one per bin, whose budgets average to `mean` with the least summed loss: losses [bins, grid].

    Exact: a search over the bins' summed offsets from the mean in grid steps (the mean is on the grid)."""
    bins, _ = losses.shape
    offsets = [round((g - mean) / STEP) for g in grid]
    best: dict[int, tuple[float, list[int]]] = {0: (0.0, [])}
    for b in range(bins):
        grown: dict[int, tuple[float, list[int]]] = {}
        for total, (loss, chosen) in best.items():
            for j, offset in enumerate(offsets):
                key, value = total + offset, loss + float(losses[b, j])
                if key not in grown or value < grown[key][0]:
                    grown[key] = (value, [*chosen, j])
        best = grown
    if 0 not in best:
        raise PonderError(f"no budgets on the grid {grid} average to {mean}")
    return best[0][1]


@torch.inference_mode()
def calibrate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    mean: float,
    *,
    bins: int = 4,
    spread: float = 0.2,
    windows: int = 4,
    window_len: int = 512,
    progress: bool = True,
) -> EntropyBudget:
    """The entropy bins and their budgets for `mean`, from whole-window forwards over `text` (calibration text,
    never evaluation text) at the mean and at each candidate budget."""
    modules = adaptive_modules(model)
    if not modules:
        raise PonderError("--budget auto needs an adaptive model: convert it first with `ponder convert`")
    if bins < 1 or spread < 0:
        raise PonderError(f"bins must be >= 1 and spread >= 0, got {bins} and {spread}")
    low = max(module.min_budget for module in modules)
    mean = check_calibrated(mean, low, modules[0].method)
    grid = _grid(mean, low, spread)
    ids = windows_of(tokenizer(text, add_special_tokens=False).input_ids, window_len, windows)  # [N, L]
    targets = ids[:, 1:].reshape(-1)

    def losses_at(budget: float) -> tuple[torch.Tensor, torch.Tensor]:
        set_budget(model, budget)
        logits = torch.cat([model(row[None]).logits[0, :-1] for row in ids])  # [N·(L-1), V]
        return losses_and_entropy(logits, targets)

    before = [module.budget for module in modules]
    try:
        _, entropies = losses_at(mean)
        # position t's pass is binned by the entropy at t-1; each window's first scored pass has none: the mean's bin
        previous = entropies.view(windows, window_len - 1)[:, :-1]
        edges = torch.quantile(previous.reshape(-1), torch.arange(1, bins) / bins) if bins > 1 else torch.zeros(0)
        position_bins = torch.cat(
            [torch.full((windows, 1), -1), torch.bucketize(previous.contiguous(), edges)], dim=1
        ).reshape(-1)
        table = torch.zeros(bins, len(grid))
        for j, budget in enumerate(tqdm(grid, desc="entropy budget", unit="budget", disable=not progress)):
            losses, _ = losses_at(budget)
            for b in range(bins):
                table[b, j] = losses[position_bins == b].sum()
    finally:
        for module, budget in zip(modules, before, strict=True):
            module.set_budget(budget)
    chosen = allocate(table, grid, mean)
    calibration = {"text_tokens": int(ids.numel()), "windows": windows, "window_len": window_len, "grid": grid,
                   "bin_losses": [[round(float(v), 4) for v in row] for row in table]}  # fmt: skip
    return EntropyBudget(mean, [round(float(e), 6) for e in edges], [grid[j] for j in chosen], calibration)


def _key(model: PreTrainedModel, mean: float, settings: dict) -> str:
    """What a calibration depends on: every module's calibrated state, the mean and the settings."""
    digest = hashlib.sha256(json.dumps({"mean": mean, **settings}, sort_keys=True).encode())
    for module in adaptive_modules(model):
        for name in ("thresholds", "budget_grid"):
            value = getattr(module, name, None)
            if isinstance(value, torch.Tensor):
                digest.update(value.detach().float().contiguous().numpy().tobytes())
        digest.update(module.method.encode())
    return digest.hexdigest()[:20]


def cached_calibration(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str, mean: float, **settings
) -> EntropyBudget:
    """`calibrate`, kept under the ponder cache by the model's calibrated state, the text and the settings."""
    progress = settings.pop("progress", True)
    text_digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = cache_root() / "entropy-budget" / f"{_key(model, mean, settings | {'text': text_digest})}.json"
    if path.exists():
        return EntropyBudget(**json.loads(path.read_text()))
    policy = calibrate(model, tokenizer, text, mean, progress=progress, **settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, policy.as_dict())
    return policy


@dataclass
class StepwiseResult(PerplexityResult):
    levels: dict[str, int] = field(default_factory=dict)
    """Passes run at each budget."""
    window_nlls: list[float] = field(default_factory=list)
    """Mean token loss of each window (paired comparisons between runs on the same windows)."""


@torch.inference_mode()
def stepwise_perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    policy: EntropyBudget | None = None,
    windows: int = 20,
    window_len: int = 1024,
    progress: bool = True,
) -> StepwiseResult:
    """Perplexity by the windowed protocol, scored one token at a time through the KV cache, each pass at the
    budget `policy` sets from the previous prediction's entropy (or at the model's budget: `policy=None`)."""
    from ponder.inference import LeanDecoder

    rows = windows_of(tokenizer(text, add_special_tokens=False).input_ids, window_len, windows)
    runner = LeanDecoder(model, max_len=window_len).runner
    knob = EntropyKnob(model, policy) if policy is not None else None
    modules = adaptive_modules(model)
    budget = modules[0].budget if modules else 1.0
    window_nlls: list[float] = []
    start = time.perf_counter()
    with ComputeMeter(model) as meter:
        for row in tqdm(rows, desc="perplexity (stepwise)", unit="window", disable=not progress):
            runner.reset(1)
            if knob is not None:
                knob.start()
            total = 0.0
            for t in range(window_len - 1):
                logits = runner.forward(row[t : t + 1][None])[0]  # [V]
                loss, uncertainty = losses_and_entropy(logits, row[t + 1])
                total += float(loss)
                if knob is not None and t < window_len - 2:
                    knob.after(float(uncertainty))
            window_nlls.append(total / (window_len - 1))
    report = meter.report
    seconds = time.perf_counter() - start
    scored = windows * (window_len - 1)
    uses = knob.uses if knob is not None else Counter({budget: scored})
    mean_nll = sum(window_nlls) / windows
    return StepwiseResult(
        perplexity=math.exp(mean_nll), nll=mean_nll, tokens=scored, windows=windows, window_len=window_len,
        seconds=seconds, tokens_per_s=scored / seconds, ffn_compute=report.ffn_compute, ffn_bytes=report.ffn_bytes,
        ffn_compute_per_layer=report.per_layer_compute(), levels={f"{k:g}": v for k, v in sorted(uses.items())},
        window_nlls=window_nlls,
    )  # fmt: skip


class EntropyBudgetDecoder:
    """Greedy generation with each pass at the budget `policy` sets from the previous prediction's entropy. Every
    step reads the full head (the entropy needs every logit), where plain lean decoding screens it."""

    def __init__(self, model: PreTrainedModel, policy: EntropyBudget, *, max_len: int = 2048):
        from ponder.inference import LeanDecoder

        self.model = model
        self.knob = EntropyKnob(model, policy)
        self.runner = LeanDecoder(model, max_len=max_len).runner

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        eos_token_id: int | list[int] | None = None,
        on_token=None,
    ) -> torch.Tensor:
        """Prompt [1, T] → prompt and up to `max_new_tokens` greedy tokens [1, T+N], as `LeanDecoder.generate`."""
        if max_new_tokens < 1:
            raise PonderError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise PonderError(
                f"--budget auto decodes one sequence: input_ids must be [1, T], got {tuple(input_ids.shape)}"
            )
        eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
        self.runner.reset(1)
        self.knob.start()
        logits = self.runner.forward(input_ids)[0]  # [V]
        tokens = input_ids[0].tolist()
        for step in range(max_new_tokens):
            token = int(logits.argmax())
            tokens.append(token)
            if on_token is not None:
                on_token(torch.tensor([token]))
            if step == max_new_tokens - 1 or token in eos:
                break
            self.knob.after(float(entropy(logits)))
            logits = self.runner.forward(torch.tensor([[token]]))[0]
        return torch.tensor([tokens])
