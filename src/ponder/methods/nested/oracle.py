"""Duo-LLM's question for a nested-width model: how far is its trained router from the best routes?

For a text and a budget, search per-(token, layer) routes among {skip, small, big} (0 learners, the first
`small` fraction of them, all) that minimise the loss, then run the router at the same achieved compute and
compare perplexity and where each spends compute (per layer, per token difficulty, per token kind).

The search, in two passes:
1. independent: for each layer l and each cheaper option o, run the text with only layer l switched to o (every
   token; the other layers dense) and take each token's change of its own next-token loss, delta[t, l, o]. One
   price for compute across all layers (a Lagrangian): each (t, l) takes argmin_o delta + price * cost(o), the
   price bisected so the mean cost is the budget. This decides how much each layer spends.
2. sequential (greedy over layers): layer by layer, with the routes already chosen below and pass 1's routes
   above, measure delta again for every option and re-choose each token's option at pass 1's spend for that layer.
The reported perplexities come from real forward passes over the routes found, so they are achievable: an upper
bound on the loss of the truly best routes. Approximations: a token's delta is measured with every token switched
together, and only its own next-token loss is charged to it (not its effect on later tokens through attention).

Shapes: T = tokens, Y = layers, P = options (skip, small, big).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ponder.adaptive import adaptive_modules, get_budget, set_budget
from ponder.data import first_tokens
from ponder.errors import DataError, PonderError
from ponder.methods.nested.layer import NestedFFN
from ponder.state import method_name
from ponder.stats import ComputeMeter, ComputeTrace

KINDS = ("word start", "word piece", "punctuation/digit", "newline")


def _routable(model: PreTrainedModel) -> list:
    modules = adaptive_modules(model)
    if not modules or not all(isinstance(m, NestedFFN) for m in modules):
        method = method_name(model)
        raise PonderError(f"the oracle needs nested widths per token; a {method} model has none: use a nested model")
    return modules


@contextmanager
def forced_routes(modules: list, learners: torch.Tensor) -> Iterator[None]:
    """Every token runs `learners[t, l]` learners in layer l ([T, Y]) while the block runs; the router is off."""
    try:
        for index, module in enumerate(modules):
            module.forced_learners = learners[:, index].contiguous()
        yield
    finally:
        for module in modules:
            module.forced_learners = None


@torch.inference_mode()
def token_losses(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
    """Each position's loss on the next token: [T - 1] for ids [1, T]."""
    logits = model(ids).logits[0, :-1].float()  # [T-1, V]
    return torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")


def choose(delta: torch.Tensor, costs: torch.Tensor, budget: float) -> torch.Tensor:
    """Option per (token, layer) minimising delta + price * cost with the price at which the mean cost is at most
    `budget`: delta [T, Y, P], costs [P] ascending → option indices [T, Y]."""

    def pick(price: float) -> torch.Tensor:
        return (delta + price * costs).argmin(-1)  # [T, Y]

    def spend(price: float) -> float:
        return float(costs[pick(price)].mean())

    if spend(0.0) <= budget:
        return pick(0.0)
    low, high = 0.0, 1.0
    while spend(high) > budget and high < 1e12:
        low, high = high, high * 4
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if spend(middle) > budget else (low, middle)
    return pick(high)


def token_kind(piece: str) -> str:
    if "\n" in piece:
        return "newline"
    if not any(c.isalpha() for c in piece):
        return "punctuation/digit"
    return "word start" if piece[:1].isspace() else "word piece"


def _ppl(losses: torch.Tensor) -> float:
    return math.exp(float(losses.mean()))


