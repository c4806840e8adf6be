"""`ponder serve`: an OpenAI-compatible HTTP server over one model, with a per-request compute budget.

`engine` decodes (one worker thread, a bounded queue), `app` speaks OpenAI's API on FastAPI, `serve` runs them
under uvicorn. The app is importable alone (`create_app`), so tests and embedding code run it on their own server.
"""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

from ponder.errors import PonderError
from ponder.serve.engine import MAX_CONTEXT, Engine, LeanBackend, QuantBackend


def context_length(config) -> int:
    """Longest sequence served: the model's own limit, at most MAX_CONTEXT (the KV cache is sized for it)."""
    return min(getattr(config, "max_position_embeddings", None) or MAX_CONTEXT, MAX_CONTEXT)


def lean_backend(model, tokenizer) -> LeanBackend:
    return LeanBackend(model, tokenizer, max_len=context_length(model.config))


def quant_backend(name: str, weights: str | None, *, threads: int | None = None) -> QuantBackend:
    """A model reference through the quantized runtime, in `weights` (None: a quantized directory's own)."""
    from ponder.models.load import load_tokenizer
    from ponder.quant import QuantDecoder, load_model

    tokenizer = load_tokenizer(name)  # first: a bad reference fails before the weights are read
    model = load_model(name, weights)
    decoder = QuantDecoder(model, threads=threads, max_len=context_length(model.config))
    return QuantBackend(decoder, tokenizer)


def model_names(name: str) -> tuple[str, tuple[str, ...]]:
    """The id /v1/models lists (the reference as given) and the other names a request may use (a path's last
    part, so `--model tiny` works for a server started on /models/tiny)."""
    short = Path(name).name
    return name, (short,) if short and short != name else ()


def serve(
    backend, *, model: str, host: str = "127.0.0.1", port: int = 8000, max_queue: int = 16, timeout: float = 600.0,
    quiet: bool = False,
) -> None:  # fmt: skip
    """Serve until SIGINT or SIGTERM; in-flight requests get up to `timeout` seconds to finish, queued ones not
    started by then end with a 503."""
    import uvicorn

    from ponder.serve.app import create_app

    _check_free(host, port)
    engine = Engine(backend, max_queue=max_queue, timeout=timeout)
    model_id, aliases = model_names(model)
    app = create_app(engine, model_id=model_id, aliases=aliases)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning" if quiet else "info",
        timeout_graceful_shutdown=max(1, round(timeout)),
    )  # fmt: skip
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler it found: make that one
    # a clean exit (status 0), as a service manager expects of a requested stop. Ctrl-C stays KeyboardInterrupt.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_cleanly) if main else None
    try:
        server.run()
    finally:
        engine.close()
        if main:
            signal.signal(signal.SIGTERM, previous)


def _check_free(host: str, port: int) -> None:
    """Refuse a host and port that cannot be listened on, in one line (uvicorn would log it and exit 1)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
            probe.bind((host, port))
    except OSError as e:
        raise PonderError(f"cannot listen on {host}:{port} ({e.strerror}): choose another --port or --host") from None


def _exit_cleanly(signum: int, frame) -> None:
    raise SystemExit(0)


__all__ = ["Engine", "LeanBackend", "QuantBackend", "context_length", "lean_backend", "quant_backend", "serve"]
