"""The decode side of the server: one model, one worker thread, a bounded queue of requests.

Decoding is CPU-bound and a model instance holds one sequence's KV cache, so requests run one after another in a
single worker thread; the event loop only parses, queues and streams. A full queue refuses at once (the HTTP side
answers 429) rather than letting latency grow without bound. The worker checks each request's cancellation and
deadline between tokens, so a client that disconnects or times out frees the model within one token.

Backends wrap what already decodes: `LeanBackend` the lean decoder's runner over an fp32 (dense or adaptive)
model, `QuantBackend` the quantized runtime; both return the last position's logits, and `sample_token` picks from
them the same way for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from ponder.errors import PonderError
from ponder.inference.sampling import Sampling, sample_token

MAX_CONTEXT = 8192
"""Longest sequence a server decodes (prompt and completion), below the model's own limit: the KV cache is
allocated for it once (SmolLM2-135M at 8192: 0.38 GB of fp32 keys and values, mapped as positions are reached)."""
RECENT = 100
"""Finished requests the metrics list one by one (totals count all)."""


class LeanBackend:
    """An fp32 model (dense, or adaptive with a per-request budget) through the lean decoder's runner."""

    def __init__(self, model, tokenizer, *, max_len: int):
        from ponder.adaptive import adaptive_modules, get_budget
        from ponder.inference import LeanDecoder

        self.model, self.tokenizer, self.max_len = model, tokenizer, max_len
        self.runner = LeanDecoder(model, max_len=max_len).runner
        self.modules = adaptive_modules(model)
        self.adaptive = bool(self.modules)
        self.eos = _eos_ids(tokenizer, model.config)
        self._default = get_budget(model)  # now: requests set the model's budget as they run

    def default_budget(self) -> float:
        """The budget of a request that gives none: the model's when the backend was made."""
        return self._default

    def set_budget(self, budget: float) -> None:
        from ponder.adaptive import set_budget

        set_budget(self.model, budget)

    def start(self) -> None:
        self.runner.reset(1)
        for module in self.modules:
            module.pop_compute()  # drop what an earlier request counted

    def logits(self, ids: list[int]) -> torch.Tensor:
        """Logits [V] of the last position after appending `ids`."""
        return self.runner.forward(torch.tensor([ids]))[0]

    def compute(self) -> float:
        """Fraction of dense FFN compute spent since `start` (1 for a dense model), as the modules counted it."""
        if not self.modules:
            return 1.0
        tallies = [(module.pop_compute(), module.dense_macs()) for module in self.modules]
        dense = sum(tokens * macs for (tokens, _), macs in tallies)
        return sum(spent for (_, spent), _ in tallies) / dense if dense else 1.0


class QuantBackend:
    """A dense model through the quantized runtime (GGUF blocks): the budget is always 1."""

    adaptive = False

    def __init__(self, decoder, tokenizer):
        self.decoder, self.tokenizer, self.max_len = decoder, tokenizer, decoder.max_len
        self.eos = _eos_ids(tokenizer, decoder.model.config)

    def default_budget(self) -> float:
        return 1.0

    def set_budget(self, budget: float) -> None:
        if budget != 1.0:
            raise PonderError(f"budget {budget} needs an adaptive model; quantized weights run dense: give 1")

    def start(self) -> None:
        self.decoder.reset()

    def logits(self, ids: list[int]) -> torch.Tensor:
        return self.decoder.forward(torch.tensor(ids))

    def compute(self) -> float:
        return 1.0


def _eos_ids(tokenizer, config) -> frozenset[int]:
    """Tokens that end a completion: the tokenizer's EOS and the model config's (a chat model may list several)."""
    ids = {tokenizer.eos_token_id, getattr(config, "eos_token_id", None)}
    flat = set()
    for value in ids:
        flat.update(value if isinstance(value, list) else [value])
    return frozenset(i for i in flat if i is not None)


