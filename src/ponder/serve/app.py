"""The HTTP side: OpenAI's completions and chat completions API over an `Engine`, on FastAPI.

Request and response shapes follow OpenAI's API reference (https://platform.openai.com/docs/api-reference), so its
clients, chat UIs and lm-eval's `local-completions` work unchanged; ponder adds one body field, `budget` (the
fraction of dense FFN compute for this request; the openai client sends it through `extra_body`), and a `ponder`
object in each response with the compute it spent. Errors have OpenAI's shape, {"error": {"message", "type",
"param", "code"}}, with `param` naming the field at fault.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ponder.errors import PonderError
from ponder.inference.sampling import Sampling
from ponder.serve.engine import Done, Engine, Job, QueueFull
from ponder.serve.text import TextStream

FAILURES = {"timeout": 504, "invalid": 400, "shutdown": 503, "error": 500}
"""Done reasons that end a request with an error, and their HTTP status."""
DISCONNECT_POLL_S = 0.25
"""How often a non-streaming request checks that its client is still there while it waits."""


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        self.status, self.message, self.param, self.headers = status, message, param, headers


def _error(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


# --- request bodies ---------------------------------------------------------------------------------------------


class _Generation(BaseModel):
    """Fields both endpoints take; unknown ones (user, presence_penalty, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=1)
    budget: float | None = Field(None, gt=0, le=1)
    """ponder's field: the fraction of dense FFN compute for this request (default: the server's)."""

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False


# --- the app ----------------------------------------------------------------------------------------------------


class Served:
    """What every handler needs: the engine and the names the model answers to."""

    def __init__(self, engine: Engine, model_id: str, aliases: tuple[str, ...] = ()):
        self.engine, self.model_id = engine, model_id
        self.names = {model_id, *aliases}
        self.backend = engine.backend
        self.tokenizer = engine.backend.tokenizer
        self.created = int(time.time())

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in self.names:
            raise ApiError(400, f"model '{name}' is not served here: use '{self.model_id}' (see /v1/models)", "model")

    def budget(self, requested: float | None) -> float:
        if requested is None:
            return self.backend.default_budget()
        if requested != 1.0 and not self.backend.adaptive:
            raise ApiError(400, f"budget {requested} needs an adaptive model; '{self.model_id}' is dense", "budget")
        return requested

    def room(self, prompt: list[int], param: str, max_tokens: int | None) -> int:
        """max_tokens, checked against what the context has left after the prompt (default: all of it)."""
        context = self.backend.max_len
        if not prompt:
            raise ApiError(400, f"the {param} is empty: give some text", param)
        if len(prompt) >= context:
            raise ApiError(400, f"the {param} is {len(prompt)} tokens; the context holds {context}", param)
        left = context - len(prompt)
        if max_tokens is not None and max_tokens > left:
            message = f"max_tokens {max_tokens} and the {len(prompt)}-token {param} exceed the {context}-token context"
            raise ApiError(400, message, "max_tokens")
        return max_tokens or left

    def job(self, prompt: list[int], body: _Generation, max_tokens: int) -> Job:
        try:
            sampling = Sampling(temperature=body.temperature, top_p=body.top_p, seed=body.seed)
        except PonderError as e:
            raise ApiError(400, str(e), "temperature") from None
        job = Job(
            prompt=prompt,
            max_tokens=max_tokens,
            sampling=sampling,
            budget=self.budget(body.budget),
            deadline=time.monotonic() + self.engine.timeout,
            loop=asyncio.get_running_loop(),
        )
        try:
            return self.engine.submit(job)
        except QueueFull as full:
            message = f"all {self.engine.max_queue} queue places are taken: retry after {full.retry_after} s"
            raise ApiError(429, message, headers={"Retry-After": str(full.retry_after)}) from None
        except PonderError as e:
            raise ApiError(503, str(e)) from None


