"""MoE method: the FFN's neurons permuted into shared + routed experts (contiguous row blocks); a router scores the
routed experts, a policy picks some, and a zero-computation pseudo expert stands in for the ones skipped.

Executors: the masked reference (the specification); grouped for batches (the shared experts over every token,
each routed expert over the tokens that chose it): one C call (`native.moe_grouped`, register-blocked over blocks of
an expert's tokens) for fp32 without gradients, else a PyTorch expert loop where tokens skip most experts and the
masked math where they do not; and for one fp32 token a single C call (router, policy, pseudo expert, the chosen
experts' rows, compensation), which reads no row of a skipped expert.

Shapes: N = tokens, D = hidden, F = neurons, E = routed experts, S = neurons per expert, P = pseudo experts,
G = calibrated budgets, Q = routing policies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ponder.errors import PonderError
from ponder.kernels import layouts, native
from ponder.methods.base import SparseFFN, budget_grid, native_token, scorer, scorer_macs
from ponder.methods.calibrate import fit_regressor
from ponder.methods.moe import routing
from ponder.methods.moe.config import PSEUDO_EXPERTS, MoEConfig
from ponder.methods.moe.experts import expert_order
from ponder.methods.moe.stats import RoutingStats
from ponder.train.tune import budgets_between, inputs_at_each_budget, tune_experts

POLICY_NAMES = list(routing.POLICIES)
GROUPED_BELOW = 0.2
"""Without the C batch kernel, batches run PyTorch's expert loop when tokens choose fewer than this share of the
routed experts on average, else the masked dense math: 24-neuron experts make GEMMs too narrow for BLAS here (over
512 tokens of SmolLM2 the loop ran at 0.50× / 0.64× / 0.79× / 1.14× of the dense FFN with 71 / 44 / 27 / 15 % of the
experts, benchmarks/experiments/moe_prefill.py)."""
PSEUDO_KIND = {"zero": 0, "copy": 1, "constant": 2}  # the C kernel's codes
TUNED_COPIES = ("gate_p", "up_p", "down_t")
"""The permuted expert weights budgets below 1 run; after the end-to-end phase they are saved as `tuned_<name>`."""


class MoEFFN(SparseFFN):
    method = "moe"

    def __init__(self, *, view, activation: str, config: MoEConfig):
        if view.d_ff % config.experts:
            raise PonderError(f"experts={config.experts} does not divide the FFN width {view.d_ff}: choose a divisor")
        super().__init__(
            view=view,
            activation=activation,
            budget_grid=budget_grid(config.min_budget),
            threshold_shape=(len(POLICY_NAMES),),  # one knob per policy and budget: [G, Q]
        )
        self.config = config
        self.size = view.d_ff // config.experts
        self.shared_rows = config.shared_experts * self.size
        self.routed = config.experts - config.shared_experts
        self.set_policy(config.policy)
        self.router = scorer(view, config.rank, self.routed, name="router", min_budget=config.min_budget)
        for name in TUNED_COPIES:  # None until tuned (or loaded from a tuned model)
            self.register_buffer(f"tuned_{name}", None)
        self.register_load_state_dict_pre_hook(MoEFFN._make_room_for_tuned)
        self.use_neuron_order()
        D = view.d_model
        # Pseudo experts in config order; 'zero' adds nothing, the others add a per-expert stand-in (row E: total).
        self.pseudo = [p for p in PSEUDO_EXPERTS if p in config.pseudo_experts]
        self.register_buffer("pseudo_kinds", torch.tensor([PSEUDO_KIND[p] for p in self.pseudo], dtype=torch.int32))
        for name in ("copy", "constant"):
            self.register_buffer(f"{name}_rows", torch.zeros(self.routed + 1, D) if name in self.pseudo else None)
        self.chooser = nn.Linear(D, len(self.pseudo)).requires_grad_(False) if len(self.pseudo) > 1 else None
        self.stats: RoutingStats | None = None
        self.relaxed: list[torch.Tensor] | None = None  # set while the routers train: each forward's expert share
        # Plain numbers for the decode step's accounting (no tensor work per token).
        self._compensates = [PSEUDO_KIND[p] > 0 for p in self.pseudo]
        self._d_model = D
        self._expert_macs = self.size * self.neuron_macs()
        chooser = 0 if self.chooser is None else self.chooser.weight.numel()
        self._fixed_macs = scorer_macs(self.router) + chooser + self.shared_rows * self.neuron_macs()
        fixed = self.fixed_macs() / self.dense_macs()
        if fixed >= config.min_budget:
            raise PonderError(
                f"shared experts and router cost {fixed:.2f} of the FFN, more than min_budget {config.min_budget}: "
                "use fewer shared experts or a higher --min-budget"
            )

    # --- costs (weight MACs per token; the compensation reads D values per chosen expert, plus the total) --------
    def neuron_macs(self) -> int:
        return self.dense_macs() // self.up.shape[0]

    def fixed_macs(self) -> int:
        """Router, chooser and shared experts: what every token pays."""
        return self._fixed_macs

    def expert_macs(self) -> int:
        return self._expert_macs

    def token_macs(self, chosen: torch.Tensor, option: torch.Tensor) -> torch.Tensor:
        """MACs of each token: [N] (chosen: [N, E] bool; option: [N] pseudo expert index)."""
        experts = chosen.sum(1)  # [N]
        if not len(self.pseudo):
            return self.fixed_macs() + experts * self.expert_macs()
        compensating = self.pseudo_kinds[option] > 0  # [N]
        return self.fixed_macs() + experts * self.expert_macs() + compensating * (experts + 1) * self.up.shape[1]

    def _count_routed(self, chosen: torch.Tensor, option: torch.Tensor) -> None:
        self._count(self.token_macs(chosen, option))
        if self.stats is not None:
            self.stats.add(chosen, option, self.pseudo)

    def expert_fraction(self, budget: torch.Tensor) -> torch.Tensor:
        """Share of routed experts a budget pays for (compensation counted as if every token used it)."""
        D = self.up.shape[1]
        compensating = int(len(self.pseudo) > 0 and self.pseudo != ["zero"])
        fixed = self.fixed_macs() + compensating * D
        per_expert = self.expert_macs() + compensating * D
        return ((budget * self.dense_macs() - fixed) / (self.routed * per_expert)).clamp(0, 1)

    # --- calibration --------------------------------------------------------------------------------------------
    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Each routed expert's output for x [N, D]: [N, E, D]."""
        h = self.neurons(x, slice(self.shared_rows, None)).view(x.shape[0], self.routed, self.size)  # [N, E, S]
        down = self.down_t[self.shared_rows :].view(self.routed, self.size, -1)  # [E, S, D]
        return torch.einsum("nes,esd->ned", h, down)

    def calibrate(self, inputs: torch.Tensor) -> None:
        config = self.config
        h = torch.cat([self.intermediate(chunk) for chunk in inputs.split(2048)])  # [N, F], dense order
        weights = torch.cat([w for w in (self.gate, self.up) if w is not None], dim=1)  # [F, 2D]
        order = expert_order(
            h, self.down, weights, experts=config.experts, shared=config.shared_experts,
            clustering=config.clustering, seed=config.seed,
        )  # fmt: skip
        del h
        self.order.copy_(order)
        self.arrange()
        # D2DMoE: the router regresses each expert's output norm (scaled to unit spread for Adam).
        targets = torch.cat([self.expert_outputs(chunk).norm(dim=-1) for chunk in inputs.split(1024)])  # [N, E]
        fit_regressor(self.router, inputs, targets / targets.std(), steps=config.steps, lr=config.lr, seed=config.seed)
        scores = self.router(inputs)  # [N, E]
        if len(self.pseudo) and self.pseudo != ["zero"]:  # fitted first: the chooser's picks change the cost
            fraction = float(self.expert_fraction(torch.tensor(config.fit_budget)))
            knob = routing.calibrate_knob(config.policy, scores, fraction)
            self._fit_pseudo(inputs, routing.route(config.policy, scores, knob))
        option = self.route_pseudo(inputs)  # [N]
        # Budget 1 runs dense, but its knob still bounds the interpolation above the last grid point below it, so it
        # is calibrated like the others: "every expert" there counted the router and pseudo experts on top of the
        # whole FFN (1.15 at b = 0.97 on a tiny model).
        self.calibrate_knobs(scores, option)

    def calibrate_knobs(self, scores: torch.Tensor, option: torch.Tensor, budgets: list[int] | None = None) -> None:
        """Every policy's knob at the grid budgets numbered `budgets` (default: all) from calibration tokens' router
        scores [N, E] and pseudo options [N], counting what each token would cost."""

        def cost(chosen: torch.Tensor) -> float:
            return float(self.token_macs(chosen, option).double().mean()) / self.dense_macs()

        grid = self.budget_grid.tolist()
        for q, policy in enumerate(POLICY_NAMES):
            for g in range(len(grid)) if budgets is None else budgets:
                self.thresholds[g, q] = routing.calibrate_knob(policy, scores, grid[g], cost=cost)
        self._kernel = None  # the C kernel holds the router it was built from

    def _fit_pseudo(self, inputs: torch.Tensor, chosen: torch.Tensor) -> None:
        """Per skipped expert e: its mean output when skipped (constant) and the per-channel scale of x that best
        predicts it (copy, least squares), fitted on the calibration tokens that skip it at `fit_budget`; then a
        linear chooser that predicts, per token, the log error each pseudo expert leaves (MoE++ adapted to a
        converted model: the pseudo experts stand in for the skipped experts instead of being trained with them)."""
        D = inputs.shape[1]
        sums = {name: torch.zeros(self.routed, D) for name in ("copy_num", "copy_den", "constant")}
        skipped_count = torch.zeros(self.routed)
        for x, c in zip(inputs.split(1024), chosen.split(1024), strict=True):
            skipped = (~c).float()  # [n, E]
            y = self.expert_outputs(x)  # [n, E, D]
            sums["constant"] += torch.einsum("ne,ned->ed", skipped, y)
            sums["copy_num"] += torch.einsum("ne,ned,nd->ed", skipped, y, x)
            sums["copy_den"] += skipped.T @ x.square()
            skipped_count += skipped.sum(0)
        rows = {
            "constant": sums["constant"] / skipped_count.clamp_min(1)[:, None],
            "copy": sums["copy_num"] / sums["copy_den"].clamp_min(1e-6),
        }
        for name in ("copy", "constant"):
            if name in self.pseudo:
                buffer = getattr(self, f"{name}_rows")
                buffer[:-1] = rows[name]
                buffer[-1] = rows[name].sum(0)
        if self.chooser is None:
            return
        errors = []
        for x, c in zip(inputs.split(1024), chosen.split(1024), strict=True):
            remainder = torch.einsum("ne,ned->nd", (~c).float(), self.expert_outputs(x))  # [n, D]
            options = [self._stand_in(name, x, c) for name in self.pseudo]
            errors.append(torch.stack([(remainder - o).norm(dim=1) for o in options], dim=1))  # [n, P]
        targets = torch.cat(errors).clamp_min(1e-6).log()
        fit_regressor(self.chooser, inputs, targets, steps=self.config.steps, lr=self.config.lr, seed=self.config.seed)

    # --- policy -------------------------------------------------------------------------------------------------
    def start_routing_stats(self) -> None:
        self.stats = RoutingStats()

    def routing_stats(self) -> dict | None:
        stats, self.stats = self.stats, None
        return None if stats is None else stats.summary()

    def set_policy(self, policy: str) -> None:
        self.policy = routing.check_policy(policy)
        self._policy_index = POLICY_NAMES.index(policy)

    def knob(self) -> float:
        return self.threshold_values[self._policy_index]

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen experts [N, E] bool, pseudo option [N]) for x [N, D]."""
        return routing.route(self.policy, self.router(x), self.knob()), self.route_pseudo(x)

    def route_pseudo(self, x: torch.Tensor) -> torch.Tensor:
        """The pseudo expert of each token [N]: the one whose predicted error is smallest."""
        if self.chooser is None:
            return torch.zeros(x.shape[0], dtype=torch.long)
        return self.chooser(x).argmin(dim=1)

    def _stand_in(self, name: str, x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """A pseudo expert's output for the experts each token skips: [N, D]."""
        if name == "zero":
            return torch.zeros_like(x)
        rows = getattr(self, f"{name}_rows")  # [E + 1, D]
        skipped_sum = rows[-1] - chosen.to(rows.dtype) @ rows[:-1]  # the total minus the chosen experts' rows
        return skipped_sum * x if name == "copy" else skipped_sum

    def compensation(
        self, x: torch.Tensor, chosen: torch.Tensor, option: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Each token's pseudo-expert stand-in [N, D] for the experts it skipped, added into `out` if given.
        Computed for every token and masked: cheaper than indexing the tokens of each option."""
        out = torch.zeros_like(x) if out is None else out
        for index, name in enumerate(self.pseudo):
            if name == "zero":
                continue
            uses = (option == index).to(x.dtype)[:, None]  # [N, 1]
            out.addcmul_(self._stand_in(name, x, chosen), uses)
        return out

    # --- executors ----------------------------------------------------------------------------------------------
    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        chosen, option = self.route(x)
        self._count_routed(chosen, option)
        return self._masked(x, chosen, option)

    def _masked(self, x: torch.Tensor, chosen: torch.Tensor, option: torch.Tensor) -> torch.Tensor:
        """Every neuron computed, the skipped ones masked out: the specification. `chosen` [N, E] is bool, or a
        float 0/1 mask that carries a gradient (`_relaxed`)."""
        shared = torch.ones(x.shape[0], self.shared_rows, dtype=chosen.dtype)
        mask = torch.cat([shared, chosen.repeat_interleave(self.size, dim=1)], dim=1)  # [N, F]
        out = (self.neurons(x, slice(None)) * mask) @ self.down_t
        return self.finish(self.compensation(x, chosen, option, out=out))

    def use_fast(self, x: torch.Tensor) -> bool:
        return x.shape[0] > 1 or native_token(x)

    def fast_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.relaxed is not None:
            return self._relaxed(x)
        if x.shape[0] == 1:
            return self._decode(x)
        chosen, option = self.route(x)
        self._count_routed(chosen, option)
        if self._panels_for(x) is None and chosen.float().mean() > GROUPED_BELOW:
            return self._masked(x, chosen, option)  # most experts run: PyTorch's dense GEMMs beat its expert loop
        return self._grouped(x, chosen, option)

    def _relaxed(self, x: torch.Tensor) -> torch.Tensor:
        """`_masked` for training the router (config.tune_router_lr): the threshold policy's hard choices forward,
        sigmoid(score + knob) backward (straight-through), so the loss reaches every expert's score, run or
        skipped, through its output and its stand-in's. Appends the share of routed experts run (with the same
        gradient) to `relaxed`."""
        scores = self.router(x)  # [N, E]
        soft = torch.sigmoid(scores + self.knob())
        chosen = routing.threshold(scores.detach(), self.knob())
        mask = chosen.to(soft.dtype) + soft - soft.detach()
        option = self.route_pseudo(x)
        self._count_routed(chosen, option)
        self.relaxed.append(mask.mean())
        return self._masked(x, mask, option)

    def _grouped(self, x: torch.Tensor, chosen: torch.Tensor, option: torch.Tensor) -> torch.Tensor:
        """The shared rows for every token, then each expert over the tokens that chose it: one C call where it
        applies (`native.moe_grouped`), else an expert loop in PyTorch."""
        panels = self._panels_for(x)
        if panels is None:
            out = self._grouped_torch(x, chosen)
        else:
            pairs = chosen.t().nonzero()  # [T, 2]: (expert, token), by expert then token
            offsets = torch.zeros(self.routed + 1, dtype=torch.int64)
            torch.cumsum(chosen.sum(0), 0, out=offsets[1:])
            out = native.moe_grouped(
                x.contiguous(), *panels, self.down_t, size=self.size, glu=self.gate_p is not None,
                activation=self.activation, shared=self.config.shared_experts, offsets=offsets,
                tokens=pairs[:, 1].contiguous(),
            )  # fmt: skip
        return self.finish(self.compensation(x, chosen, option, out=out))

    def _grouped_torch(self, x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        shared = slice(0, self.shared_rows)
        out = self.neurons(x, shared) @ self.down_t[shared]  # [N, D]
        for expert in chosen.any(0).nonzero().flatten().tolist():
            tokens = chosen[:, expert].nonzero().flatten()  # [n_e]
            rows = slice(self.shared_rows + expert * self.size, self.shared_rows + (expert + 1) * self.size)
            out.index_add_(0, tokens, self.neurons(x[tokens], rows) @ self.down_t[rows])
        return out

    def _panels_for(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`layouts.moe_panels` of the current expert weights for a batch x, or None where the C path does not
        apply: no kernels, not fp32, an activation it lacks, gradients wanted, or experts wider than it takes.
        Built on first use and rebuilt when a weight changed (tuning steps change them in place)."""
        weights = (self.gate_p, self.up_p, self.gate_bias_p, self.up_bias_p)
        wants_grad = torch.is_grad_enabled() and (x.requires_grad or self.up_p.requires_grad)
        if wants_grad or x.dtype != torch.float32 or native.library() is None:
            return None
        if self.activation not in native.ACTIVATIONS or self.up_p.dtype != torch.float32:
            return None
        key = tuple(None if w is None else (w.data_ptr(), -1 if w.is_inference() else w._version) for w in weights)
        if self._panels is None or self._panels[0] != key:
            self._panels = (key, layouts.moe_panels(*weights[:2], self.size, *weights[2:]))
        return self._panels[1]

    @torch.no_grad()
    def arrange(self) -> None:
        super().arrange()
        if self.tuned_up_p is not None:  # tuned experts replace the copies of the dense rows
            for name in TUNED_COPIES:
                self.register_buffer(name, getattr(self, f"tuned_{name}"), persistent=False)
        self._kernel = self._panels = None  # they were made from the replaced tensors

    # --- the end-to-end phase (config.tune_steps) -----------------------------------------------------------------
    def tunable(self) -> dict[str, torch.Tensor]:
        """What the end-to-end phase trains: the experts' permuted weights and the pseudo experts' rows."""
        names = (*TUNED_COPIES, "copy_rows", "constant_rows")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def keep_tuned(self) -> None:
        """Save the trained copies with the model from now on (the dense weights stay as they were)."""
        for name in TUNED_COPIES:
            copy = getattr(self, name)
            self.register_buffer(f"tuned_{name}", None if copy is None else copy.detach())
        self._kernel = self._panels = None

    @staticmethod
    def _make_room_for_tuned(module: MoEFFN, state_dict: dict, prefix: str, *_) -> None:
        """Loading a tuned model into a fresh module: create the `tuned_*` buffers the state dict fills."""
        for name in TUNED_COPIES:
            saved = state_dict.get(f"{prefix}tuned_{name}")
            if saved is not None and getattr(module, f"tuned_{name}") is None:
                module.register_buffer(f"tuned_{name}", torch.empty_like(saved))

    @staticmethod
    def refine_jointly(
        modules: list[MoEFFN], model: nn.Module, windows: torch.Tensor, pool: Callable[[], torch.Tensor], *,
        work: Path, progress: bool = False,
    ) -> None:  # fmt: skip
        """After every layer is calibrated: if config.tune_steps, the end-to-end phase on windows drawn from
        `pool()` (all the calibration text), budgets from [tune_min_budget, tune_max_budget]; then every knob
        again, in closed loop on the calibration `windows` (`knobs_in_closed_loop`)."""
        config = modules[0].config
        if not config.tune_steps:
            return
        budgets = budgets_between(modules[0].budget_grid, config.tune_min_budget, config.tune_max_budget)
        tune_experts(
            model, modules, pool(), budgets, steps=config.tune_steps, seed=config.seed, lr=config.tune_lr, work=work,
            decay=config.tune_decay, precision=config.tune_precision, router_lr=config.tune_router_lr,
            progress=progress,
        )  # fmt: skip
        for module in modules:
            module.keep_tuned()
        MoEFFN.knobs_in_closed_loop(modules, model, windows, progress=progress)

    @staticmethod
    @torch.no_grad()
    def knobs_in_closed_loop(
        modules: list[MoEFFN], model: nn.Module, windows: torch.Tensor, *, progress: bool = False
    ) -> None:
        """Calibrate every knob again where the adaptive model itself runs: per grid budget below 1, run the model
        at that budget on `windows`, capture what each layer receives, and set that budget's knobs on it.

        `calibrate` sets the knobs on the dense model's FFN inputs. Tuned experts and routers see a residual stream
        that moved away from it: on SmolLM2 with routers trained, b = 0.5 spent 0.477 of the FFN on the calibration
        text (0.495 after this step). The stream is captured under the configured policy and every policy's knobs set
        on it. One pass over all of the calibration text: at the same knobs its two halves differ in spending by up
        to 0.024 (benchmarks/results/moe-closed-loop-s20.txt)."""
        before = [module.budget for module in modules]
        walk = inputs_at_each_budget(
            model, modules, windows, lambda module, _, budget: module.set_budget(budget), desc="moe knobs",
            progress=progress,
        )  # fmt: skip
        for index, inputs in walk:
            for module, x in zip(modules, inputs, strict=True):
                module.calibrate_knobs(module.router(x), module.route_pseudo(x), [index])
        for module, budget in zip(modules, before, strict=True):
            module.thresholds.copy_(module.thresholds.cummax(0).values)  # a lower budget never runs more experts
            module.set_budget(budget)

    def token_forward(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The lean decoder's path: the dense kernel at budget 1, else `moe_ffn`, without `rows_forward`'s dispatch."""
        dense = self.dense_token()
        if dense is None:
            return super().token_forward()
        bias = self.down_bias

        def run(x: torch.Tensor) -> torch.Tensor:
            if self.runs_dense():
                return dense(x)
            out = self._token(x)
            return out if bias is None else out.add_(bias)

        return run

    def _decode(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.activation not in native.ACTIVATIONS:
            return None
        return self.finish(self._token(x[0].contiguous())[None])

    def _token(self, x: torch.Tensor) -> torch.Tensor:
        """One contiguous fp32 token x [D] through `moe_ffn` (built on first use), counted: [D] without down bias."""
        if self._kernel is None:
            first, second = self.router[0], self.router[2]
            self._kernel = native.MoEKernel(
                (first.weight, first.bias, second.weight, second.bias),
                None if self.chooser is None else (self.chooser.weight, self.chooser.bias),
                self.pseudo_kinds if len(self.pseudo) else None,
                (self.copy_rows, self.constant_rows),
                (self.gate_p, self.up_p, self.down_t, self.gate_bias_p, self.up_bias_p),
                shared=self.shared_rows,
                size=self.size,
                activation=self.activation,
            )
        out, n, option = self._kernel(x, self._policy_index, self.knob())
        if self.stats is not None:
            chosen = torch.zeros(1, self.routed, dtype=torch.bool)
            chosen[0, self._kernel.chosen[:n]] = True
            self.stats.add(chosen, torch.tensor([option]), self.pseudo)
        compensating = self._compensates[option] if self.pseudo else False
        self._count(self._fixed_macs + n * self._expert_macs + compensating * (n + 1) * self._d_model)
        return out

    def extra_repr(self) -> str:
        experts = f"experts={self.config.experts} ({self.config.shared_experts} shared)"
        return f"{super().extra_repr()}, {experts}, policy={self.policy}"