class QueueFull(Exception):
    """The queue holds `max_queue` waiting requests; `retry_after` estimates seconds until one leaves."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after


@dataclass(frozen=True)
class Done:
    """The last event of a job: why it ended and what it cost."""

    reason: str
    """stop (an end token), length (max_tokens), cancelled, timeout, invalid (a bad budget), shutdown or error."""
    tokens: int
    ffn_compute: float
    seconds: float
    message: str = ""


@dataclass
class Job:
    """One request as the worker sees it; events (token ids, then one `Done`) go to `events` on the loop."""

    prompt: list[int]
    max_tokens: int
    sampling: Sampling
    budget: float
    deadline: float
    """time.monotonic() past which the decode stops (queue wait included)."""
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    id: int = 0
    cancel_reason: str = "cancelled"
    """What the metrics record when `cancelled` ended the decode: cancelled (the client left) or stop (a stop
    string ended the text)."""

    def cancel(self, reason: str = "cancelled") -> None:
        self.cancel_reason = reason
        self.cancelled.set()

    def emit(self, event: int | Done) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


@dataclass
class Metrics:
    """What /metrics reports; written by the worker only, read as a snapshot."""

    requests: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    busy_seconds: float = 0.0
    refused: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT))


class Engine:
    """The bounded queue and the worker thread that drains it."""

    def __init__(self, backend, *, max_queue: int = 16, timeout: float = 600.0):
        if max_queue < 1 or not timeout > 0:
            raise PonderError(f"max_queue must be >= 1 and timeout > 0, got {max_queue} and {timeout}")
        self.backend, self.max_queue, self.timeout = backend, max_queue, timeout
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.metrics = Metrics()
        self.running: Job | None = None
        self._ids = itertools.count(1)
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="ponder-decode", daemon=True)
        self._thread.start()

    # --- the event loop's side ------------------------------------------------------------------------------

    def submit(self, job: Job) -> Job:
        """Queue `job` or raise QueueFull (or PonderError while shutting down)."""
        if self._closing:
            raise PonderError("the server is shutting down")
        job.id = next(self._ids)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.metrics.refused += 1
            raise QueueFull(self._retry_after()) from None
        return job

    def _retry_after(self) -> int:
        """Seconds until a place frees: the mean request time so far (at least 1 s)."""
        metrics = self.metrics
        mean = metrics.busy_seconds / metrics.requests if metrics.requests else 1.0
        return max(1, round(mean))

    def snapshot(self) -> dict:
        metrics = self.metrics
        busy = metrics.busy_seconds
        return {
            "requests": metrics.requests,
            "refused": metrics.refused,
            "queue_length": self.queue.qsize(),
            "max_queue": self.max_queue,
            "running": int(self.running is not None),
            "prompt_tokens": metrics.prompt_tokens,
            "completion_tokens": metrics.completion_tokens,
            "tokens_per_second": metrics.completion_tokens / busy if busy else 0.0,
            "finish_reasons": dict(metrics.reasons),
            "recent": list(metrics.recent),
        }

    def close(self, wait: float = 5.0) -> None:
        """Stop taking jobs, end the queued ones with `shutdown`, stop the running one, and join the worker."""
        self._closing = True
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit(Done("shutdown", 0, 0.0, 0.0, "the server is shutting down: retry later"))
        if self.running is not None:
            self.running.cancel("shutdown")
        with contextlib.suppress(queue.Full):  # full only of an earlier close's None
            self.queue.put_nowait(None)
        self._thread.join(wait)

    # --- the worker thread ------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            self.running = job
            try:
                done = self._run(job)
            except Exception as e:  # a failed decode ends its request, never the worker
                done = Done("error", 0, 0.0, 0.0, f"decode failed: {type(e).__name__}: {e}")
            finally:
                self.running = None
            self._record(job, done)
            job.emit(done)

    @torch.inference_mode()
    def _run(self, job: Job) -> Done:
        backend = self.backend
        if job.cancelled.is_set():
            return Done("cancelled", 0, 0.0, 0.0)
        if time.monotonic() > job.deadline:
            return Done("timeout", 0, 0.0, 0.0, f"the request waited past the {self.timeout:g} s timeout")
        try:
            backend.set_budget(job.budget)
        except PonderError as e:
            return Done("invalid", 0, 0.0, 0.0, str(e))
        start = time.perf_counter()
        backend.start()
        generator = job.sampling.generator()
        logits = backend.logits(job.prompt)
        reason, tokens = "length", 0
        while True:
            token = sample_token(logits, job.sampling, generator)
            tokens += 1
            job.emit(token)
            if token in backend.eos:
                reason = "stop"
                break
            if tokens == job.max_tokens:
                break
            if job.cancelled.is_set():  # the client left, or a stop string ended the text
                reason = job.cancel_reason
                break
            if time.monotonic() > job.deadline:
                reason = "timeout"
                break
            logits = backend.logits([token])
        seconds = time.perf_counter() - start
        message = {
            "timeout": f"the request ran past the {self.timeout:g} s timeout",
            "shutdown": "the server shut down before the request finished: retry later",
        }.get(reason, "")
        return Done(reason, tokens, backend.compute(), seconds, message)

    def _record(self, job: Job, done: Done) -> None:
        metrics = self.metrics
        metrics.requests += 1
        metrics.reasons[done.reason] = metrics.reasons.get(done.reason, 0) + 1
        if done.tokens:
            metrics.prompt_tokens += len(job.prompt)
            metrics.completion_tokens += done.tokens
            metrics.busy_seconds += done.seconds
        metrics.recent.append(
            {
                "id": job.id,
                "prompt_tokens": len(job.prompt),
                "completion_tokens": done.tokens,
                "seconds": round(done.seconds, 4),
                "tokens_per_second": done.tokens / done.seconds if done.seconds else 0.0,
                "budget": job.budget,
                "ffn_compute": done.ffn_compute,
                "finish_reason": done.reason,
            }
        )