def create_app(engine: Engine, *, model_id: str, aliases: tuple[str, ...] = ()) -> FastAPI:
    """The OpenAI-compatible app over `engine`; closing the app (server shutdown) closes the engine."""
    served = Served(engine, model_id, aliases)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.close()

    app = FastAPI(title="ponder", lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message, e.param, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        if first.get("type") == "json_invalid":
            return _error(400, f"the body is not valid JSON: {first.get('msg')}", "body")
        fields = [str(part) for part in first.get("loc", ()) if part != "body" and not isinstance(part, int)]
        param = fields[0] if fields else "body"
        path = ".".join(str(part) for part in first.get("loc", ())[1:]) or "body"
        return _error(400, f"{path}: {first.get('msg')}", param)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_id}

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": model_id, "object": "model", "created": served.created, "owned_by": "ponder"}
        card |= {"context_length": served.backend.max_len, "adaptive": served.backend.adaptive}
        return {"object": "list", "data": [card]}

    @app.get("/metrics")
    async def metrics() -> dict:
        return engine.snapshot()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        served.check_model(body.model)
        if body.echo or body.logprobs:
            raise ApiError(400, "logprobs and echo are not supported: generate text only", "logprobs")
        prompt = _completion_prompt(served.tokenizer, body.prompt)
        job = served.job(prompt, body, served.room(prompt, "prompt", body.max_tokens))
        reply = _Reply("cmpl", "text_completion", model_id, body, len(prompt), lambda text: {"text": text})
        return await _respond(served, job, body, request, reply)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        served.check_model(body.model)
        if body.logprobs:
            raise ApiError(400, "logprobs are not supported", "logprobs")
        prompt = _chat_prompt(served.tokenizer, body.messages)
        max_tokens = body.max_completion_tokens or body.max_tokens
        job = served.job(prompt, body, served.room(prompt, "messages", max_tokens))
        reply = _Reply("chatcmpl", "chat.completion", model_id, body, len(prompt), _chat_content(body.stream))
        return await _respond(served, job, body, request, reply)

    return app


def _chat_content(stream: bool) -> Callable[[str], dict]:
    if stream:
        return lambda text: {"delta": {"content": text}}
    return lambda text: {"message": {"role": "assistant", "content": text}}