def route_oracle(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    budget: float,
    tokens: int = 512,
    small: float = 0.25,
    progress: bool = True,
) -> dict:
    """Search routes at `budget` on the first `tokens` tokens of `text`; compare with the router (module doc)."""
    if not 0.0 < small < 1.0:
        raise PonderError(f"small={small} must be a fraction of the learners in (0, 1)")
    modules = _routable(model)
    ids = first_tokens(tokenizer, text, tokens)
    if len(ids) < 8:
        raise DataError(f"the text has {len(ids)} tokens: the oracle needs at least 8")
    ids = torch.tensor([ids])
    learners = modules[0].learners
    options = torch.tensor([0, max(1, round(small * learners)), learners])  # skip, small, big
    costs = options.double() / learners
    T, Y, P = ids.shape[1], len(modules), len(options)
    saved_budget = get_budget(model)
    bar = tqdm(total=1 + Y * (P - 1) + Y * P + 2, desc="oracle forwards", disable=not progress)

    def losses_with(routes: torch.Tensor) -> torch.Tensor:  # routes: option indices [T, Y]
        with forced_routes(modules, options[routes]):
            out = token_losses(model, ids)
        bar.update()
        return torch.cat([out, out.new_zeros(1)])  # the last position predicts nothing: [T]

    big = torch.full((T, Y), P - 1)
    dense = losses_with(big)
    # pass 1: every (layer, cheaper option) alone
    delta = torch.zeros(T, Y, P, dtype=torch.float64)
    for layer in range(Y):
        for option in range(P - 1):
            routes = big.clone()
            routes[:, layer] = option
            delta[:, layer, option] = (losses_with(routes) - dense).double()
    independent = choose(delta, costs, budget)  # [T, Y]
    layer_spend = costs[independent].mean(0)  # [Y]
    # pass 2: greedy over layers, each at pass 1's spend
    routes = independent.clone()
    for layer in range(Y):
        trial = torch.zeros(T, 1, P, dtype=torch.float64)
        for option in range(P):
            routes[:, layer] = option
            trial[:, 0, option] = losses_with(routes).double()
        routes[:, layer] = choose(trial - trial[:, :, -1:], costs, float(layer_spend[layer]))[:, 0]
    oracle = _measure(model, ids, modules, options[routes])
    oracle_independent = _ppl(losses_with(independent)[:-1])
    gate = _match_compute(model, ids, oracle["ffn_compute"], progress)
    bar.update()
    bar.close()
    set_budget(model, saved_budget)
    dense_losses = dense[:-1]
    pieces = [tokenizer.decode([i]) for i in ids[0].tolist()]
    return {
        "budget": budget,
        "tokens": T,
        "options": {"skip": 0, "small": int(options[1]), "big": learners},
        "dense_perplexity": _ppl(dense_losses),
        "oracle_perplexity": oracle["perplexity"],
        "oracle_independent_perplexity": oracle_independent,
        "oracle_ffn_compute": oracle["ffn_compute"],
        "oracle_route_share": {
            name: float((routes == index).double().mean()) for index, name in enumerate(("skip", "small", "big"))
        },
        "gate_perplexity": gate["perplexity"],
        "gate_ffn_compute": gate["ffn_compute"],
        "gate_budget": gate["budget"],
        "layers": [
            {
                "layer": y,
                "oracle": float(oracle["per_token"][:, y].mean()),
                "gate": float(gate["per_token"][:, y].mean()),
            }
            for y in range(Y)
        ],
        "by_difficulty": _by_difficulty(dense_losses, oracle["per_token"][:-1], gate["per_token"][:-1]),
        "by_kind": _by_kind(pieces, oracle["per_token"], gate["per_token"]),
    }


def _measure(model: PreTrainedModel, ids: torch.Tensor, modules: list, learners: torch.Tensor | None) -> dict:
    """Perplexity, achieved compute and per-token compute [T, Y] of one real forward (routes forced or routed)."""
    with ComputeMeter(model) as meter, ComputeTrace(model) as trace:
        if learners is None:
            losses = token_losses(model, ids)
        else:
            with forced_routes(modules, learners):
                losses = token_losses(model, ids)
    return {"perplexity": _ppl(losses), "ffn_compute": meter.report.ffn_compute, "per_token": trace.pop()}


def _match_compute(model: PreTrainedModel, ids: torch.Tensor, target: float, progress: bool) -> dict:
    """The router at the budget whose achieved compute on this text is closest to `target` (bisection)."""
    modules = adaptive_modules(model)
    low, high = modules[0].min_budget, 1.0
    best = None
    for _ in tqdm(range(8), desc="match the router's compute", disable=not progress, leave=False):
        middle = (low + high) / 2
        set_budget(model, middle)
        result = {**_measure(model, ids, modules, None), "budget": middle}
        if best is None or abs(result["ffn_compute"] - target) < abs(best["ffn_compute"] - target):
            best = result
        low, high = (middle, high) if result["ffn_compute"] < target else (low, middle)
    return best


def _by_difficulty(dense_losses: torch.Tensor, oracle: torch.Tensor, gate: torch.Tensor) -> list[dict]:
    """Mean compute per token over layers, by quartile of the dense model's loss on the next token."""
    order = dense_losses.argsort()
    rows = []
    for quartile, part in enumerate(order.chunk(4)):
        rows.append(
            {
                "quartile": quartile + 1,
                "dense_loss": float(dense_losses[part].mean()),
                "oracle": float(oracle[part].mean()),
                "gate": float(gate[part].mean()),
            }
        )
    return rows


def _by_kind(pieces: list[str], oracle: torch.Tensor, gate: torch.Tensor) -> list[dict]:
    kinds = [token_kind(piece) for piece in pieces]
    rows = []
    for kind in KINDS:
        mask = torch.tensor([k == kind for k in kinds])
        if mask.any():
            rows.append(
                {
                    "kind": kind,
                    "tokens": int(mask.sum()),
                    "oracle": float(oracle[mask].mean()),
                    "gate": float(gate[mask].mean()),
                }
            )
    return rows
