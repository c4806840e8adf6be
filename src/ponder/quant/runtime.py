"""The quantized runtime (`runtime.c`): built once per source hash, one C call per forward of T tokens.

`QuantDecoder` owns everything the C forward touches: the model description (per layer: norm and weight
pointers with their formats, KV cache buffers), RoPE tables, the workspace and the logits buffer. Python builds
them once; each token is then one `pq_forward` call running every layer and the head, its threads splitting each
matrix's rows. Activations are quantized to int8 blocks of 32 before each matvec (as llama.cpp does): against
dequantize-then-fp32 this costs at most half an activation step per weight, `matvec_error_bound`.

Shapes: T tokens, D hidden, H query heads, K kv heads, E head dim, V vocabulary.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path

import torch

from ponder.errors import PonderError
from ponder.models.load import cache_root, resolve
from ponder.quant.formats import Format
from ponder.quant.weights import EMBED, QuantModel, QuantTensor, is_quantized_dir, load_quantized, read_gguf

_SOURCE = "runtime.c"
_INCLUDED = ("sparse_ffn.h",)
"""Files runtime.c includes: part of the build's hash."""
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11")
ACT_BLOCK_BYTES = 40
"""Bytes of one quantized activation block (runtime.c's block_act: fp32 d, fp32 d·sum(q), 32 int8)."""


class Mat(ctypes.Structure):
    """runtime.c's pq_mat: one weight matrix in one format."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
        ("format", ctypes.c_int32),
        ("pad_", ctypes.c_int32),
    ]


class Layer(ctypes.Structure):
    """runtime.c's pq_layer."""

    _fields_ = [
        ("attn_norm", ctypes.c_void_p),
        ("ffn_norm", ctypes.c_void_p),
        ("q_norm", ctypes.c_void_p),
        ("k_norm", ctypes.c_void_p),
        *[(name, Mat) for name in ("q", "k", "v", "o", "gate", "up", "down")],
        ("k_cache", ctypes.c_void_p),
        ("v_cache", ctypes.c_void_p),
        ("ffn_kind", ctypes.c_int32),
        ("top_k", ctypes.c_int32),
        ("threshold", ctypes.c_float),
        ("pad2_", ctypes.c_int32),
        ("down_t", Mat),
        ("spent", ctypes.c_void_p),
    ]


class Model(ctypes.Structure):
    """runtime.c's pq_model."""

    _fields_ = [
        *[
            (name, ctypes.c_int64)
            for name in ("layers", "hidden", "ffn", "heads", "kv_heads", "head_dim", "vocab", "max_len", "max_tokens")
        ],
        ("threads", ctypes.c_int32),
        ("fp32_act", ctypes.c_int32),
        ("eps", ctypes.c_float),
        ("scaling", ctypes.c_float),
        ("cos", ctypes.c_void_p),
        ("sin", ctypes.c_void_p),
        ("final_norm", ctypes.c_void_p),
        ("embed", Mat),
        ("head", Mat),
        ("layer", ctypes.POINTER(Layer)),
        ("work", ctypes.c_void_p),
    ]


def _signatures() -> dict[str, tuple[list, type | None]]:
    pointer, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
    mat, model = ctypes.POINTER(Mat), ctypes.POINTER(Model)
    return {
        "pq_simd_level": ([], i32),
        "pq_quantize_act": ([pointer, i64, pointer], None),
        "pq_matmul": ([mat, pointer, i64, pointer, i32, i32], i32),
        "pq_dequantize": ([mat, pointer], None),
        "pq_work_bytes": ([model], i64),
        "pq_forward": ([model, pointer, i64, i64, pointer, i32], i32),
        "pq_argmax": ([pointer, i64], i64),
        "pq_ffn": ([model, ctypes.POINTER(Layer), pointer, i64, pointer, pointer], i32),
    }


def source_path() -> Path:
    return Path(str(resources.files("ponder.quant") / _SOURCE))