def _completion_prompt(tokenizer, prompt) -> list[int]:
    """A completions prompt (text, or token ids; one of either) as ids."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        if len(prompt) != 1:
            raise ApiError(400, f"give one prompt per request, got {len(prompt)}", "prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenizer(prompt).input_ids
    vocab = len(tokenizer)
    if any(not 0 <= token < vocab for token in prompt):
        raise ApiError(400, f"prompt token ids must lie in [0, {vocab})", "prompt")
    return list(prompt)


def _chat_prompt(tokenizer, messages: list[ChatMessage]) -> list[int]:
    """The conversation in the tokenizer's chat template, ending where the assistant's answer begins."""
    if not tokenizer.chat_template:
        raise ApiError(400, "the model's tokenizer has no chat template: use /v1/completions", "messages")
    turns = []
    for message in messages:
        content = message.content or ""
        if isinstance(content, list):
            if any(part.get("type") != "text" for part in content):
                raise ApiError(400, "only text content parts are supported", "messages")
            content = "".join(str(part.get("text", "")) for part in content)
        turns.append({"role": message.role, "content": content})
    try:
        ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True, return_dict=True)["input_ids"]
    except Exception as e:  # a template may refuse an order of roles (jinja's raise_exception)
        raise ApiError(400, f"the chat template refused the messages: {e}", "messages") from None
    return list(ids)


class _Reply:
    """Builds one endpoint's response objects: the whole one, or the stream's chunks."""

    def __init__(self, prefix: str, kind: str, model: str, body: _Generation, prompt_tokens: int, content):
        self.id, self.kind, self.model = f"{prefix}-{uuid.uuid4().hex[:24]}", kind, model
        self.created, self.prompt_tokens, self.content = int(time.time()), prompt_tokens, content
        self.chat = prefix == "chatcmpl"
        self.usage_chunk = bool((body.stream_options or {}).get("include_usage"))

    def _object(self, choice: dict, chunk: bool) -> dict:
        kind = f"{self.kind}.chunk" if chunk and self.chat else self.kind
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": [choice]}

    def usage(self, done: Done) -> dict:
        tokens = {"prompt_tokens": self.prompt_tokens, "completion_tokens": done.tokens}
        return tokens | {"total_tokens": self.prompt_tokens + done.tokens}

    def whole(self, text: str, finish: str, done: Done, budget: float) -> dict:
        reply = self._object({"index": 0, **self.content(text), "logprobs": None, "finish_reason": finish}, False)
        return reply | {"usage": self.usage(done), "ponder": _spent(done, budget)}

    def chunk(self, text: str | None, finish: str | None = None) -> str:
        if text is None:
            part = {"delta": {}} if self.chat else {"text": ""}
        elif self.chat and text == "" and finish is None:
            part = {"delta": {"role": "assistant", "content": ""}}
        else:
            part = self.content(text)
        return _sse(self._object({"index": 0, **part, "logprobs": None, "finish_reason": finish}, True))

    def last(self, finish: str, done: Done, budget: float) -> str:
        ending = self.chunk(None, finish)
        if self.usage_chunk:
            final = self._object({}, True) | {"choices": [], "usage": self.usage(done), "ponder": _spent(done, budget)}
            ending += _sse(final)
        return ending


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _spent(done: Done, budget: float) -> dict:
    return {"budget": budget, "ffn_compute": done.ffn_compute, "seconds": done.seconds}


def _finish(done: Done, text: TextStream) -> str:
    return "stop" if text.stopped or done.reason == "stop" else "length"


def _failure(done: Done) -> ApiError:
    param = "budget" if done.reason == "invalid" else None
    return ApiError(FAILURES[done.reason], done.message or f"the request ended: {done.reason}", param)


async def _next(job: Job, request: Request) -> int | Done:
    """The job's next event; a client that left cancels it (before a stream starts, Starlette cannot tell us)."""
    while True:
        try:
            return await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_S)
        except TimeoutError:
            if await request.is_disconnected():
                job.cancel()
                raise ApiError(499, "the client disconnected") from None


async def _respond(served: Served, job: Job, body: _Generation, request: Request, reply: _Reply):
    """Wait for the first event (so an error still gets its status), then answer whole or as a stream."""
    text = TextStream(served.tokenizer, body.stops())
    try:
        first = await _next(job, request)
    except BaseException:
        job.cancel()
        raise
    if isinstance(first, Done) and first.reason in FAILURES:
        raise _failure(first)
    if body.stream:
        return StreamingResponse(_stream(job, first, text, reply), media_type="text/event-stream")
    try:
        event, pieces = first, []
        while not isinstance(event, Done):
            pieces.append(text.push(event))
            if text.stopped:
                job.cancel("stop")
                break
            event = await _next(job, request)
        while not isinstance(event, Done):  # the worker's last event, with the cost of the decode
            event = await _next(job, request)
    finally:
        job.cancel()
    if event.reason in FAILURES:
        raise _failure(event)
    pieces.append(text.finish())
    return reply.whole("".join(pieces), _finish(event, text), event, job.budget)


async def _stream(job: Job, event: int | Done, text: TextStream, reply: _Reply) -> AsyncIterator[str]:
    """Server-sent events: a chunk per released piece, the finish reason, then [DONE]. A client that disconnects
    cancels this generator (Starlette), which cancels the decode."""
    try:
        if reply.chat:
            yield reply.chunk("")  # the assistant role first, as OpenAI streams it
        while not isinstance(event, Done):
            piece = text.push(event)
            if piece:
                yield reply.chunk(piece)
            if text.stopped:
                job.cancel("stop")
            event = await job.events.get()
        if event.reason in FAILURES:
            failure = _failure(event)
            yield _sse({"error": {"message": failure.message, "type": "server_error", "code": failure.status}})
        else:
            piece = text.finish()
            if piece:
                yield reply.chunk(piece)
            yield reply.last(_finish(event, text), event, job.budget)
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()
