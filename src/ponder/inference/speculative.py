"""Lossless speculative decoding: cheap drafts, verified by the full model in one pass.

A draft proposes k tokens after the last accepted one; the target (the model at its full budget) appends the last
token and the k drafts in one forward, which reads each weight once for all k+1 positions, and returns every
position's logits. The longest prefix of drafts the target agrees with is kept, plus the target's own next token,
so every cycle emits between 1 and k+1 tokens and the text is the target's:

- greedy: a draft is kept while it equals the target's argmax, so the tokens are exactly greedy decoding's;
- sampling: the drafts are point masses (each draft is one token, not a distribution), so standard rejection
  sampling (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding", section 2.3) keeps
  draft token d with probability p(d) and otherwise draws from p with d removed, renormalized: each emitted token
  is distributed as the target's own sampling distribution p (temperature and nucleus applied).

Rejected positions roll back by moving the target's position: its caches are positional, and the next pass
overwrites whatever the rejected drafts wrote there.

Drafts:
- `PromptLookup`: the tokens that followed the most recent earlier occurrence of the last n tokens (n from
  `max_ngram` down to 1) in the prompt and the text so far (Saxena 2023, prompt lookup decoding). No model runs,
  so a draft costs nothing; it pays where the output repeats its context (summaries, edits, extraction, code).
- `LayerDraft` (quantized runtime): the same checkpoint through a subset of its layers, with the shared head
  (self-speculative decoding: Zhang et al. 2023, "Draft & Verify"; LayerSkip's early exit when the subset is a
  prefix). It shares the target's KV cache: its writes at draft positions are overwritten by the verify pass.

Drafts are not free to verify on a CPU: a pass over several tokens costs more than a pass over one (see
`DraftLength`), so each cycle verifies the number of drafts, up to `max_draft` and possibly none, that maximizes the
expected tokens per second from the acceptance and pass times measured as decoding goes.

Shapes: T = tokens appended in one call, V = vocabulary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ponder.errors import PonderError
from ponder.inference.sampling import Sampling, token_probabilities


class Target(Protocol):
    """A decoder over one sequence that can append several tokens at once and go back."""

    position: int
    """Tokens in the cache."""

    def append(self, ids: list[int]) -> torch.Tensor:
        """Logits [T, V] of every appended position (valid until the next call)."""

    def rewind(self, position: int) -> None:
        """Forget every cached position from `position` on."""

    def greedy_next(self, token: int) -> int:
        """Append one token; the greedy next token (through the decoder's own fastest one-token step)."""


class Draft(Protocol):
    costly: bool
    """Whether drafting runs a model (its k is then chosen before drafting, its time counted in the cycle's)."""
    source: Hashable
    """What the last proposal came from (acceptance is measured per source: a 4-token match beats a 2-token one)."""

    def propose(self, tokens: list[int], target: Target, k: int) -> list[int]:
        """Up to k tokens likely to follow `tokens` (all accepted so far; the last not yet in the target's cache)."""


class QuantTarget:
    """The quantized runtime's decoder (`QuantDecoder` or `AdaptiveQuantDecoder`) as a verifier."""

    def __init__(self, decoder):
        self.decoder = decoder

    @property
    def position(self) -> int:
        return self.decoder.position

    def append(self, ids: list[int]) -> torch.Tensor:
        return self.decoder._run(torch.tensor(ids), all_logits=True)

    def rewind(self, position: int) -> None:
        self.decoder.position = position

    def greedy_next(self, token: int) -> int:
        return self.decoder.next_token(torch.tensor([token]))


class LeanTarget:
    """The lean fp32 decoder's runner (`LeanDecoder(...).runner`) as a verifier, batch 1."""

    def __init__(self, runner):
        self.runner = runner

    @property
    def position(self) -> int:
        return self.runner.position

    def append(self, ids: list[int]) -> torch.Tensor:
        return self.runner.forward(torch.tensor([ids]), every_position=True)[0]

    def rewind(self, position: int) -> None:
        self.runner.position = position

    def greedy_next(self, token: int) -> int:
        return int(self.runner.next_token(torch.tensor([[token]]))[0])


def target_for(decoder) -> Target:
    """The verifier view of a decoder: the quantized runtime's or the lean decoder's native runner."""
    from ponder.inference.decode import LeanDecoder, RopeRunner
    from ponder.quant.runtime import QuantDecoder

    if isinstance(decoder, QuantDecoder):
        return QuantTarget(decoder)
    if isinstance(decoder, LeanDecoder) and isinstance(decoder.runner, RopeRunner):
        return LeanTarget(decoder.runner)
    raise PonderError("speculative decoding runs on the lean decoder of a Llama-style model or the quantized runtime")


class PromptLookup:
    """Drafts copied from the context: what followed the latest earlier match of the last n tokens."""

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
        if not 1 <= min_ngram <= max_ngram:
            raise PonderError(f"n-gram lengths need 1 <= min_ngram <= max_ngram, got {min_ngram} and {max_ngram}")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self._seen: dict[tuple[int, ...], int] = {}  # n-gram -> where its latest indexed occurrence ends
        self._tokens: list[int] | None = None  # the sequence indexed (the decoder's list, which grows)
        self._indexed = 0

    def _index(self, tokens: list[int]) -> None:
        """Index the n-grams ending before the last token (so the suffix finds an earlier occurrence)."""
        if tokens is not self._tokens or len(tokens) < self._indexed:  # a new sequence
            self._seen, self._tokens, self._indexed = {}, tokens, 1
        for end in range(self._indexed, len(tokens)):
            for n in range(1, min(self.max_ngram, end) + 1):
                self._seen[tuple(tokens[end - n : end])] = end
        self._indexed = max(self._indexed, len(tokens))

    costly = False

    def propose(self, tokens: list[int], target: Target, k: int) -> list[int]:
        self._index(tokens)
        self.source = 0
        for n in range(min(self.max_ngram, len(tokens)), self.min_ngram - 1, -1):
            end = self._seen.get(tuple(tokens[-n:]))
            if end is not None:
                self.source = n  # the length of the match
                return tokens[end : end + k]
        return []


class LayerDraft:
    """The quantized model through a subset of its layers and the shared head, greedy: a self-speculative draft."""

    costly = True
    source = "layers"

    def __init__(self, decoder, layers: list[int]):
        self.decoder = decoder
        self.layers = layers
        self.description = decoder.description_with_layers(layers)

    def propose(self, tokens: list[int], target: Target, k: int) -> list[int]:
        start, drafts = target.position, []
        token = tokens[-1]
        for _ in range(k):
            token = self.decoder.draft_step(self.description, token)
            drafts.append(token)
        target.rewind(start)
        return drafts


class DraftLength:
    """How many drafts a cycle verifies: the k that maximizes expected tokens per second of the cycle.

    A pass over T tokens is not free on a CPU (a small quantized model is compute-bound: on this machine a pass of 2
    tokens costs about 1.4 passes of 1), so a draft pays only when it is likely kept. Kept tokens of k drafts, each
    kept with probability a after the ones before it, average 1 + a + ... + a^k; the cycle costs the drafting plus
    the pass of k+1 tokens. `a` is measured per draft source (a longer n-gram match is kept more often), from a prior
    of `prior` worth `prior_weight` drafts (optimistic, so that every source is tried: one never drafted is never
    measured); pass times are measured as decoding goes (a pass length not yet seen is
    extrapolated linearly from those seen). k = 0 is a plain one-token step.
    """

    PRIOR_SLOPE = 0.5
    """Extra cost of each token of a pass, as a fraction of a one-token pass, until passes were timed."""

    def __init__(self, prior: float = 0.75, prior_weight: float = 2.0, smoothing: float = 0.8):
        self.prior, self.prior_weight, self.smoothing = prior, prior_weight, smoothing
        self.pass_seconds: dict[int, float] = {}  # tokens appended -> smoothed seconds of the pass
        self.draft_seconds: dict[Hashable, float] = {}  # source -> smoothed seconds per drafted token
        self._tests: dict[Hashable, list[int]] = {}  # source -> [drafts kept, drafts refused]

    def _smooth(self, table: dict, key: Hashable, seconds: float) -> None:
        old = table.get(key)
        table[key] = seconds if old is None else self.smoothing * old + (1 - self.smoothing) * seconds

    def observe_pass(self, tokens: int, seconds: float) -> None:
        self._smooth(self.pass_seconds, tokens, seconds)

    def observe_drafting(self, source: Hashable, drafts: int, seconds: float) -> None:
        if drafts:
            self._smooth(self.draft_seconds, source, seconds / drafts)

    def observe_cycle(self, source: Hashable, drafts: int, kept: int) -> None:
        tests = self._tests.setdefault(source, [0, 0])
        tests[0] += kept
        tests[1] += kept < drafts  # the first refused draft; the ones after it were never tested

    def acceptance(self, source: Hashable) -> float:
        kept, refused = self._tests.get(source, (0, 0))
        return (kept + self.prior * self.prior_weight) / (kept + refused + self.prior_weight)

    def pass_cost(self, tokens: int) -> float:
        """Seconds (relative units before any pass was timed) of one pass over `tokens` tokens."""
        seen = self.pass_seconds
        if tokens in seen:
            return seen[tokens]
        if 1 in seen:
            one = seen[1]
        elif seen:  # only longer passes so far: one token's from the shortest, at the prior slope
            n = min(seen)
            one = seen[n] / (1 + self.PRIOR_SLOPE * (n - 1))
        else:
            one = 1.0
        slopes = [(t - one) / (n - 1) for n, t in seen.items() if n > 1]
        slope = sum(slopes) / len(slopes) if slopes else self.PRIOR_SLOPE * one
        return one + max(slope, 0.0) * (tokens - 1)

    def choose(self, source: Hashable, available: int) -> int:
        """The number of drafts (0..available) to verify from `source`."""
        a, per_draft = self.acceptance(source), self.draft_seconds.get(source, 0.0)
        best_k, best = 0, 1.0 / self.pass_cost(1)
        expected, power = 1.0, 1.0
        for k in range(1, available + 1):
            power *= a
            expected += power
            rate = expected / (k * per_draft + self.pass_cost(k + 1))
            if rate > best:
                best_k, best = k, rate
        return best_k


@dataclass
class SpeculativeStats:
    """What the drafts bought: tokens emitted per verifying pass is the figure speed follows."""

    verifies: int = 0
    """Target passes (each appends the last token and its drafts)."""
    drafted: int = 0
    accepted: int = 0
    emitted: int = 0
    draft_lengths: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_verify(self) -> float:
        return self.emitted / self.verifies if self.verifies else 0.0

    def as_dict(self) -> dict:
        return {
            "verifies": self.verifies, "drafted": self.drafted, "accepted": self.accepted, "emitted": self.emitted,
            "acceptance_rate": self.acceptance_rate, "tokens_per_verify": self.tokens_per_verify,
        }  # fmt: skip


def verify(
    logits: torch.Tensor, drafts: list[int], sampling: Sampling, generator: torch.Generator | None
) -> tuple[int, int]:
    """(drafts kept, the next token) from the target's logits [len(drafts)+1, V] over the last token and drafts."""
    for i, draft in enumerate(drafts):
        if sampling.greedy:
            best = int(logits[i].argmax())
            if best != draft:
                return i, best
            continue
        probs = token_probabilities(logits[i], sampling)  # [V]
        if float(torch.rand((), generator=generator)) >= float(probs[draft]):
            probs[draft] = 0.0  # the residual of p minus the point mass at the draft, renormalized by multinomial
            return i, int(torch.multinomial(probs, 1, generator=generator))
    last = logits[len(drafts)]
    if sampling.greedy:
        return len(drafts), int(last.argmax())
    return len(drafts), int(torch.multinomial(token_probabilities(last, sampling), 1, generator=generator))


class SpeculativeDecoder:
    """Decoding of one sequence through `target` with drafts from `draft`: the target's own tokens, faster.

    `max_draft` bounds the drafts a cycle (the pass appends up to max_draft+1 tokens); `adaptive` lets `DraftLength`
    choose how many of them to verify (else every cycle verifies all a draft proposes, up to max_draft). The policy
    and its measurements persist across `generate` calls.
    """

    def __init__(
        self,
        decoder,
        draft: Draft | None = None,
        *,
        max_draft: int = 4,
        adaptive: bool = True,
        sampling: Sampling | None = None,
    ):
        if max_draft < 1:
            raise PonderError(f"max_draft must be >= 1, got {max_draft}")
        chunk = getattr(decoder, "chunk", None)
        if chunk is not None and max_draft + 1 > chunk:
            raise PonderError(f"max_draft={max_draft} needs passes of {max_draft + 1} tokens: the decoder's chunk "
                              f"is {chunk}")  # fmt: skip
        self.decoder, self.target = decoder, target_for(decoder)
        self.draft = draft if draft is not None else PromptLookup()
        self.max_draft, self.adaptive = max_draft, adaptive
        self.sampling = sampling or Sampling(temperature=0.0)
        self.stats = SpeculativeStats()
        self.policy = DraftLength()

    def _drafts(self, tokens: list[int], room: int) -> list[int]:
        """This cycle's drafts: all of the room when `adaptive` is off; else as many as the policy expects to pay
        (chosen before drafting when drafting runs a model, after when it is a free lookup)."""
        if not self.adaptive:
            return self.draft.propose(tokens, self.target, room)
        if self.draft.costly:
            room = self.policy.choose(self.draft.source, room)
            if room == 0:
                return []
        began = time.perf_counter()
        drafts = self.draft.propose(tokens, self.target, room)
        self.policy.observe_drafting(self.draft.source, len(drafts), time.perf_counter() - began)
        if self.draft.costly or not drafts:
            return drafts
        return drafts[: self.policy.choose(self.draft.source, len(drafts))]

    def _reset(self) -> None:
        if hasattr(self.decoder, "reset") and not hasattr(self.decoder, "runner"):
            self.decoder.reset()
        else:
            self.decoder.runner.reset(1)
        self.stats = SpeculativeStats()

    def _prefill(self, prompt: list[int]) -> None:
        """Every prompt token but the last into the cache (the first cycle appends the last one)."""
        if len(prompt) > 1:
            rest = torch.tensor(prompt[:-1])
            if hasattr(self.decoder, "runner"):
                self.decoder.runner.forward(rest[None])
            else:
                self.decoder.forward(rest)

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        eos_token_id: int | list[int] | None = None,
        on_token: Callable[[torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Prompt [1, T] → prompt and up to `max_new_tokens` tokens [1, T+N], the same contract as the decoders'
        `generate` (greedy unless `sampling` says otherwise); `stats` holds what the drafts bought."""
        if max_new_tokens < 1:
            raise PonderError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise PonderError(f"speculative decoding runs one sequence: input_ids must be [1, T], got "
                              f"{tuple(input_ids.shape)}")  # fmt: skip
        eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
        generator = self.sampling.generator()
        self._reset()
        prompt = input_ids[0].tolist()
        tokens = list(prompt)
        self._prefill(prompt)
        stats, policy = self.stats, self.policy
        while True:
            room = min(self.max_draft, max_new_tokens - (len(tokens) - len(prompt)) - 1)  # drafts past it are cut
            drafts = self._drafts(tokens, room) if room > 0 else []
            start, began = self.target.position, time.perf_counter()
            if drafts or not self.sampling.greedy:
                logits = self.target.append([tokens[-1], *drafts])
                kept, nxt = verify(logits, drafts, self.sampling, generator)
                self.target.rewind(start + 1 + kept)
            else:  # nothing to verify: the decoder's plain greedy step
                kept, nxt = 0, self.target.greedy_next(tokens[-1])
            policy.observe_pass(1 + len(drafts), time.perf_counter() - began)
            stats.verifies += 1
            stats.drafted += len(drafts)
            stats.accepted += kept
            if drafts:
                stats.draft_lengths.append(len(drafts))
                policy.observe_cycle(self.draft.source, len(drafts), kept)
            done = False
            for token in [*drafts[:kept], nxt]:
                tokens.append(token)
                stats.emitted += 1
                if on_token is not None:
                    on_token(torch.tensor([token]))
                if len(tokens) - len(prompt) >= max_new_tokens or token in eos:
                    done = True
                    break
            if done:
                return torch.tensor([tokens])


DRAFTS = ("lookup", "layers:FIRST-LAST or layers:I,J,...")
"""The drafts `speculative_decoder` builds by name (what `--draft` takes)."""


def _layer_list(spec: str, count: int) -> list[int]:
    layers: list[int] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if not first.strip().isdigit() or (last and not last.strip().isdigit()):
            raise PonderError(f"--draft layers:{spec} is not a list of layers: write e.g. layers:0-19 or layers:0,2,4")
        layers.extend(range(int(first), int(last or first) + 1))
    if any(i >= count for i in layers):
        raise PonderError(f"--draft layers:{spec} names a layer past the model's {count} (0..{count - 1})")
    return layers


def speculative_decoder(decoder, draft: str = "lookup", draft_tokens: int | None = None) -> SpeculativeDecoder:
    """A `SpeculativeDecoder` over `decoder` as the CLI's options name it: `draft` is "lookup" (prompt lookup over
    2- to 4-token matches) or "layers:SPEC" (the quantized model through those layers); `draft_tokens` fixes the
    drafts verified a cycle, else up to 8 are chosen by measured acceptance and cost."""
    if draft == "lookup":
        source: Draft = PromptLookup(max_ngram=4, min_ngram=2)
    elif draft.startswith("layers:"):
        from ponder.quant.runtime import QuantDecoder

        if not isinstance(decoder, QuantDecoder):
            raise PonderError("--draft layers:... runs on the quantized runtime: give --weights, or --draft lookup")
        source = LayerDraft(
            decoder, _layer_list(draft.removeprefix("layers:"), decoder.model.config.num_hidden_layers)
        )
    else:
        raise PonderError(f"unknown draft '{draft}': use {' or '.join(DRAFTS)}")
    return SpeculativeDecoder(decoder, source, max_draft=draft_tokens or 8, adaptive=draft_tokens is None)


def describe(speculative: SpeculativeDecoder) -> str:
    """One line on what the drafts bought, for the CLI."""
    stats = speculative.stats
    how = "chosen by measured cost" if speculative.adaptive else "fixed"
    return (f"speculative: {stats.emitted} tokens in {stats.verifies} passes ({stats.tokens_per_verify:.2f} a pass), "
            f"{stats.accepted} of {stats.drafted} drafts kept; drafts: {type(speculative.draft).__name__}, "
            f"up to {speculative.max_draft} a pass, {how}")  # fmt: skip


def bench_row(speculative: SpeculativeDecoder, prompt: torch.Tensor, new_tokens: int, dense_tokens: torch.Tensor,
              dense_seconds: list[float], seconds: list[float]) -> dict:  # fmt: skip
    """The `speculative` row of `ponder bench`: speed against the dense decode timed beside it, what the drafts
    bought in one more run, and whether its tokens are the dense ones."""
    from ponder.timing import Rate, paired_ratio, rate_row

    tokens = speculative.generate(prompt, new_tokens)
    stats = speculative.stats
    return rate_row({"decode": Rate.of(new_tokens, seconds)}, {"decode": paired_ratio(dense_seconds, seconds)}) | {
        "acceptance_rate": stats.acceptance_rate,
        "tokens_per_verify": stats.tokens_per_verify,
        "draft": type(speculative.draft).__name__,
        "draft_layers": getattr(speculative.draft, "layers", None),
        "k": speculative.max_draft,
        "k_adaptive": speculative.adaptive,
        "mean_drafts": sum(stats.draft_lengths) / len(stats.draft_lengths) if stats.draft_lengths else 0.0,
        "tokens_match_dense": bool(torch.equal(tokens, dense_tokens)),
    }
