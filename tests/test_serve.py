"""`ponder serve` end to end: a real uvicorn server on 127.0.0.1 and the real `openai` client, over tiny models.

Answers are checked against the decoders run directly (greedy tokens equal, sampled ones repeat under a seed); the
load, disconnect and timeout tests slow the tiny model's forward a little so that requests overlap as they would
on a real model.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn

from conftest import tiny_model
from ponder.adaptive import convert
from ponder.errors import PonderError
from ponder.inference import LeanDecoder
from ponder.inference.sampling import Sampling, sample_token
from ponder.quant import QuantDecoder
from ponder.serve import lean_backend, quant_backend, serve
from ponder.serve.app import create_app
from ponder.serve.engine import Engine

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<s>{% endif %}"
)
MODEL = "tiny-teal"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(backend, *, max_queue: int = 8, timeout: float = 60.0, model: str = MODEL):
    """A uvicorn server over `backend` in a thread; yields (base URL, engine)."""
    engine = Engine(backend, max_queue=max_queue, timeout=timeout)
    port = free_port()
    config = uvicorn.Config(create_app(engine, model_id=model), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", engine
    finally:
        server.should_exit = True
        thread.join(10)


class Slowed:
    """A backend whose every forward takes at least `delay` seconds more (a tiny model decodes in microseconds)."""

    def __init__(self, backend, delay: float):
        self.backend, self.delay, self.forwards = backend, delay, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def logits(self, ids):
        self.forwards += 1
        time.sleep(self.delay)
        return self.backend.logits(ids)


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


@pytest.fixture(scope="module")
def chat_tokenizer(tokenizer):
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = CHAT_TEMPLATE
    return chat


@pytest.fixture(scope="module")
def teal(chat_tokenizer):
    """A tiny Llama made adaptive with teal (budgets down to 0.1)."""
    model = tiny_model("llama")
    return convert(model, chat_tokenizer, "teal", calibration_tokens=1024, progress=False)


@pytest.fixture(scope="module")
def server(teal, chat_tokenizer):
    with running(lean_backend(teal, chat_tokenizer)) as (url, engine):
        yield url, engine


def greedy(decoder, tokenizer, ids: list[int], n: int) -> str:
    out = decoder.generate(torch.tensor([ids]), n, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def test_completions_chat_and_streaming_match_the_decoder(server, teal, chat_tokenizer):
    url, _ = server
    api = client(url)
    assert [m.id for m in api.models.list().data] == [MODEL]
    decoder = LeanDecoder(teal, max_len=64)
    prompt = "The river"
    expected = greedy(decoder, chat_tokenizer, chat_tokenizer(prompt).input_ids, 12)
    reply = api.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0)
    assert reply.choices[0].text == expected
    assert reply.usage.prompt_tokens == len(chat_tokenizer(prompt).input_ids)
    streamed = api.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == expected

    messages = [{"role": "user", "content": "Where does the river go?"}]
    ids = chat_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    expected = greedy(decoder, chat_tokenizer, ids, 10)
    chat = api.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    assert chat.choices[0].message.content == expected and chat.choices[0].message.role == "assistant"
    chunks = list(api.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens


def test_budget_seed_and_stop(server):
    url, _ = server
    api = client(url)
    spent = {}
    for budget in (1.0, 0.3, None):
        extra = {} if budget is None else {"budget": budget}
        reply = api.completions.create(model=MODEL, prompt="The river", max_tokens=24, temperature=0, extra_body=extra)
        spent[budget] = reply.model_extra["ponder"]
    assert spent[1.0]["ffn_compute"] == pytest.approx(1.0)
    assert spent[0.3]["budget"] == 0.3 and spent[0.3]["ffn_compute"] == pytest.approx(0.3, abs=0.15)
    assert spent[None]["budget"] == 1.0 and spent[None]["ffn_compute"] == pytest.approx(1.0)  # nothing leaked

    def sampled(seed: int) -> str:
        reply = api.completions.create(model=MODEL, prompt="The", max_tokens=16, temperature=1.0, top_p=0.9, seed=seed)
        return reply.choices[0].text

    assert sampled(7) == sampled(7)
    assert len({sampled(seed) for seed in range(4)}) > 1

    text = api.completions.create(model=MODEL, prompt="The river", max_tokens=24, temperature=0).choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = api.completions.create(model=MODEL, prompt="The river", max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = api.completions.create(model=MODEL, prompt="The river", max_tokens=24, temperature=0, stop=stop,
                                      stream=True)  # fmt: skip
    assert "".join(c.choices[0].text for c in streamed) == text[: text.index(stop)]


BAD = {
    "malformed JSON": (b'{"prompt": "hi", ', "body"),
    "unknown model": ({"model": "gpt-5", "prompt": "hi"}, "model"),
    "budget above 1": ({"prompt": "hi", "budget": 1.5}, "budget"),
    "budget not a number": ({"prompt": "hi", "budget": "half"}, "budget"),
    "budget below the calibrated": ({"prompt": "hi", "budget": 0.01}, "budget"),
    "negative max_tokens": ({"prompt": "hi", "max_tokens": -3}, "max_tokens"),
    "prompt over the context": ({"prompt": list(range(2, 202)) * 3}, "prompt"),
    "completion over the context": ({"prompt": "hi", "max_tokens": 5000}, "max_tokens"),
    "no prompt": ({"max_tokens": 3}, "prompt"),
    "temperature": ({"prompt": "hi", "temperature": -1}, "temperature"),
}


def test_bad_input_names_the_field_and_the_server_keeps_serving(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as http:
        for name, (body, field) in BAD.items():
            sent = {"content": body} if isinstance(body, bytes) else {"json": body}
            response = http.post("/v1/completions", headers={"content-type": "application/json"}, **sent)
            assert response.status_code == 400, name
            error = response.json()["error"]
            assert error["param"] == field, (name, error)
            assert field in error["message"] or field == "body", (name, error)
        response = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x " * 600}]})
        assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
        response = http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] >= 1


def test_quantized_backend_greedy_and_seeded(saved_model, chat_tokenizer):
    backend = quant_backend(str(saved_model), "q8_0")
    decoder = QuantDecoder(str(saved_model), weights="q8_0", max_len=64)
    ids = backend.tokenizer("The river").input_ids
    expected = greedy(decoder, backend.tokenizer, ids, 8)
    with running(backend, model="tiny") as (url, _):
        api = client(url)
        reply = api.completions.create(model="tiny", prompt="The river", max_tokens=8, temperature=0)
        assert reply.choices[0].text == expected
        assert reply.model_extra["ponder"]["ffn_compute"] == 1.0
        runs = [api.completions.create(model="tiny", prompt="The", max_tokens=8, seed=3).choices[0].text for _ in "ab"]
        assert runs[0] == runs[1]
        with pytest.raises(openai.BadRequestError, match="budget"):
            api.completions.create(model="tiny", prompt="The", max_tokens=2, extra_body={"budget": 0.5})


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def test_load_is_answered_or_refused_cleanly(teal, chat_tokenizer):
    """16 clients x 4 requests against a queue of 4: each gets its completion or a 429 with Retry-After."""
    backend = Slowed(lean_backend(teal, chat_tokenizer), 0.002)
    statuses: list[int] = []

    async def one_client(http: httpx.AsyncClient, index: int) -> None:
        for request in range(4):
            body = {"prompt": f"Client {index} asks {request}", "max_tokens": 8, "stream": request % 2 == 1}
            response = await http.post("/v1/completions", json=body)
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
            else:
                assert response.status_code == 200, response.text
                assert response.text.endswith("data: [DONE]\n\n") if body["stream"] else response.json()["choices"]

    async def load(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            await asyncio.gather(*(one_client(http, i) for i in range(16)))

    with running(backend, max_queue=4) as (url, engine):
        before = rss_mb()
        asyncio.run(load(url))
        grown = rss_mb() - before
        metrics = httpx.get(f"{url}/metrics").json()
    assert len(statuses) == 64 and set(statuses) <= {200, 429}
    assert 0 < statuses.count(429) < 64
    assert metrics["requests"] == statuses.count(200) and metrics["refused"] == statuses.count(429)
    assert metrics["queue_length"] == 0 and metrics["tokens_per_second"] > 0
    assert grown < 100, f"RSS grew {grown:.0f} MB"


def test_disconnect_stops_the_decode_and_frees_the_slot(teal, chat_tokenizer):
    backend = Slowed(lean_backend(teal, chat_tokenizer), 0.005)
    with running(backend, max_queue=1) as (url, engine), httpx.Client(base_url=url, timeout=30) as http:
        body = {"prompt": "The river", "max_tokens": 400, "temperature": 0, "budget": 1.0, "stream": True}
        with http.stream("POST", "/v1/completions", json=body) as response:
            lines = response.iter_lines()
            assert sum(1 for _, line in zip(range(6), lines, strict=False) if line.startswith("data:")) >= 2
        deadline = time.monotonic() + 10
        while not engine.metrics.recent and time.monotonic() < deadline:
            time.sleep(0.05)
        record = engine.metrics.recent[-1]
        assert record["finish_reason"] == "cancelled" and record["completion_tokens"] < 100
        assert backend.forwards < 100
        reply = http.post("/v1/completions", json={"prompt": "Next", "max_tokens": 3}).json()
        assert reply["usage"]["completion_tokens"] >= 1
        assert http.get("/metrics").json()["finish_reasons"]["cancelled"] == 1


def test_timeout_ends_the_request_cleanly(teal, chat_tokenizer):
    backend = Slowed(lean_backend(teal, chat_tokenizer), 0.005)
    body = {"prompt": "The river", "max_tokens": 400, "temperature": 0, "budget": 1.0}  # greedy: no end token in 400
    with running(backend, timeout=0.3) as (url, engine):
        response = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
        assert response.status_code == 504 and "timeout" in response.json()["error"]["message"]
        assert engine.metrics.recent[-1]["completion_tokens"] < 400
        assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_a_busy_port_is_one_line_error(teal, chat_tokenizer):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(PonderError, match="choose another --port"):
            serve(lean_backend(teal, chat_tokenizer), model=MODEL, port=taken.getsockname()[1])


def test_sigterm_lets_the_running_request_finish(tmp_path, tokenizer):
    """`ponder serve` in its own process: SIGTERM mid-stream, the stream still ends with [DONE], exit 0."""
    path = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(path)
    tokenizer.save_pretrained(path)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC}
    argv = [sys.executable, "-m", "ponder", "serve", str(path), "--port", str(port), "--quiet", "--timeout", "30"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 40
        while True:
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"prompt": "The river", "max_tokens": 400, "temperature": 0, "stream": True}
        events = []
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(line)
                    if len(events) == 3:
                        process.send_signal(signal.SIGTERM)
        assert events[-1] == "data: [DONE]" and len(events) > 3  # the stream went on past the signal, to its end
        assert json.loads(events[-2].removeprefix("data: "))["choices"][0]["finish_reason"] in ("stop", "length")
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_sampling_follows_temperature_top_p_and_seed():
    """The helper both backends sample through: greedy at temperature 0, only the nucleus drawn from, a seed
    repeats its draws, and a low temperature sharpens the distribution."""
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])  # softmax: 0.64, 0.23, 0.09, 0.03, 0.01
    assert sample_token(logits, Sampling(temperature=0), None) == 0
    nucleus = Sampling(temperature=1.0, top_p=0.8, seed=1)
    generator = nucleus.generator()
    assert {sample_token(logits, nucleus, generator) for _ in range(300)} == {0, 1}  # 0.64 + 0.23 reaches 0.8
    seeded = Sampling(seed=5)
    draws = [[sample_token(logits, seeded, g) for _ in range(50)] for g in (seeded.generator(), seeded.generator())]
    assert draws[0] == draws[1] and len(set(draws[0])) > 2
    cold = Sampling(temperature=0.1, seed=0)
    generator = cold.generator()
    assert sum(sample_token(logits, cold, generator) == 0 for _ in range(100)) >= 99
    for bad in ({"temperature": -0.5}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(PonderError):
            Sampling(**bad)