def build(target: Path, flags: tuple[str, ...] = FLAGS, source: Path | None = None) -> Path:
    """Compile runtime.c (or `source`) into `target` (a temp file renamed into place)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise PonderError("the quantized runtime needs a C compiler: install gcc (or set CC)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        source = source or source_path()
        result = subprocess.run([compiler, *flags, str(source), "-o", tmp, "-lm"], capture_output=True)
        if result.returncode:
            first = (result.stderr.decode(errors="replace").strip().splitlines() or ["?"])[0]
            raise PonderError(f"building the quantized runtime failed ({first}): check the C compiler and OpenMP")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def load_library(path: Path) -> ctypes.CDLL:
    """A built runtime with every function's argument and return types declared; a missing one is an error."""
    lib = ctypes.CDLL(str(path))
    for name, (argtypes, restype) in _signatures().items():
        if not hasattr(lib, name):
            raise PonderError(f"{path} lacks {name}: delete it so that the runtime is rebuilt")
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


def library_for(flags: tuple[str, ...] = FLAGS) -> ctypes.CDLL:
    """The runtime built with `flags`, cached under the ponder cache by source and flags hash."""
    sources = b"".join((source_path().parent / name).read_bytes() for name in (_SOURCE, *_INCLUDED))
    digest = hashlib.sha256(sources + " ".join(flags).encode()).hexdigest()[:16]
    target = cache_root() / "kernels" / f"quant-{digest}.so"
    if not target.exists():
        build(target, flags)
    return load_library(target)


@cache
def library() -> ctypes.CDLL:
    """The runtime for this machine (-march=native: the AVX-512 VNNI, AVX2 or scalar block dots, whichever it has)."""
    return library_for(FLAGS)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def mat(tensor: QuantTensor, bias: QuantTensor | None = None) -> Mat:
    """The C view of one weight; the caller keeps `tensor` alive."""
    rows, cols = tensor.shape
    return Mat(_ptr(tensor.data), _ptr(None if bias is None else bias.data), rows, cols, tensor.format.code, 0)


def matmul(
    tensor: QuantTensor,
    x: torch.Tensor,
    *,
    activations: str = "int8",
    threads: int = 1,
    lib: ctypes.CDLL | None = None,
) -> torch.Tensor:
    """y [T, N] = x [T, K] · W^T through the runtime's kernel for W's format, x quantized to int8 blocks first
    (`activations="int8"`) or read as it is ("fp32")."""
    lib = lib or library()
    x = x.to(torch.float32).contiguous()
    y = torch.empty(x.shape[0], tensor.shape[0])
    if lib.pq_matmul(ctypes.byref(mat(tensor)), _ptr(x), x.shape[0], _ptr(y), threads, _activation_mode(activations)):
        raise MemoryError("pq_matmul could not allocate its activation blocks")
    return y


def quantize_activations(x: torch.Tensor, lib: ctypes.CDLL | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [K] as the runtime quantizes it: (scales [K/32] fp32, values [K] int8); x ≈ scale·value per block."""
    lib = lib or library()
    x = x.to(torch.float32).contiguous()
    blocks = torch.empty(x.numel() // 32, ACT_BLOCK_BYTES, dtype=torch.uint8)
    lib.pq_quantize_act(_ptr(x), x.numel(), _ptr(blocks))
    return blocks[:, :4].contiguous().view(torch.float32)[:, 0], blocks[:, 8:].contiguous().view(torch.int8).reshape(
        -1
    )


def matvec_error_bound(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The bound [T, N] on |kernel - dequantize-then-fp32| from quantizing x [T, K] to int8 blocks: each value
    moves by at most half its block's step amax/127, so row n's error is at most Σ_b step_b/2 · Σ_(j in b) |w_nj|
    (plus fp32 rounding, which `tolerance` covers)."""
    T, K = x.shape
    steps = x.reshape(T, K // 32, 32).abs().amax(dim=-1) / 127  # [T, K/32]
    magnitudes = weight.abs().reshape(weight.shape[0], K // 32, 32).sum(dim=-1)  # [N, K/32]
    return 0.5 * steps @ magnitudes.T  # [T, N]


ACTIVATIONS = ("int8", "fp32")
"""How matvec inputs are read: quantized to int8 blocks of 32 (llama.cpp's way, integer dots), or as fp32 (each
weight block dequantized in registers; no activation rounding, the dequantize-then-fp32 result up to summation
order)."""


def _activation_mode(activations: str) -> int:
    if activations not in ACTIVATIONS:
        raise PonderError(f"unknown activations '{activations}': use one of {', '.join(ACTIVATIONS)}")
    return int(activations == "fp32")


def _rope_tables(config, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's cos and sin [max_len, E] for this config, its rope type and scaling included, computed as HF's rotary
    modules do from transformers' own frequency functions (importing a modelling file costs ~130 MB)."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    parameters = getattr(config, "rope_parameters", None) or {}
    rope_type = parameters.get("rope_type", "default")
    if rope_type == "dynamic":  # its frequencies change with the sequence length
        raise PonderError("dynamic RoPE scaling has no quantized runtime: run this model with --weights fp32")
    if rope_type == "default":
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        inv_freq = 1.0 / (parameters["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        scaling = 1.0
    else:
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))
    freqs = torch.arange(max_len, dtype=torch.float)[:, None] * inv_freq.float()[None]  # [max_len, E/2]
    angles = torch.cat((freqs, freqs), dim=-1)
    return (angles.cos() * scaling).contiguous(), (angles.sin() * scaling).contiguous()


def load_model(source: str | Path | QuantModel, weights: str | None = "q4_1") -> QuantModel:
    """A QuantModel from a model reference: an alias or `.gguf` (its blocks as they are where they already are in
    `weights`), a directory from `save_quantized`, or an HF directory / hub id (quantized to `weights` now)."""
    if isinstance(source, QuantModel):
        return source
    if is_quantized_dir(source):
        model = load_quantized(source)
        if weights is not None and weights != model.weights:
            raise PonderError(f"{source} holds {model.weights} weights, not {weights}: quantize the original again")
        return model
    kind, where = resolve(str(source))
    if kind == "gguf":
        return read_gguf(where, weights)
    from ponder.models.load import load
    from ponder.quant.weights import quantize_model

    hf_model, _ = load(str(source))
    return quantize_model(hf_model, weights or "q8_0")


class QuantDecoder:
    """Greedy decoding and scoring of one sequence through the quantized runtime.

    `forward(ids)` appends tokens to the KV cache and returns the last position's logits, `logits(ids)` every
    position's (for perplexity), `generate` is greedy with the same contract as `LeanDecoder.generate` (batch 1).
    Prompts run `chunk` tokens per call, each weight read once per chunk. `activations` is "int8" (matvec inputs
    quantized to int8 blocks, as llama.cpp does) or "fp32" (no activation rounding).
    """

    def __init__(
        self,
        source: str | Path | QuantModel,
        *,
        weights: str | None = "q4_1",
        activations: str = "int8",
        threads: int | None = None,
        max_len: int = 2048,
        chunk: int = 64,
    ):
        fp32_act = _activation_mode(activations)
        model = load_model(source, weights)
        config = model.config
        if threads is not None and threads < 1:
            raise PonderError(f"threads must be >= 1, got {threads}")
        if max_len < 1 or chunk < 1:
            raise PonderError(f"max_len and chunk must be >= 1, got {max_len} and {chunk}")
        self.model, self.lib, self.activations = model, library(), activations
        self.threads = threads or torch.get_num_threads()
        self.max_len, self.chunk = max_len, chunk
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        if heads % kv_heads:
            raise PonderError(f"{heads} query heads do not group over {kv_heads} kv heads")
        t = model.tensors
        self.cos, self.sin = _rope_tables(config, max_len)
        cache_shape = (config.num_hidden_layers, kv_heads, max_len, head_dim)  # [L, K, max_len, E]
        # Uninitialised: a position is written before it is read, and pages of positions never reached stay unmapped.
        self.keys, self.values = torch.empty(cache_shape), torch.empty(cache_shape)
        layers = (Layer * config.num_hidden_layers)()
        for i, layer in enumerate(layers):
            p = f"model.layers.{i}."

            def get(name: str, p: str = p) -> QuantTensor | None:
                return t.get(p + name)

            layer.attn_norm = _ptr(get("input_layernorm.weight").data)
            layer.ffn_norm = _ptr(get("post_attention_layernorm.weight").data)
            q_norm, k_norm = get("self_attn.q_norm.weight"), get("self_attn.k_norm.weight")
            layer.q_norm = None if q_norm is None else _ptr(q_norm.data)
            layer.k_norm = None if k_norm is None else _ptr(k_norm.data)
            for field, name in zip(("q", "k", "v", "o"), ("q_proj", "k_proj", "v_proj", "o_proj"), strict=True):
                setattr(layer, field, mat(get(f"self_attn.{name}.weight"), get(f"self_attn.{name}.bias")))
            for field in ("gate", "up", "down"):
                setattr(layer, field, mat(get(f"mlp.{field}_proj.weight"), get(f"mlp.{field}_proj.bias")))
            layer.k_cache, layer.v_cache = _ptr(self.keys[i]), _ptr(self.values[i])
        self._layers = layers
        scaling = getattr(config, "query_pre_attn_scalar", None) or head_dim
        self._description = Model(
            layers=config.num_hidden_layers, hidden=config.hidden_size, ffn=config.intermediate_size, heads=heads,
            kv_heads=kv_heads, head_dim=head_dim, vocab=config.vocab_size, max_len=max_len, max_tokens=chunk,
            threads=self.threads, fp32_act=fp32_act, eps=config.rms_norm_eps, scaling=scaling**-0.5,
            cos=_ptr(self.cos), sin=_ptr(self.sin), final_norm=_ptr(t["model.norm.weight"].data), embed=mat(t[EMBED]),
            head=mat(model.head), layer=layers,
        )  # fmt: skip
        self._work = torch.empty(self.lib.pq_work_bytes(ctypes.byref(self._description)) + 64, dtype=torch.uint8)
        self._description.work = (_ptr(self._work) + 63) // 64 * 64
        self._logits = torch.empty(chunk, config.vocab_size)
        self._ids = torch.empty(chunk, dtype=torch.int32)
        self.position = 0

    @property
    def formats(self) -> dict[str, Format]:
        """Each tensor's format by name."""
        return {name: t.format for name, t in self.model.tensors.items()}

    def reset(self) -> None:
        """Start a new sequence (the cache is overwritten, not cleared: positions past `position` are unread)."""
        self.position = 0

    def _run(self, ids: torch.Tensor, all_logits: bool) -> torch.Tensor:
        """Append ids [T] (T <= chunk); logits [T, V] or [1, V] in the decoder's buffer (valid until the next call)."""
        T = ids.numel()
        if self.position + T > self.max_len:
            raise PonderError(f"sequence of {self.position + T} tokens exceeds the decoder's max_len={self.max_len}")
        vocab = self.model.config.vocab_size
        if int(ids.min()) < 0 or int(ids.max()) >= vocab:
            raise PonderError(f"token ids must lie in [0, {vocab}), got {int(ids.min())}..{int(ids.max())}")
        self._ids[:T] = ids
        status = self.lib.pq_forward(
            ctypes.byref(self._description), _ptr(self._ids), T, self.position, _ptr(self._logits), int(all_logits)
        )
        assert status == 0, "pq_forward rejected sizes that _run checked"
        self.position += T
        return self._logits[: T if all_logits else 1]

    def description_with_layers(self, layers: list[int]) -> Model:
        """The model through only `layers` (in order) and the shared head: a self-speculative draft. It shares the
        weights, the KV cache (its layers write draft positions, which a full pass overwrites) and the scratch;
        each layer's FFN settings are those at this call."""
        count = self.model.config.num_hidden_layers
        if not layers or any(not 0 <= i < count for i in layers) or sorted(set(layers)) != list(layers):
            raise PonderError(f"draft layers must be increasing indices in [0, {count}), got {layers}")
        subset = (Layer * len(layers))(*[self._layers[i] for i in layers])
        description = Model.from_buffer_copy(self._description)
        description.layers, description.layer = len(layers), subset
        description._subset = subset  # keeps the layer array alive with the description
        return description

    def draft_step(self, description: Model, token: int) -> int:
        """Append one token through `description` (from `description_with_layers`); its greedy next token."""
        if self.position + 1 > self.max_len:
            raise PonderError(f"sequence of {self.position + 1} tokens exceeds the decoder's max_len={self.max_len}")
        self._ids[0] = token
        ids, logits = _ptr(self._ids), _ptr(self._logits)
        status = self.lib.pq_forward(ctypes.byref(description), ids, 1, self.position, logits, 0)
        assert status == 0, "pq_forward rejected sizes that draft_step checked"
        self.position += 1
        return int(self.lib.pq_argmax(_ptr(self._logits), self.model.config.vocab_size))

    def _chunks(self, token_ids: torch.Tensor) -> list[torch.Tensor]:
        ids = torch.as_tensor(token_ids).reshape(-1)
        if ids.numel() == 0:
            raise PonderError("no tokens given")
        return list(ids.split(self.chunk))

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Logits [V] of the last position after appending token_ids ([T] or [1, T])."""
        chunks = self._chunks(token_ids)
        for piece in chunks[:-1]:
            self._run(piece, all_logits=False)
        return self._run(chunks[-1], all_logits=False)[0].clone()

    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Logits [T, V] of every position after appending token_ids: a perplexity window in one pass."""
        return torch.cat([self._run(piece, all_logits=True).clone() for piece in self._chunks(token_ids)])

    def next_token(self, token_ids: torch.Tensor) -> int:
        """The greedy next token after appending token_ids."""
        chunks = self._chunks(token_ids)
        for piece in chunks[:-1]:
            self._run(piece, all_logits=False)
        return int(self.lib.pq_argmax(_ptr(self._run(chunks[-1], all_logits=False)), self.model.config.vocab_size))

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        eos_token_id: int | list[int] | None = None,
        on_token: Callable[[torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Prompt [1, T] → prompt and up to `max_new_tokens` greedy tokens [1, T+N], from a fresh cache. Stops
        after an EOS token when `eos_token_id` is given; `on_token` gets each new token [1] as it is chosen."""
        if max_new_tokens < 1:
            raise PonderError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise PonderError(
                f"the quantized runtime decodes one sequence: input_ids must be [1, T], got {tuple(input_ids.shape)}"
            )
        eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
        self.reset()
        tokens = input_ids[0].tolist()
        token = self.next_token(input_ids[0])
        for step in range(max_new_tokens):
            tokens.append(token)
            if on_token is not None:
                on_token(torch.tensor([token]))
            if step == max_new_tokens - 1 or token in eos:
                break
            token = self.next_token(torch.tensor([token]))
        return torch.tensor([tokens])

    @torch.inference_mode()
    def window_nll(self, window: torch.Tensor) -> tuple[float, int]:
        """(summed negative log-likelihood, predicted tokens) of one window [T] from a fresh cache: every
        token after the first, predicted from the ones before it, as a perplexity protocol sums them."""
        self.reset()
        ids = torch.as_tensor(window).reshape(-1)
        logits = self.logits(ids[:-1])  # [T-1, V]
        nll = torch.nn.functional.cross_entropy(logits, ids[1:].long(), reduction="sum")
        return float(nll), ids.numel() - 1
